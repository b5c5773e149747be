"""What the ``metadip`` commands share: option types (``--seed``, positive finite floats) and the checks that an
output will not overwrite one of the command's inputs. Imported by :mod:`metadip.cli`, :mod:`metadip.cli_simulate`
and :mod:`metadip.cli_reconstruct`.
"""

# Imports inside functions are deliberate: they keep `metadip --help` and CLI start-up fast.

from __future__ import annotations

import math
from pathlib import Path

import click

from metadip.errors import MetadipError
from metadip.runtime import MAX_SEED

#: --seed values: what a torch.Generator takes (with room for the demo's per-problem offsets).
SEED = click.IntRange(min=0, max=MAX_SEED - 16)


class PositiveFinite(click.ParamType):
    """A float > 0 that is not NaN or Inf (click's FloatRange lets NaN through)."""

    name = "float"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} must be a finite number > 0", param, ctx)
        return number


POSITIVE_FINITE = PositiveFinite()


def input_path(text: str | None) -> str | None:
    """The file behind an image argument (None for ``sample:NAME`` or no argument)."""
    from metadip.imageio import parse_image_source

    if text is None:
        return None
    source = parse_image_source(text)
    return source.value if source.kind == "path" else None


def refuse_overwriting(outputs: dict[str, Path | None], inputs: dict[str, str | Path | None]) -> None:
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
