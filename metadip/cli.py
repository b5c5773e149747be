"""Command line: ``metadip demo | simulate | reconstruct`` (and the meta-learning commands).

Every user-input problem (a :class:`~metadip.errors.MetadipError` or a click usage error) is printed as
one line ``error: ...`` on stderr with exit status 2 and no traceback. Outputs are written atomically and
only after the work succeeded; output paths are checked *before* a long computation starts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from metadip import __version__
from metadip.batch import json_safe as _json_safe
from metadip.batch import summary as _summary
from metadip.cli_evaluate import evaluate  # registered below
from metadip.cli_pretrain import checkpoints, pretrain  # the meta-learning commands (registered below)
from metadip.errors import MetadipError, one_line
from metadip.fileio import remove_files
from metadip.imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    MEASUREMENT_EXTENSIONS,
    MIN_MEASUREMENT_SIZE,
    MIN_SIZE,
    SAMPLE_IMAGES,
)
from metadip.operators import describe_operators
from metadip.runtime import MAX_SEED

STOP_RULES = ("wmv", "discrepancy", "holdout", "budget", "oracle")
#: The four problems ``metadip demo`` shows (σ on the 0–255 scale).
DEMO_OPERATORS = (
    "denoise:sigma=25",
    "inpaint:ratio=0.5",
    "superres:factor=2,sigma=2",
    "deblur:kernel=gauss,width=1.5,sigma=2",
)
#: Iteration cap per demo problem (the stopping rule usually ends earlier); keeps the demo ≲ 2 min on 2 cores.
DEMO_ITERATIONS = 400
EXIT_USER_ERROR = 2


class MetadipGroup(click.Group):
    """A click group that reports user errors as a single ``error: ...`` line (exit 2) instead of click's
    multi-line usage block or a Python traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except MetadipError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except click.UsageError as exc:
            hint = ""
            if exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code if exc.exit_code else EXIT_USER_ERROR)
        except OSError as exc:  # disk full, permission changed mid-run, ...: not a bug, not a usage error
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            click.echo(f"error: {one_line(exc.strerror or str(exc))}{where}", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


SAMPLES_TEXT = ", ".join(SAMPLE_IMAGES)
#: --seed values: what a torch.Generator takes (with room for the demo's per-problem offsets).
SEED = click.IntRange(min=0, max=MAX_SEED - 16)


class PositiveFinite(click.ParamType):
    """A float > 0 that is not NaN or Inf (click's FloatRange lets NaN through)."""

    name = "float"

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} must be a finite number > 0", param, ctx)
        return number


POSITIVE_FINITE = PositiveFinite()


@click.group(
    cls=MetadipGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, "--version", prog_name="metadip", message="%(prog)s %(version)s")
def main() -> None:
    """metadip: meta-learned fast initialisations for Deep Image Prior.

    \b
    Quick start:
      metadip demo
      metadip simulate sample:astronaut --size 128 --operator denoise:sigma=25 --seed 0 --out y.png
      metadip reconstruct y.png --out x.png

    Operator specs are NAME[:key=value,...], e.g. denoise:sigma=25, inpaint:ratio=0.5, superres:factor=4,
    deblur:kernel=gauss,width=2,sigma=5, fourier:ratio=0.3 (noise sigma on the 0-255 scale).
    """


# ------------------------------------------------------------------------------------------------- helpers


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


def _input_path(text: str | None) -> str | None:
    """The file behind an image argument (None for ``sample:NAME`` or no argument)."""
    from metadip.imageio import parse_image_source

    if text is None:
        return None
    source = parse_image_source(text)
    return source.value if source.kind == "path" else None


def _refuse_overwriting(outputs: dict[str, Path | None], inputs: dict[str, str | Path | None]) -> None:
    """An output (``{"--out x.png": path}``) that is one of the inputs (measurement, its operator files, mask,
    kernel, reference, clean image) is an error before any work starts: the run would destroy what it reads."""
    known: dict[Path, str] = {}
    for what, path in inputs.items():
        if path is not None:
            known.setdefault(Path(path).resolve(), what)
    for label, path in outputs.items():
        what = known.get(Path(path).resolve()) if path is not None else None
        if what is not None:
            raise MetadipError(f"{label} would overwrite {what}; choose another file name")


