"""Reconstruct many measurements: ``metadip reconstruct DIR|GLOB|Y... --out OUTDIR``.

Each measurement ``Y`` found (``.png .jpg .jpeg .tif .tiff .bmp .npy``; hidden files and the operator files
``simulate`` writes beside a measurement — ``*.mask.png``, ``*.kernel.npy``, ``*.kspace_mask.npy``,
``*.operator.json`` — are not measurements) becomes ``OUTDIR/<stem>.png`` (+ ``OUTDIR/<stem>.json`` with
``--history``). Files are written atomically, the image last, so an item is complete exactly when its image
exists and decodes (and its history exists, when asked for); a re-run skips complete items. A failing item
prints one ``error: Y: ...`` line and the rest continue; the run ends with ``done=N skipped=M failed=K`` and
exits 2 when any item failed.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` takes items ``r, r + W, …`` of the sorted list (no process
group is needed: the ranks share nothing but the file list); on CUDA each rank uses its ``LOCAL_RANK`` GPU.

This module also holds what the single-file ``reconstruct`` shares: the :class:`Request` (what to do with each
measurement: how to read it and its operator, and the DIP run) and the per-measurement steps (build the history
record, write the outputs).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from metadip import api, distributed, operators
from metadip.errors import MetadipError, one_line
from metadip.fileio import atomic_write_json, ensure_writable_dir, remove_files
from metadip.imageio import DEFAULT_MAX_PIXELS, MEASUREMENT_EXTENSIONS, read_measurement, write_image
from metadip.runtime import resolve_device

GLOB_CHARS = "*?["
#: Files ``operators.save_operator_artifacts`` writes beside a measurement (never measurements themselves).
SIDECAR_SUFFIXES = (".mask.png", ".kernel.npy", ".kspace_mask.npy", ".operator.json")


# ------------------------------------------------------------------------------------------ shared helpers


def json_safe(value):
    """Replace non-finite floats (not valid JSON) by None, recursively; tensors become lists/floats."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def load_problem(measurement: str | os.PathLike, *, spec: str | None, mask, kernel, max_pixels: int):
    """Read measurement ``y`` and rebuild its operator (from ``Y.operator.json`` or the flags); check they fit."""
    y = read_measurement(measurement, max_pixels=max_pixels)
    op = operators.load_operator_for_measurement(
        measurement, spec, mask_path=mask, kernel_path=kernel, measurement_shape=tuple(y.shape[1:])
    )
    expected_channels = tuple(getattr(op, "measurement_shape", op.image_shape))[0]
    if y.shape[1] != expected_channels:
        raise MetadipError(f"{measurement} has {y.shape[1]} channel(s) but its operator expects {expected_channels}")
    if y.is_complex() and not op.is_complex:
        raise MetadipError(f"{measurement} holds complex values but operator {op.name} expects a real measurement")
    if op.is_complex and not y.is_complex():
        y = y.to(torch.complex64)
    return y, op


@dataclass(frozen=True)
class Request:
    """What ``metadip reconstruct`` does with every measurement, single file or batch: how to read it and its
    operator (``spec``, ``mask``, ``kernel``, ``max_pixels``: :meth:`load`) and the DIP run
    (:func:`metadip.api.reconstruct`'s settings: :meth:`reconstruct`). ``tensorboard``: the log folder (a
    batch item logs to its own subfolder)."""

    spec: str | None = None
    mask: str | None = None
    kernel: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    init: str = "auto"
    arch: str | None = None
    iterations: int | None = None
    stop: str | None = None
    seed: int = 0
    device: Any = "auto"
    lr: float | None = None
    progress: bool = False
    tensorboard: str | None = None

    def load(self, measurement: str | os.PathLike):
        """``(y, op)`` of ``measurement`` (:func:`load_problem`)."""
        return load_problem(measurement, spec=self.spec, mask=self.mask, kernel=self.kernel, max_pixels=self.max_pixels)

    def reconstruct(self, y, op, *, reference=None, name: str | None = None):
        """:func:`metadip.api.reconstruct` of ``y`` with these settings; ``name``: the batch item, whose
        TensorBoard log goes to ``tensorboard/name``."""
        log = (Path(self.tensorboard) / name if name else Path(self.tensorboard)) if self.tensorboard else None
        return api.reconstruct(
            y,
            op,
            init=self.init,
            arch=self.arch,
            iterations=self.iterations,
            stop=self.stop,
            seed=self.seed,
            device=self.device,
            reference=reference,
            lr=self.lr,
            progress=self.progress,
            tensorboard=log,
        )

    def replace(self, **changes: Any) -> Request:
        return dataclasses.replace(self, **changes)


