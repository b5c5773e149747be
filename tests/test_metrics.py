import math

import pytest
import torch

from metadip import metrics


def test_psnr_known_value():
    reference = torch.zeros(1, 1, 8, 8)
    assert metrics.psnr(reference + 0.1, reference) == pytest.approx(20.0)
    assert metrics.psnr(reference, reference) == math.inf


def test_ssim_identical_is_one():
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert metrics.ssim(image, image) == pytest.approx(1.0)


def test_speedup_on_synthetic_curves():
    random_curve = [min(t / 10, 25.0) for t in range(1, 301)]  # reaches 24.5 at iteration 245
    meta_curve = [min(t, 25.2) for t in range(1, 301)]  # reaches 24.5 at iteration 25
    assert metrics.speedup(random_curve, meta_curve) == pytest.approx(245 / 25)


def test_speedup_never_reached_counts_as_zero():
    assert metrics.speedup([10.0, 20.0, 30.0], [5.0, 6.0, 7.0]) == 0.0


def test_first_reaching_is_one_based():
    assert metrics.first_reaching([1.0, 2.0, 3.0], 2.0) == 2
    assert metrics.first_reaching([1.0], 2.0) is None