def _check_tensorboard_dir(path: Path | None) -> None:
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise MetadipError(f"--tensorboard {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetadipError(f"cannot create --tensorboard directory {path}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------------------- simulate


@main.command(
    epilog=f"""\b
Examples:
  metadip simulate sample:astronaut --size 128 --operator denoise:sigma=25 --seed 0 --out y.png
  metadip simulate photo.png --operator inpaint:ratio=0.5 --seed 1 --out y.png      (also writes y.mask.png)
  metadip simulate sample:camera --size 64 --operator fourier:ratio=0.3 --out y.npy (complex: .npy only)
  metadip simulate photo.png --operator deblur --kernel psf.npy --out y.png       (your own kernel / --mask)

Sample images (sample:NAME): {SAMPLES_TEXT}.

\b
{describe_operators()}
"""
)
@click.argument("clean", metavar="CLEAN")
@click.option(
    "--operator", "spec", required=True, metavar="SPEC", help="Forward operator, e.g. inpaint:ratio=0.5."
)
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Seed for the operator draw and the noise."
)
@click.option(
    "--out",
    required=True,
    metavar="Y",
    help="Measurement file: .png (8-bit, clipped to [0,1]) or .npy (exact; required for fourier).",
)
@click.option(
    "--size",
    type=click.IntRange(min=MIN_SIZE),
    default=None,
    metavar="PX",
    help="Centre-crop CLEAN to a square and resize it to PX×PX (anti-aliased).",
)
@click.option(
    "--mask",
    default=None,
    metavar="FILE",
    help="Your own mask for inpaint / fourier (.png or .npy, H×W, nonzero = observed) instead of a drawn one.",
)
@click.option(
    "--kernel", default=None, metavar="FILE", help="Your own blur kernel for deblur (.npy or .png, 2-D, non-negative)."
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    metavar="N",
    show_default=True,
    help="Refuse larger input images.",
)
def simulate(
    clean: str,
    spec: str,
    seed: int,
    out: str,
    size: int | None,
    mask: str | None,
    kernel: str | None,
    max_pixels: int,
) -> None:
    """Degrade a clean image CLEAN (a path or sample:NAME) with an operator and noise; write measurement Y.

    The operator's drawn parameters (mask, kernel, sampling pattern) are saved beside Y (Y.operator.json and
    friends) so that `metadip reconstruct Y` needs no further flags.
    """
    import torch

    from metadip import operators
    from metadip.imageio import check_measurement_output, check_output_path, load_image_source, write_measurement

    parsed = operators.parse_operator_spec(spec)
    out_path = check_measurement_output(out, label=f"--out {out}")
    beside = operators.operator_files(out_path)  # the record first
    writes = {f"--out {out}": out_path} | {f"{p}, written beside --out,": p for p in beside}
    inputs = {"the clean image": _input_path(clean), "the --mask file": mask, "the --kernel file": kernel}
    _refuse_overwriting(writes, inputs)
    owner = operators.record_owner(beside[0], out_path.name)
    if owner is not None:
        raise MetadipError(
            f"--out {out} would replace {beside[0].name}, the operator record of {owner} (the two share a "
            "file stem); choose another name"
        )
    clean_image = load_image_source(clean, size=size, max_pixels=max_pixels)
    mask_array = operators.load_mask(mask, tuple(clean_image.shape[-2:])) if mask is not None else None
    kernel_array = operators.load_kernel(kernel) if kernel is not None else None
    generator = torch.Generator().manual_seed(seed)
    op = operators.build_operator(
        parsed, tuple(clean_image.shape[1:]), generator=generator, mask=mask_array, kernel=kernel_array
    )
    if op.is_complex and out_path.suffix.lower() != ".npy":
        raise MetadipError(
            f"{op.name} measurements are complex; write them to a .npy file, not {out_path.suffix}"
        )
    measured = tuple(getattr(op, "measurement_shape", clean_image.shape[1:]))[-2:]
    if min(measured) < MIN_MEASUREMENT_SIZE:
        raise MetadipError(
            f"{op.name} would turn the {clean_image.shape[-1]}x{clean_image.shape[-2]} image into a "
            f"{measured[1]}x{measured[0]} measurement; use a larger image (--size) or a smaller factor"
        )
    check_output_path(out_path, allowed=MEASUREMENT_EXTENSIONS)
    y = operators.simulate(clean_image, op, generator)

    written: list[Path] = []
    try:
        path, lossy = write_measurement(out_path, y)
        written.append(path)
        written.extend(Path(p) for p in operators.save_operator_artifacts(op, out_path))
    except BaseException:
        remove_files(written)
        raise
    shape = "×".join(str(s) for s in y.shape[1:])
    click.echo(f"wrote {path} ({op.spec()}, measurement {shape}{', complex' if y.is_complex() else ''})")
    for extra in written[1:]:
        click.echo(f"wrote {extra}")
    if lossy:
        click.echo(
            "note: the measurement was clipped to [0, 1] and quantised to 8 bits for the image file; "
            "use a .npy output to keep it exact",
            err=True,
        )