def history_record(result, op, measurement, seed: int, reference: str | None = None) -> dict:
    """The ``--history`` JSON: the run's per-iteration history and how it was made."""
    data = dict(result.to_json())
    data.setdefault("operator", op.spec())
    data.setdefault("init", result.init)
    data.setdefault("arch", result.arch)
    data.setdefault("measurement", str(measurement))
    if reference:
        data.setdefault("reference", str(reference))
    data.setdefault("seed", seed)
    return json_safe(data)


def write_outputs(out_path: Path, image, history_path: Path | None, record: dict | None) -> None:
    """Write the history (if any) and then the image, each atomically; on failure remove what was written."""
    written: list[Path] = []
    try:
        if history_path is not None:
            atomic_write_json(history_path, record)
            written.append(history_path)
        write_image(out_path, image)
        written.append(out_path)
    except BaseException:
        remove_files(written)
        raise


def summary(result) -> str:
    """The summary line ``reconstruct`` prints, single file or batch: :meth:`ReconstructionResult.summary
    <metadip.api.ReconstructionResult.summary>` without a unit after the PSNR."""
    return result.summary(psnr_unit="")


def divergence_warning(result, name: str | None = None) -> str | None:
    """One line explaining a run that stopped because the loss became NaN/Inf (or kept spiking), or None."""
    if result.stop_reason != "diverged":
        return None
    where = f"{name}: " if name else ""
    kept = result.extras.get("output_iteration")
    kept_text = f" (iteration {kept})" if kept is not None else ""
    return (
        f"warning: {where}DIP diverged at iteration {result.stop_iteration} (loss became NaN/Inf or kept "
        f"spiking after {result.extras.get('rollbacks', 0)} rollbacks); wrote the best iterate so far"
        f"{kept_text}; try a lower --lr or another --seed"
    )


# ------------------------------------------------------------------------------------------ finding files


def is_batch(args: Sequence[str]) -> bool:
    """Batch mode: several arguments, a directory, or a glob pattern that is not an existing file's name."""
    if len(args) != 1:
        return True
    path = Path(args[0])
    if path.is_dir():
        return True
    return not path.exists() and any(c in args[0] for c in GLOB_CHARS)


def is_measurement_name(path: Path) -> bool:
    name = path.name.lower()
    return (
        not name.startswith(".")
        and path.suffix.lower() in MEASUREMENT_EXTENSIONS
        and not name.endswith(SIDECAR_SUFFIXES)
    )


def find_measurements(args: Sequence[str]) -> tuple[list[Path], int]:
    """The measurements named by ``args`` (files, folders — not recursive — and glob patterns; ``**`` recurses),
    sorted and de-duplicated, and the number of other files that were passed over. A named file that does not
    exist is kept (it fails as an item); an empty result is an error."""
    found: dict[str, Path] = {}
    ignored = 0
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file())
        elif path.exists() or not any(c in arg for c in GLOB_CHARS):
            candidates = [path]
        else:
            candidates = [Path(m) for m in sorted(glob.glob(arg, recursive=True)) if Path(m).is_file()]
        for candidate in candidates:
            if is_measurement_name(candidate):
                found.setdefault(os.path.normpath(candidate), candidate)
            else:
                ignored += 1
    if not found:
        raise MetadipError(
            f"no measurements found in {' '.join(args)} (looked for {' '.join(MEASUREMENT_EXTENSIONS)}, "
            "not counting operator files such as *.mask.png)"
        )
    return sorted(found.values(), key=str), ignored


@dataclass(frozen=True)
class Item:
    measurement: Path
    out: Path
    history: Path | None


def plan(measurements: Sequence[Path], out_dir: Path, history: bool) -> list[Item]:
    """Map each measurement to ``out_dir/<stem>.png`` (+ ``.json``); two measurements with one stem, or a
    measurement inside ``out_dir`` (which its output could overwrite), are errors."""
    out_resolved = out_dir.resolve()
    targets: dict[Path, Path] = {}
    items = []
    for measurement in measurements:
        if measurement.resolve().parent == out_resolved:
            raise MetadipError(
                f"measurement {measurement} is in the --out folder {out_dir}; write the reconstructions to a "
                "separate folder"
            )
        out = out_dir / f"{measurement.stem}.png"
        if out in targets:
            raise MetadipError(
                f"{targets[out]} and {measurement} would both be written to {out}; rename one or reconstruct "
                "them into different --out folders"
            )
        targets[out] = measurement
        items.append(Item(measurement, out, out_dir / f"{measurement.stem}.json" if history else None))
    return items


