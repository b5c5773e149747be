"""Classical denoisers shared by the baselines and the measurement-conditioned input: BM3D (the optional
``bm3d`` package, extra ``[baselines]``; Dabov et al. 2007) on H×W×C arrays in [0, 1]."""

from __future__ import annotations

import numpy as np

#: BM3D's native code crashes the process (segmentation fault) on images smaller than this (8 px seen).
BM3D_MIN_SIZE = 16


def bm3d_available() -> bool:
    """Whether the optional ``bm3d`` package imports."""
    try:
        import bm3d  # noqa: F401 - optional extra [baselines]
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return False
    return True


def bm3d_denoise(noisy: np.ndarray, sigma: float) -> np.ndarray | None:
    """BM3D of an H×W×C image (σ in [0, 1] units); None when the optional ``bm3d`` package is missing or the
    image is smaller than :data:`BM3D_MIN_SIZE`."""
    if min(noisy.shape[:2]) < BM3D_MIN_SIZE:
        return None
    if not bm3d_available():
        return None
    import bm3d

    if noisy.shape[-1] == 3:
        out = bm3d.bm3d_rgb(noisy, sigma)
    else:
        out = np.stack([bm3d.bm3d(noisy[..., c], sigma) for c in range(noisy.shape[-1])], axis=-1)
    return np.clip(np.asarray(out, dtype=np.float64).reshape(noisy.shape), 0, 1)
