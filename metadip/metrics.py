"""Image quality metrics and convergence-speed measures."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def psnr(image: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference`` (any matching shapes)."""
    mse = torch.mean((image.detach().float() - reference.detach().float()) ** 2).item()
    if mse <= 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    array = image.detach().float().cpu()
    if array.dim() == 4:
        array = array[0]
    return array.permute(1, 2, 0).numpy()


def ssim(image: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    """Structural similarity (scikit-image, Gaussian-free default window) of a single B=1 image pair."""
    from skimage.metrics import structural_similarity

    a, b = _to_hwc(image), _to_hwc(reference)
    window = min(7, a.shape[0], a.shape[1])
    if window % 2 == 0:
        window -= 1
    if window < 3:
        return float("nan")
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=2, win_size=window))


def first_reaching(curve: Sequence[float], target: float) -> int | None:
    """1-based iteration at which ``curve`` first reaches ``target``; None if it never does."""
    for index, value in enumerate(curve):
        if value >= target:
            return index + 1
    return None


def speedup(random_curve: Sequence[float], meta_curve: Sequence[float], margin_db: float = 0.5) -> float:
    """Iterations random init needs to first reach (its peak − margin) ÷ iterations meta init needs to reach it.

    A meta run that never reaches the target scores 0 (it is counted, never dropped).
    """
    if len(random_curve) == 0:
        raise ValueError("random_curve is empty")
    target = max(random_curve) - margin_db
    random_iters = first_reaching(random_curve, target)
    meta_iters = first_reaching(meta_curve, target)
    if meta_iters is None:
        return 0.0
    return float(random_iters) / float(meta_iters)
