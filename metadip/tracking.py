"""Experiment tracking behind one small protocol: ``log(metrics, step)``, ``log_images(tag, images, step)``,
``close()``. Back ends: JSON lines (one object per ``log`` call, flushed), TensorBoard (imported only when
used), null, and a fan-out to several.

JSONL is an append-only stream (flushed per record), not a file rewritten atomically each time; on
``--resume`` :meth:`JSONLLogger.truncate_after` rewrites it (atomically) without the records written after the
checkpoint the run resumes from, so the log matches an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch

from metadip.fileio import atomic_write_text, ensure_writable_dir


class Logger(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """Discards everything (non-zero ranks, ``logging = false``)."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        return None

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        return None

    def close(self) -> None:
        return None


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class JSONLLogger:
    """Appends ``{"step": step, **metrics}`` lines to ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = ensure_writable_dir(path)
        self._handle = None

    def _file(self):
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - a long-lived stream
        return self._handle

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        record = {"step": int(step), **{str(k): _plain(v) for k, v in metrics.items()}}
        handle = self._file()
        handle.write(json.dumps(record) + "\n")
        handle.flush()

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        return None

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step`` greater than ``step`` (and any torn last line)."""
        self.close()
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class TensorBoardLogger:
    """Scalars and images to a TensorBoard event directory (``tensorboard`` is imported on first use)."""

    def __init__(self, log_dir: str | os.PathLike, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.purge_step = purge_step
        self._writer = None

    def _get(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.log_dir), purge_step=self.purge_step)
        return self._writer

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        writer = self._get()
        for key, value in metrics.items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(str(key), float(value), int(step))
        writer.flush()

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        image = images if images.dim() == 3 else image_grid(list(images.unbind(0)))
        self._get().add_image(tag, image.detach().float().clamp(0, 1).cpu(), int(step), dataformats="CHW")
        self._get().flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MultiLogger:
    """Sends every call to each of ``loggers``."""

    def __init__(self, *loggers: Logger) -> None:
        self.loggers = list(loggers)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        for logger in self.loggers:
            logger.log_images(tag, images, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def image_grid(images: Sequence[torch.Tensor], columns: int | None = None, pad: int = 2) -> torch.Tensor:
    """Tile (C×H×W or 1×C×H×W) images into one C×H'×W' grid; grey images are repeated to RGB when mixed,
    smaller images are placed top-left in their cell. Padding is white."""
    tiles = [im[0] if im.dim() == 4 else im for im in images]
    tiles = [t.detach().float().cpu().clamp(0, 1) for t in tiles]
    channels = max(t.shape[0] for t in tiles)
    tiles = [t.expand(channels, -1, -1) if t.shape[0] == 1 else t for t in tiles]
    columns = columns or len(tiles)
    rows = math.ceil(len(tiles) / columns)
    cell_h = max(t.shape[1] for t in tiles)
    cell_w = max(t.shape[2] for t in tiles)
    grid = torch.ones(channels, rows * (cell_h + pad) + pad, columns * (cell_w + pad) + pad)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        top, left = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
        grid[:, top : top + tile.shape[1], left : left + tile.shape[2]] = tile
    return grid