# ---------------------------------------------------------------------------------------------- reconstruct


@main.command(
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
    from metadip import api, batch, operators
    from metadip.imageio import check_output_path
    from metadip.runtime import resolve_device

    # Cheap checks first: nothing long runs before we know the outputs can be written.
    if stop == "oracle" and reference is None:
        raise MetadipError("--stop oracle needs --reference (it picks the iterate with the best PSNR)")
    if spec is not None:
        operators.parse_operator_spec(spec)
    if batch.is_batch(measurements):
        if reference is not None:
            raise MetadipError(
                "--reference (and --stop oracle) work on a single measurement, not in batch mode"
            )
        if history:
            raise MetadipError(
                f"in batch mode --history takes no value (got {history}); histories go to OUTDIR/<stem>.json"
            )
        return batch.run_batch(
            measurements,
            out=out,
            history=history is not None,
            spec=spec,
            mask=mask,
            kernel=kernel,
            init=init,
            arch=arch,
            iterations=iterations,
            stop=stop,
            seed=seed,
            device=device,
            lr=lr,
            max_pixels=max_pixels,
            progress=progress,
            tensorboard=tensorboard,
        )
    measurement = measurements[0]
    out_path = check_output_path(out, allowed=IMAGE_EXTENSIONS)
    if history == "":
        history = str(out_path.with_suffix(".json"))
    history_path = check_output_path(history, allowed=(".json",)) if history else None
    if history_path is not None and history_path.resolve() == out_path.resolve():
        raise MetadipError("--history and --out must be different files")
    inputs = {"the measurement": measurement}
    inputs |= {f"the measurement's operator file {p.name}": p for p in operators.operator_files(measurement)}
    inputs |= {"the --mask file": mask, "the --kernel file": kernel, "the --reference image": _input_path(reference)}
    _refuse_overwriting({f"--out {out}": out_path, f"--history {history}": history_path}, inputs)
    tensorboard_path = Path(tensorboard) if tensorboard else None
    _check_tensorboard_dir(tensorboard_path)
    resolved_device = resolve_device(device)

    y, op = batch.load_problem(measurement, spec=spec, mask=mask, kernel=kernel, max_pixels=max_pixels)
    ref = _load_reference(reference, tuple(op.image_shape), max_pixels) if reference else None

    result = api.reconstruct(
        y,
        op,
        init=init,
        arch=arch,
        iterations=iterations,
        stop=stop,
        seed=seed,
        device=resolved_device,
        reference=ref,
        lr=lr,
        progress=progress,
        tensorboard=tensorboard_path,
    )

    record = batch.history_record(result, op, measurement, seed, reference) if history_path else None
    batch.write_outputs(out_path, result.image, history_path, record)
    click.echo(_summary(result))
    click.echo(f"wrote {out_path}" + (f" and {history_path}" if history_path else ""))
    warning = batch.divergence_warning(result)
    if warning:
        click.echo(warning, err=True)
    return None


# ------------------------------------------------------------------------------------------------- demo


def _baseline(x, y, op):
    """(name, image) of the naive estimate from y: y itself, bicubic upsampling, or the adjoint."""
    import torch
    import torch.nn.functional as F

    if not y.is_complex() and tuple(y.shape) == tuple(x.shape):
        return "measurement", y.clamp(0, 1)
    if not y.is_complex() and y.shape[1] == x.shape[1]:
        up = F.interpolate(y, size=tuple(x.shape[-2:]), mode="bicubic", align_corners=False)
        return "bicubic", up.clamp(0, 1)
    with torch.no_grad():
        return "adjoint", op.A_adjoint(y).real.clamp(0, 1)


def _demo_figure(rows, path: Path, with_meta: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metadip.fileio import atomic_save_with

    columns = 4 if with_meta else 3
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, 2.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        panels = [
            ("clean", row["clean"]),
            (f"{row['baseline_name']} {row['baseline_psnr']:.1f} dB", row["baseline"]),
            (f"DIP random {row['psnr']:.1f} dB", row["image"]),
        ]
        if with_meta:
            text = (
                f"DIP meta {row['meta_psnr']:.1f} dB" if row.get("meta_image") is not None else "DIP meta n/a"
            )
            panels.append((text, row.get("meta_image")))
        for c, (title, image) in enumerate(panels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if image is not None:
                array = image[0].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
                if array.shape[-1] == 1:
                    ax.imshow(array[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                else:
                    ax.imshow(array, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(row["operator"], fontsize=7)
    fig.tight_layout()
    try:
        atomic_save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


@main.command(
    epilog="""\b
Examples:
  metadip demo                         (64 px astronaut, four problems, writes metadip-demo/demo.png)
  metadip demo --size 96 --out results --iterations 2000
  metadip demo --image sample:camera
"""
)
@click.option(
    "--size", type=click.IntRange(min=16), default=64, show_default=True, help="Image side in pixels."
)
@click.option(
    "--out", default="metadip-demo", show_default=True, metavar="DIR", help="Folder for demo.png / .json."
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=DEMO_ITERATIONS,
    show_default=True,
    metavar="N",
    help="Iteration cap per problem (the stopping rule usually ends earlier).",
)
@click.option(
    "--image", default="sample:astronaut", show_default=True, metavar="CLEAN", help="Path or sample:NAME."
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for operators, noise and weights.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda", help="Where to run.")
def demo(size: int, out: str, iterations: int, image: str, seed: int, device: str) -> None:
    """Degrade a sample image with four operators (denoise, inpaint, super-resolve, deblur) and reconstruct
    each with DIP's default preset and stopping rule; print a table and save a side-by-side figure
    DIR/demo.png.

    When shipped meta-learned initialisations exist, each problem is also solved from one of them.
    """
    import torch

    from metadip import api, metrics, operators
    from metadip.fileio import atomic_write_json
    from metadip.imageio import load_image_source
    from metadip.metrics import first_reaching
    from metadip.runtime import resolve_device

    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise MetadipError(f"--out {out_dir} exists and is not a directory")
    figure_path = out_dir / "demo.png"
    from metadip.imageio import check_output_path

    check_output_path(figure_path)
    resolved_device = resolve_device(device)
    clean = load_image_source(image, size=size)
    from metadip.checkpoint import shipped_init_for

    problems = []
    for index, spec in enumerate(DEMO_OPERATORS):
        generator = torch.Generator().manual_seed(seed + index)
        op = operators.build_operator(spec, tuple(clean.shape[1:]), generator=generator)
        problems.append((op, operators.simulate(clean, op, generator)))
    # --init auto per operator: the init recommended for it, else the universal default.
    meta_inits = [shipped_init_for(clean.shape[1], operator=op) for op, _ in problems]
    meta_init = ", ".join(dict.fromkeys(name for name in meta_inits if name))
    width = max(len(op.spec()) for op, _ in problems)
    columns = [
        ("operator", -width),
        ("baseline", -11),
        ("PSNR", 8),
        ("DIP PSNR", 9),
        ("iters", 6),
        ("stop", -11),
    ]
    columns.append(("sec", 6))
    if meta_init:
        columns += [("meta PSNR", 9), ("iters", 6), ("stop", -11), ("sec", 6), ("meta iters to random PSNR", 25)]

    def line(cells) -> str:
        return "  ".join(
            f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w) in zip(cells, columns, strict=True)
        ).rstrip()

    click.echo(f"demo: {image} {size}x{size}, init random" + (f" vs {meta_init}" if meta_init else ""))
    if len(set(meta_inits)) > 1:
        chosen = ", ".join(f"{op.name} → {name or 'none'}" for (op, _), name in zip(problems, meta_inits, strict=True))
        click.echo(f"meta init per operator (--init auto): {chosen}")
    click.echo(line([name for name, _ in columns]))
    rows = []
    started = time.perf_counter()
    for (op, y), op_init in zip(problems, meta_inits, strict=True):
        baseline_name, baseline = _baseline(clean, y, op)
        baseline_psnr = metrics.psnr(baseline, clean)
        result = api.reconstruct(
            y,
            op,
            init="random",
            iterations=iterations,
            seed=seed,
            device=resolved_device,
            reference=clean,
            progress=False,
        )
        row = {
            "operator": op.spec(),
            "clean": clean,
            "baseline_name": baseline_name,
            "baseline": baseline,
            "baseline_psnr": baseline_psnr,
            "image": result.image,
            "psnr": result.psnr,
            "ssim": result.ssim,
            "iterations": result.stop_iteration,
            "stop": result.stop_reason,
            "seconds": result.seconds,
        }
        cells = [
            op.spec(),
            baseline_name,
            f"{baseline_psnr:.2f}",
            f"{result.psnr:.2f}",
            result.stop_iteration,
            result.stop_reason,
            f"{result.seconds:.1f}",
        ]
        if op_init:
            meta = api.reconstruct(
                y,
                op,
                init=op_init,
                iterations=iterations,
                seed=seed,
                device=resolved_device,
                reference=clean,
                progress=False,
            )
            row.update(
                meta_init=op_init,
                meta_image=meta.image,
                meta_psnr=meta.psnr,
                meta_iterations=meta.stop_iteration,
                meta_stop=meta.stop_reason,
                meta_seconds=meta.seconds,
            )
            # Iterations meta needs to reach the PSNR random init ended with (its stopped output).
            reached = first_reaching(meta.history.get("psnr", []), result.psnr)
            row["meta_iterations_to_random_psnr"] = reached
            cells += [
                f"{meta.psnr:.2f}",
                meta.stop_iteration,
                meta.stop_reason,
                f"{meta.seconds:.1f}",
                "never" if reached is None else reached,
            ]
        elif meta_init:
            cells += ["n/a", "", "", "", ""]
        click.echo(line(cells))
        rows.append(row)
    click.echo(
        "PSNR in dB against the clean image; baseline = the measurement itself, or its bicubic upsampling."
    )
    if meta_init:
        click.echo(
            "meta iters to random PSNR: first iteration at which DIP from the meta-learned init reaches the PSNR "
            "that DIP from random init stopped at ('never' if it does not)."
        )

    _demo_figure(rows, figure_path, with_meta=bool(meta_init))
    table = [{k: v for k, v in row.items() if not hasattr(v, "shape")} for row in rows]
    summary = {
        "image": image,
        "size": size,
        "seed": seed,
        "iterations_cap": iterations,
        "meta_init": meta_init,
    }
    atomic_write_json(out_dir / "demo.json", _json_safe({**summary, "rows": table}))
    click.echo(f"wrote {figure_path} and {out_dir / 'demo.json'} ({time.perf_counter() - started:.0f} s)")


# --------------------------------------------------------------------------------------------- registration

main.add_command(pretrain)
main.add_command(checkpoints)
main.add_command(evaluate)

__all__ = ["main", "simulate", "reconstruct", "demo", "pretrain", "checkpoints"]