def is_complete(item: Item) -> bool:
    """The item's image exists and decodes (and its history exists and parses, when asked for)."""
    from PIL import Image  # lazy: Pillow loads on first use, as in metadip.imageio

    try:
        with Image.open(item.out) as image:
            image.verify()
        if item.history is not None:
            json.loads(item.history.read_text(encoding="utf-8"))
    except Exception:  # missing, truncated, not an image: redo it
        return False
    return True


# ------------------------------------------------------------------------------------------ the batch run


def check_out_dir(out: str) -> Path:
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise MetadipError(f"--out {out} exists and is not a folder; in batch mode --out is a folder")
    if not out_dir.exists() and out_dir.suffix.lower() in MEASUREMENT_EXTENSIONS:
        raise MetadipError(
            f"--out {out} looks like a file name; with several measurements --out names a folder "
            "(outputs are OUTDIR/<stem>.png)"
        )
    ensure_writable_dir(out_dir / "probe")  # creates out_dir, checks it is writable
    return out_dir


def run_batch(args: Sequence[str], request: Request, *, out: str, history: bool) -> int:
    """Reconstruct every measurement in ``args`` into folder ``out`` as ``request`` says; return the exit status
    (0, or 2 if any item failed). Problems common to every item (no files, bad --out, unknown init/arch/device)
    raise :class:`MetadipError` before any work starts."""
    measurements, ignored = find_measurements(args)
    items = plan(measurements, Path(out), history)
    info = distributed.env_info()
    request = request.replace(device=distributed.local_device(resolve_device(request.device), info))
    api.load_init(request.init, arch=request.arch, out_channels=3, seed=request.seed)  # unknown init/arch: once, here
    out_dir = check_out_dir(out)  # last: nothing is created when an earlier check fails
    mine = [items[i] for i in distributed.shard(range(len(items)), info)]
    rank_text = f" (rank {info.rank} of {info.world_size})" if info.enabled else ""

    todo = [item for item in mine if not is_complete(item)]
    skipped = len(mine) - len(todo)
    click.echo(
        f"batch: {len(items)} measurement(s){f', {ignored} other file(s) ignored' if ignored else ''}"
        f"{f'; this rank takes {len(mine)}' if info.enabled else ''}; {skipped} already done, {len(todo)} to "
        f"reconstruct into {out_dir}{rank_text}"
    )
    done = failed = diverged = 0
    for index, item in enumerate(todo, start=1):
        name = str(item.measurement)
        try:
            y, op = request.load(name)
            result = request.reconstruct(y, op, name=item.measurement.stem)
            record = history_record(result, op, name, request.seed) if item.history is not None else None
            write_outputs(item.out, result.image, item.history, record)
        except MetadipError as exc:
            failed += 1
            message = one_line(str(exc))
            click.echo(f"error: {message if message.startswith(name) else f'{name}: {message}'}", err=True)
            continue
        except OSError as exc:  # e.g. disk full: report it, keep going (the next item may fit)
            failed += 1
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            click.echo(f"error: {name}: {one_line(exc.strerror or str(exc))}{where}", err=True)
            continue
        except Exception as exc:  # an unexpected failure on one item must not lose the rest of the batch
            failed += 1
            click.echo(f"error: {name}: {type(exc).__name__}: {one_line(str(exc))}", err=True)
            continue
        done += 1
        click.echo(f"[{index}/{len(todo)}] {name} -> {item.out}: {summary(result)}")
        warning = divergence_warning(result, name)
        if warning:
            diverged += 1
            click.echo(warning, err=True)
    extra = f" diverged={diverged}" if diverged else ""
    click.echo(f"done={done} skipped={skipped} failed={failed}{extra}{rank_text}")
    return 2 if failed else 0


__all__ = [
    "Item",
    "Request",
    "divergence_warning",
    "find_measurements",
    "history_record",
    "is_batch",
    "is_complete",
    "json_safe",
    "load_problem",
    "plan",
    "run_batch",
    "summary",
    "write_outputs",
]
