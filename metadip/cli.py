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
from metadip.batch import json_safe
from metadip.batch import summary as _summary
from metadip.cli_evaluate import evaluate  # registered below
from metadip.cli_pretrain import checkpoints, pretrain  # the meta-learning commands (registered below)
from metadip.demo import ITERATIONS as DEMO_ITERATIONS
from metadip.demo import SECONDS as DEMO_SECONDS
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
EXIT_USER_ERROR = 2


def _fast_exit() -> None:
    """Freeze the garbage collector's generations at interpreter exit (once per process). With torch loaded,
    Python's final collection walks its ~2·10⁵ tracked objects: 0.5–1 s on a busy 2-core machine, a third of
    a small ``reconstruct``. Frozen objects are skipped by it (they are still freed by reference counting as
    modules are torn down, and every file metadip writes is complete and closed before a command returns)."""
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        import atexit
        import gc

        atexit.register(gc.freeze)
        _EXIT_HOOKED = True


_EXIT_HOOKED = False


class MetadipGroup(click.Group):
    """A click group that reports user errors as a single ``error: ...`` line (exit 2) instead of click's
    multi-line usage block or a Python traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _fast_exit()
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
    inputs |= {"the --mask file": mask, "the --kernel file": kernel, "the --reference image": _input_path(reference)}
    _refuse_overwriting({f"--out {out}": out_path, f"--history {history}": history_path}, inputs)
    _check_tensorboard_dir(Path(tensorboard) if tensorboard else None)
    request = request.replace(device=resolve_device(device))

    y, op = request.load(measurement)
    ref = _load_reference(reference, tuple(op.image_shape), max_pixels) if reference else None
    result = request.reconstruct(y, op, reference=ref)

    record = batch.history_record(result, op, measurement, seed, reference) if history_path else None
    batch.write_outputs(out_path, result.image, history_path, record)
    click.echo(_summary(result))
    click.echo(f"wrote {out_path}" + (f" and {history_path}" if history_path else ""))
    warning = batch.divergence_warning(result)
    if warning:
        click.echo(warning, err=True)
    return None


# ------------------------------------------------------------------------------------------------- demo


@main.command(
    epilog="""\b
Examples:
  metadip demo                         (64 px astronaut, four problems, writes metadip-demo/demo.png)
  metadip demo --seconds 60 --size 96 --out results
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
    "--seconds",
    type=POSITIVE_FINITE,
    default=DEMO_SECONDS,
    show_default=True,
    metavar="S",
    help="Wall-clock budget of each DIP run (a run's stopping rule may end it earlier).",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=DEMO_ITERATIONS,
    show_default=True,
    metavar="N",
    help="Iteration cap of each DIP run.",
)
@click.option(
    "--image", default="sample:astronaut", show_default=True, metavar="CLEAN", help="Path or sample:NAME."
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for operators, noise and weights.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda", help="Where to run.")
def demo(size: int, out: str, seconds: float, iterations: int, image: str, seed: int, device: str) -> None:
    """Degrade a picture with four operators (denoise, inpaint, super-resolve, deblur) and reconstruct each
    with DIP from random init and, when one is shipped, from the meta-learned init --init auto picks; plot
    PSNR against wall-clock seconds for both (the best classical method as a line) in DIR/demo.png, print a
    table and say where a run was cut by its budget while still improving.

    Every run gets the same budget (--seconds, --iterations) and ends earlier when its own stopping rule says
    so. Random DIP usually needs far more than a demo's budget to peak: no speed-up is claimed against it.
    """
    from metadip import demo as demo_module
    from metadip.checkpoint import shipped_init_for
    from metadip.fileio import atomic_write_json
    from metadip.imageio import check_output_path, load_image_source
    from metadip.runtime import resolve_device

    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise MetadipError(f"--out {out_dir} exists and is not a directory")
    figure_path = out_dir / "demo.png"
    check_output_path(figure_path)
    resolved_device = resolve_device(device)
    started = time.perf_counter()
    clean = load_image_source(image, size=size)
    problems = demo_module.make_problems(clean, seed)
    # --init auto per operator: the init recommended for it, else the universal default.
    meta_inits = [shipped_init_for(clean.shape[1], operator=p.op) for p in problems]
    meta_init = ", ".join(dict.fromkeys(name for name in meta_inits if name))
    budget = f"{seconds:g} s or {iterations} iterations, whichever comes first, unless its stopping rule ends it"
    click.echo(f"demo: {image} {size}x{size}, init random" + (f" vs {meta_init}" if meta_init else ""))
    click.echo(f"each DIP run: {budget}")
    if len(set(meta_inits)) > 1:
        chosen = ", ".join(f"{p.op.name} → {name or 'none'}" for p, name in zip(problems, meta_inits, strict=True))
        click.echo(f"meta init per operator (--init auto): {chosen}")
    width = max(len(p.op.spec()) for p in problems)
    columns = [("operator", -width), ("classical", -11), ("PSNR", 6)]
    for arm in ("random", "meta") if meta_init else ("random",):
        columns += [(f"{arm} PSNR", 11), ("iters", 5), ("sec", 5), ("stop", -7)]

    def line(cells) -> str:
        return "  ".join(
            f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w) in zip(cells, columns, strict=True)
        ).rstrip()

    click.echo(line([name for name, _ in columns]))
    options = {"seed": seed, "device": resolved_device, "seconds": seconds, "iterations": iterations}
    for problem, op_init in zip(problems, meta_inits, strict=True):
        problem.random = demo_module.run_arm(problem.y, problem.op, clean, "random", **options)
        if op_init:
            problem.meta = demo_module.run_arm(problem.y, problem.op, clean, op_init, **options)
        name, value = problem.classical
        cells = [problem.op.spec(), name, f"{value:.2f}"]
        for run in (problem.random, problem.meta) if meta_init else (problem.random,):
            if run is None:
                cells += ["n/a", "", "", ""]
            else:
                cells += [f"{run.final_psnr:.2f}", run.iterations, f"{run.total_seconds:.1f}", run.stop]
        click.echo(line(cells))
    click.echo(
        "PSNR: dB against the clean image, of what each run returned; classical: the best cheap method "
        "(metadip.baselines; an oracle-tuned λ where it has one); sec: the run's wall-clock seconds, init "
        "loading included; stop: the stopping rule that ended the run, or time / budget when the budget did."
    )
    notes = [note for p in problems for note in p.notes()]
    for note in notes:
        click.echo(f"  {note}")
    if any(p.random is not None and p.random.cut for p in problems):
        click.echo(
            "No speed-up is claimed against a random run cut by its budget: its peak is not known "
            "(metadip evaluate runs both inits past their peaks)."
        )

    demo_module.figure(problems, clean, figure_path, seconds)
    summary = {
        "image": image,
        "size": size,
        "seed": seed,
        "seconds_budget": seconds,
        "iterations_cap": iterations,
        "meta_init": meta_init,
    }
    atomic_write_json(out_dir / "demo.json", json_safe({**summary, "rows": [p.to_json() for p in problems]}))
    click.echo(f"wrote {figure_path} and {out_dir / 'demo.json'} ({time.perf_counter() - started:.0f} s)")


# --------------------------------------------------------------------------------------------- registration

main.add_command(pretrain)
main.add_command(checkpoints)
main.add_command(evaluate)

__all__ = ["main", "simulate", "reconstruct", "demo", "pretrain", "checkpoints"]
