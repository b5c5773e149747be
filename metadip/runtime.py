"""Device selection and CPU thread settings."""

from __future__ import annotations

import os

import torch

from metadip.errors import MetadipError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU. ``cuda`` without a GPU is a user error."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MetadipError("--device cuda requested but no CUDA GPU is available (use --device cpu or auto)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise MetadipError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")


#: Seeds are 0 … 2**63 − 1 (what a torch.Generator accepts, with room for derived per-item seeds).
MAX_SEED = 2**63 - 1


def check_seed(seed) -> int:
    """``seed`` as an int, or a :class:`MetadipError` when it is not an integer in 0 … :data:`MAX_SEED`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise MetadipError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
    return seed


def configure_threads() -> int:
    """Use every available core for intra-op parallelism unless the user set OMP/torch threads explicitly."""
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores))
    return torch.get_num_threads()
