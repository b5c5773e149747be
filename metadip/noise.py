"""Measurement noise: Gaussian (σ on the 0–255 scale) and Poisson, drawn from an explicit ``torch.Generator``.

Conventions
-----------
* ``sigma_255`` is the standard deviation of the noise in 0–255 units; it is applied as ``sigma_255 / 255`` to
  measurements that live on the [0, 1] intensity scale.
* Complex measurements (partial Fourier) get circular complex Gaussian noise whose real and imaginary parts
  each have std ``sigma_255 / 255 / sqrt(2)``, so ``E|n|² = (sigma_255 / 255)²``. With the orthonormal FFT
  this is the k-space image of real white noise of std ``sigma_255 / 255`` in the image domain.
* Poisson noise models ``peak`` photons at intensity 1: ``y ← Poisson(peak · max(y, 0)) / peak``. It is
  applied before the Gaussian part (shot noise, then read noise) and only to real measurements.
* Noisy measurements are not clipped to [0, 1]; clipping would bias the noise statistics that the discrepancy
  and hold-out stopping rules rely on.
"""

from __future__ import annotations

import numpy as np
import torch

from metadip.errors import MetadipError

_MAD_TO_STD = 0.6744897501960817  # median(|N(0, 1)|), the normal 75th percentile


def _draw_device(y: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    """Draws happen on the generator's device (a CPU generator can serve CUDA tensors)."""
    return generator.device if generator is not None else y.device


def add_noise(
    y: torch.Tensor, sigma_255: float, generator: torch.Generator | None, poisson: float | None = None
) -> torch.Tensor:
    """Return ``y`` plus Poisson (if ``poisson`` is a peak > 0) and Gaussian noise of std ``sigma_255 / 255``.

    ``y`` may be real or complex (any shape); the result is a new tensor with ``y``'s shape, dtype and device.
    All randomness comes from ``generator`` (``None`` uses torch's default generator for ``y``'s device).
    """
    if not sigma_255 >= 0:
        raise MetadipError(f"noise sigma must be >= 0 on the 0-255 scale (got {sigma_255})")
    if poisson is not None and not poisson > 0:
        raise MetadipError(f"poisson peak must be > 0 (got {poisson})")
    if sigma_255 == 0 and poisson is None:
        return y.clone()
    device = _draw_device(y, generator)
    if poisson is not None:
        if y.is_complex():
            raise MetadipError("poisson noise needs real measurements (not available for fourier)")
        rate = (y.detach().clamp_min(0) * poisson).to(device)
        y = (torch.poisson(rate, generator=generator) / poisson).to(y.device, y.dtype)
    if sigma_255 > 0:
        noise = torch.randn(y.shape, generator=generator, device=device, dtype=y.dtype)
        y = y + noise.to(y.device) * (sigma_255 / 255.0)
    return y


def estimate_sigma(y: torch.Tensor | np.ndarray) -> float:
    """Estimate the Gaussian noise std of a real image on the 0–255 scale.

    Donoho's wavelet estimator, as in ``skimage.restoration.estimate_sigma`` but with the Haar wavelet and no
    PyWavelets dependency: ``median(|HH|) / 0.6745`` over the finest diagonal detail coefficients of every
    H×W plane of ``y`` (shapes H×W, C×H×W or B×C×H×W, values on the [0, 1] scale), averaged over planes.
    """
    array = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if np.iscomplexobj(array):
        raise MetadipError("estimate_sigma needs a real image (got complex measurements)")
    if array.ndim < 2 or min(array.shape[-2:]) < 2:
        raise MetadipError(f"estimate_sigma needs an image of at least 2x2 pixels (got shape {array.shape})")
    height, width = (size // 2 * 2 for size in array.shape[-2:])
    planes = array.reshape(-1, *array.shape[-2:])[:, :height, :width].astype(np.float64)
    diagonal = (
        planes[:, 0::2, 0::2] - planes[:, 0::2, 1::2] - planes[:, 1::2, 0::2] + planes[:, 1::2, 1::2]
    ) / 2
    per_plane = np.median(np.abs(diagonal), axis=(1, 2)) / _MAD_TO_STD
    return float(per_plane.mean()) * 255.0
