"""Noise models: statistics, reproducibility from the generator, errors, and the σ estimator."""

import math

import numpy as np
import pytest
import torch

from metadip.errors import MetadipError
from metadip.noise import add_noise, estimate_sigma


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth_image(channels: int = 1, size: int = 64) -> torch.Tensor:
    coords = torch.linspace(0, 1, size)
    plane = 0.5 + 0.3 * torch.sin(2 * math.pi * coords)[:, None] * torch.cos(math.pi * coords)[None, :]
    return plane.expand(1, channels, size, size).clone()


def test_gaussian_noise_has_requested_std():
    noisy = add_noise(torch.zeros(1, 3, 64, 64), 25, _gen())
    assert noisy.std().item() == pytest.approx(25 / 255, rel=0.03)
    assert abs(noisy.mean().item()) < 0.005


def test_complex_noise_splits_variance_between_real_and_imaginary_parts():
    noisy = add_noise(torch.zeros(1, 1, 128, 128, dtype=torch.complex64), 25, _gen())
    assert noisy.dtype == torch.complex64
    for part in (noisy.real, noisy.imag):
        assert part.std().item() == pytest.approx(25 / 255 / math.sqrt(2), rel=0.03)
    assert noisy.abs().pow(2).mean().sqrt().item() == pytest.approx(25 / 255, rel=0.03)


def test_poisson_noise_mean_variance_and_quantisation():
    peak = 100.0
    clean = torch.full((1, 1, 64, 64), 0.5)
    noisy = add_noise(clean, 0, _gen(), poisson=peak)
    assert noisy.mean().item() == pytest.approx(0.5, rel=0.02)
    assert noisy.var().item() == pytest.approx(0.5 / peak, rel=0.1)
    torch.testing.assert_close(noisy * peak, (noisy * peak).round())
    assert (add_noise(-clean, 0, _gen(), poisson=peak) == 0).all()


def test_noise_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    y = torch.rand(2, 3, 8, 8, generator=_gen(5))
    first = add_noise(y, 10, _gen(1), poisson=50)
    assert torch.equal(first, add_noise(y, 10, _gen(1), poisson=50))
    assert not torch.equal(first, add_noise(y, 10, _gen(2), poisson=50))
    assert torch.equal(torch.get_rng_state(), state)


def test_zero_sigma_is_identity_and_dtype_is_kept():
    y = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    same = add_noise(y, 0, _gen())
    assert torch.equal(same, y) and same is not y
    assert add_noise(y, 5, _gen()).dtype == torch.float64


def test_noise_is_differentiable_for_gaussian_part():
    y = torch.rand(1, 1, 8, 8, requires_grad=True)
    add_noise(y, 5, _gen()).sum().backward()
    torch.testing.assert_close(y.grad, torch.ones_like(y))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sigma_255": -1}, ">= 0"),
        ({"sigma_255": float("nan")}, ">= 0"),
        ({"sigma_255": 0, "poisson": 0}, "> 0"),
        ({"sigma_255": 0, "poisson": -3}, "> 0"),
    ],
)
def test_bad_noise_settings_raise(kwargs, fragment):
    with pytest.raises(MetadipError, match=fragment.replace("(", r"\(")):
        add_noise(torch.zeros(1, 1, 4, 4), generator=_gen(), **kwargs)


def test_poisson_on_complex_measurements_raises():
    with pytest.raises(MetadipError, match="real"):
        add_noise(torch.zeros(1, 1, 4, 4, dtype=torch.complex64), 0, _gen(), poisson=10)


@pytest.mark.parametrize("channels", [1, 3])
def test_estimate_sigma_on_smooth_image(channels):
    clean = _smooth_image(channels)
    assert estimate_sigma(clean) < 3
    noisy = add_noise(clean, 25, _gen())
    assert estimate_sigma(noisy) == pytest.approx(25, abs=5)
    assert estimate_sigma(noisy[0].numpy()) == pytest.approx(estimate_sigma(noisy), rel=1e-6)


def test_estimate_sigma_rejects_complex_and_tiny_inputs():
    with pytest.raises(MetadipError, match="real"):
        estimate_sigma(torch.zeros(1, 1, 8, 8, dtype=torch.complex64))
    with pytest.raises(MetadipError, match="2x2"):
        estimate_sigma(np.zeros(5))
