"""``metadip simulate``: degrade a clean image with an operator and noise, and write the measurement beside the
operator's record (so that ``metadip reconstruct Y`` needs no further flags).

Registered on the main group by :mod:`metadip.cli` (``main.add_command(simulate)``).
"""

# Imports inside functions are deliberate: they keep `metadip --help` and CLI start-up fast.

from __future__ import annotations

from pathlib import Path

import click

from metadip.cli_options import SEED, input_path, refuse_overwriting
from metadip.errors import MetadipError
from metadip.fileio import remove_files
from metadip.imageio import (
    DEFAULT_MAX_PIXELS,
    MEASUREMENT_EXTENSIONS,
    MIN_MEASUREMENT_SIZE,
    MIN_SIZE,
    SAMPLE_IMAGES,
)
from metadip.operators import describe_operators

SAMPLES_TEXT = ", ".join(SAMPLE_IMAGES)


@click.command(
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
    inputs = {"the clean image": input_path(clean), "the --mask file": mask, "the --kernel file": kernel}
    refuse_overwriting(writes, inputs)
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
