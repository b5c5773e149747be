"""``metadip reconstruct``: DIP reconstruction of one measurement, or of many (batch mode, :mod:`metadip.batch`).

Registered on the main group by :mod:`metadip.cli` (``main.add_command(reconstruct)``).
"""

# Imports inside functions are deliberate: they keep `metadip --help` and CLI start-up fast.

from __future__ import annotations

from pathlib import Path

import click

from metadip.cli_options import POSITIVE_FINITE, SEED, input_path, refuse_overwriting
from metadip.errors import MetadipError
from metadip.imageio import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS

STOP_RULES = ("wmv", "discrepancy", "holdout", "budget", "oracle")


def _load_reference(text: str, image_shape: tuple[int, int, int], max_pixels: int):
    """Load ``--reference`` (path or sample:NAME) and check it matches the operator's image shape."""
    from metadip.imageio import load_image_source, parse_image_source, to_channels

    source = parse_image_source(text)
    channels, height, width = image_shape
    size = height if (source.kind == "sample" and height == width) else None
    reference = load_image_source(source, size=size, max_pixels=max_pixels)
    if source.kind == "sample" and reference.shape[1] in (1, 3) and channels in (1, 3):
        reference = to_channels(reference, channels)  # a sample is made grey / RGB as simulate would
    elif reference.shape[1] != channels:
        kinds = {1: "grey", 3: "RGB"}
        raise MetadipError(
            f"--reference {text} is {kinds.get(reference.shape[1], f'{reference.shape[1]}-channel')} but the "
            f"reconstruction is {kinds.get(channels, f'{channels}-channel')}; give the clean image it was made from"
        )
    if tuple(reference.shape[-2:]) != (height, width):
        raise MetadipError(
            f"--reference {text} is {reference.shape[-1]}x{reference.shape[-2]} but the reconstruction "
            f"will be {width}x{height}"
        )
    return reference


