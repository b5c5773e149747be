"""Classical denoisers shared by the baselines and the measurement-conditioned input: BM3D (the optional
``bm3d`` package, extra ``[baselines]``; Dabov et al. 2007) on H×W×C arrays in [0, 1], and for Poisson–Gaussian
noise BM3D between the generalised Anscombe transform and its closed-form unbiased inverse (Mäkitalo & Foi,
IEEE TIP 2011 and 2013)."""

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


def anscombe(counts: np.ndarray, sigma_counts: float) -> np.ndarray:
    """Generalised Anscombe transform of Poisson counts plus N(0, σ²) read noise (gain 1, zero mean): noise of
    variance ≈ 1 in the transformed domain, ``2 √max(c + 3/8 + σ², 0)``."""
    return 2.0 * np.sqrt(np.maximum(counts + 3.0 / 8.0 + sigma_counts**2, 0.0))


def inverse_anscombe(transformed: np.ndarray, sigma_counts: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`anscombe` (Mäkitalo & Foi 2011, eq. 9),
    less σ² for the read noise, clipped at 0 counts."""
    d = np.maximum(transformed, 0.8)  # the expansion's range: D ≥ 0.8 covers means ≥ 0 counts
    root = np.sqrt(1.5)
    counts = d**2 / 4 + root / (4 * d) - 11 / (8 * d**2) + 5 * root / (8 * d**3) - 1 / 8 - sigma_counts**2
    return np.maximum(counts, 0.0)


def bm3d_denoise_poisson(noisy: np.ndarray, peak: float, sigma: float) -> np.ndarray | None:
    """BM3D of an H×W×C image ``y = Poisson(peak · x) / peak + N(0, σ²)`` (σ in [0, 1] units): the generalised
    Anscombe transform of the counts ``peak · y``, BM3D at unit noise (on the transform ÷ that of intensity 2), the
    unbiased inverse, ÷ peak. None as :func:`bm3d_denoise`."""
    sigma_counts = float(sigma) * float(peak)
    transformed = anscombe(np.asarray(noisy, dtype=np.float64) * float(peak), sigma_counts)
    scale = float(anscombe(np.array(2.0 * float(peak)), sigma_counts))  # intensity 2 ↦ 1: noisy peaks stay < 1
    denoised = bm3d_denoise(transformed / scale, 1.0 / scale)
    if denoised is None:
        return None
    return np.clip(inverse_anscombe(denoised * scale, sigma_counts) / float(peak), 0, 1)
