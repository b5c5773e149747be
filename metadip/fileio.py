"""Atomic file writing: every file metadip writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from metadip.errors import MetadipError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path``'s parent directory if needed and check it is writable; raise MetadipError if not."""
    target = Path(path)
    parent = target.parent if target.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetadipError(f"cannot create output directory {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise MetadipError(f"output directory {parent} is not writable")
    return target


@functools.lru_cache(maxsize=1)
def _default_mode() -> int:
    """Permissions a plain ``open(path, "w")`` would give: 0o666 minus the process umask (mkstemp uses 0o600).
    Read once: ``os.umask`` can only be read by setting it, which must not race other threads' file writes."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    target = ensure_writable_dir(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _default_mode())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_with(path: str | os.PathLike, writer) -> None:
    """Call ``writer(tmp_path)`` (a function that writes a file by name, e.g. ``np.save`` or
    ``skimage.io.imsave``) and atomically move the result to ``path``. The temporary name keeps the suffix so
    writers that infer the format from it work."""
    target = ensure_writable_dir(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent or ".")
    os.close(fd)
    try:
        writer(tmp_name)
        with open(tmp_name, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _default_mode())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def remove_files(paths) -> None:
    """Delete ``paths``, ignoring any that cannot be removed (clean-up after a failed multi-file write)."""
    for path in paths:
        try:
            Path(path).unlink()
        except OSError:
            pass