def _check_tensorboard_dir(path: Path | None) -> None:
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise MetadipError(f"--tensorboard {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetadipError(f"cannot create --tensorboard directory {path}: {exc.strerror or exc}") from None


@click.command(
    epilog="""\b
Examples:
  metadip reconstruct y.png --out x.png                       (operator from y.operator.json)
  metadip reconstruct y.png --operator denoise:sigma=25 --init random --stop holdout --out x.png
  metadip reconstruct y.png --reference sample:astronaut --history h.json --out x.png
  metadip reconstruct y.npy --operator fourier:ratio=0.3 --iterations 500 --stop budget --out x.png

\b
Batch mode (a folder, a glob pattern or several files; --out is then a folder):
  metadip reconstruct measurements/ --out recon/ --history
  metadip reconstruct 'data/**/*.png' --out recon/ --init NAME
  torchrun --nproc_per_node=4 -m metadip reconstruct measurements/ --out recon/   (files split across ranks)
Each measurement Y becomes recon/<stem>.png (+ recon/<stem>.json with --history); operator files
(*.mask.png, *.kernel.npy, *.kspace_mask.npy, *.operator.json) and hidden files are skipped. A re-run skips
items whose outputs are complete (all files are written atomically). A failing file prints one
"error: FILE: ..." line and the rest continue; the last line is "done=N skipped=M failed=K"; the exit
status is 2 when any file failed, else 0. --reference and --stop oracle are single-file only.

\b
Stopping rules: holdout (10% of the measurements kept out of the loss; stop when their error
stops falling; the default), wmv (windowed moving variance), discrepancy (loss reaches the noise
level; needs sigma), budget (exactly --iterations), oracle (best PSNR; needs --reference,
evaluation only). A meta-learned init brings its own default rule and settings.
"""
)
@click.argument("measurements", metavar="Y|DIR|GLOB...", nargs=-1, required=True)
@click.option(
    "--operator",
    "spec",
    default=None,
    metavar="SPEC",
    help="Forward operator; optional when Y.operator.json (written by simulate) exists.",
)
@click.option(
    "--mask",
    default=None,
    metavar="FILE",
    help="Mask for inpaint/fourier (.png or .npy, nonzero = observed); default: the one simulate wrote.",
)
@click.option(
    "--kernel",
    default=None,
    metavar="FILE",
    help="Blur kernel for deblur (.npy or .png, 2-D, non-negative); default: the one simulate wrote.",
)
@click.option(
    "--init",
    default="auto",
    show_default=True,
    metavar="auto|random|NAME|PATH",
    help="Initial weights: auto = the shipped init recommended for the operator (e.g. "
    "universal-slim-tikhonov for deblur), else the universal default, when one fits the image (and --arch), "
    "else random; random = DIP's random init; or a shipped checkpoint name or a checkpoint path.",
)
@click.option(
    "--arch",
    default=None,
    metavar="NAME",
    help="Generator preset (skip, skip-slim, deep-decoder); with --init auto, a preset no shipped init has "
    "means random init.",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Iteration budget (default: the init's recipe).",
)
@click.option(
    "--stop",
    type=click.Choice(STOP_RULES),
    default=None,
    help="Early-stopping rule (default: the init's recipe, else holdout).",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for weights, input z and jitter.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda", help="Where to run.")
@click.option(
    "--reference", default=None, metavar="CLEAN", help="Clean image (path or sample:NAME) for PSNR/SSIM."
)
@click.option("--tensorboard", default=None, metavar="DIR", help="Write TensorBoard logs to DIR.")
@click.option(
    "--history",
    default=None,
    is_flag=False,
    flag_value="",
    metavar="[H.json]",
    help="Write the per-iteration history as JSON to H.json; without a value, beside the output as "
    "X.json (batch mode: OUTDIR/<stem>.json). Put it after Y.",
)
@click.option(
    "--lr",
    type=POSITIVE_FINITE,
    default=None,
    metavar="LR",
    help="Learning rate override (default: the init's recipe).",
)
@click.option(
    "--out",
    required=True,
    metavar="X.png|OUTDIR",
    help="Reconstructed image (8-bit); a folder in batch mode.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    metavar="N",
    show_default=True,
    help="Refuse larger input images.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def reconstruct(
    measurements: tuple[str, ...],
    spec: str | None,
    mask: str | None,
    kernel: str | None,
    init: str,
    arch: str | None,
    iterations: int | None,
    stop: str | None,
    seed: int,
    device: str,
    reference: str | None,
    tensorboard: str | None,
    history: str | None,
    lr: float | None,
    out: str,
    max_pixels: int,
    progress: bool,
) -> int | None:
    """Reconstruct an image from measurement Y with Deep Image Prior and write it to X.png; or, given a
    folder, a glob pattern or several files, every measurement in them into folder OUTDIR (batch mode).

    Prints one summary line: iterations, stopping reason, PSNR/SSIM (with --reference) and seconds. A run
    that diverges (loss NaN/Inf) prints a warning and still writes the best iterate.
    """
    from metadip import batch, operators
    from metadip.imageio import check_output_path
    from metadip.runtime import resolve_device

    # Cheap checks first: nothing long runs before we know the outputs can be written.
    if stop == "oracle" and reference is None:
        raise MetadipError("--stop oracle needs --reference (it picks the iterate with the best PSNR)")
    if spec is not None:
        operators.parse_operator_spec(spec)
    request = batch.Request(
        spec=spec,
        mask=mask,
        kernel=kernel,
        max_pixels=max_pixels,
        init=init,
        arch=arch,
        iterations=iterations,
        stop=stop,
        seed=seed,
        device=device,
        lr=lr,
        progress=progress,
        tensorboard=tensorboard,
    )
    if batch.is_batch(measurements):
        if reference is not None:
            raise MetadipError(
                "--reference (and --stop oracle) work on a single measurement, not in batch mode"
            )
        if history:
            raise MetadipError(
                f"in batch mode --history takes no value (got {history}); histories go to OUTDIR/<stem>.json"
            )
        return batch.run_batch(measurements, request, out=out, history=history is not None)
    measurement = measurements[0]
    out_path = check_output_path(out, allowed=IMAGE_EXTENSIONS)
    if history == "":
        history = str(out_path.with_suffix(".json"))
    history_path = check_output_path(history, allowed=(".json",)) if history else None
    if history_path is not None and history_path.resolve() == out_path.resolve():
        raise MetadipError("--history and --out must be different files")
    inputs = {"the measurement": measurement}
    inputs |= {f"the measurement's operator file {p.name}": p for p in operators.operator_files(measurement)}
    inputs |= {"the --mask file": mask, "the --kernel file": kernel, "the --reference image": input_path(reference)}
    refuse_overwriting({f"--out {out}": out_path, f"--history {history}": history_path}, inputs)
    _check_tensorboard_dir(Path(tensorboard) if tensorboard else None)
    request = request.replace(device=resolve_device(device))

    y, op = request.load(measurement)
    ref = _load_reference(reference, tuple(op.image_shape), max_pixels) if reference else None
    result = request.reconstruct(y, op, reference=ref)

    record = batch.history_record(result, op, measurement, seed, reference) if history_path else None
    batch.write_outputs(out_path, result.image, history_path, record)
    click.echo(batch.summary(result))
    click.echo(f"wrote {out_path}" + (f" and {history_path}" if history_path else ""))
    warning = batch.divergence_warning(result)
    if warning:
        click.echo(warning, err=True)
    return None
