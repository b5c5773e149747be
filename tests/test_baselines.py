"""Classical baselines: every family gets its columns, and each method beats the degraded input it starts from."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from metadip import baselines, evaluation, metrics
from metadip.operators import OPERATORS

SPECS = {
    "denoise": "denoise:sigma=25",
    "inpaint": "inpaint:ratio=0.5",
    "superres": "superres:factor=2,sigma=2",
    "deblur": "deblur:kernel=gauss,width=2,sigma=2",
    "fourier": "fourier:ratio=0.3",
}


def test_every_family_has_baselines():
    assert set(baselines.FAMILY_BASELINES) == set(OPERATORS) == set(SPECS)


@pytest.mark.parametrize("family", sorted(SPECS))
def test_baseline_columns_present_for_every_family(family, tiny_rgb):
    op, y = evaluation.make_problem(tiny_rgb, SPECS[family], 0, "astronaut")
    got = baselines.compute_baselines(tiny_rgb, y, op)
    expected = set(baselines.FAMILY_BASELINES[family])
    if importlib.util.find_spec("bm3d") is None:  # CI installs the [baselines] extra: there it is never missing
        expected.discard("bm3d")
    assert set(got) == expected
    assert all(isinstance(v, float) for v in got.values())


@pytest.mark.parametrize("family", ["inpaint", "deblur", "fourier", "superres"])
def test_classical_method_beats_its_starting_point(family, tiny_rgb):
    op, y = evaluation.make_problem(tiny_rgb, SPECS[family], 0, "astronaut")
    got = baselines.compute_baselines(tiny_rgb, y, op)
    start = got.get("measurement", got.get("zero_filled", got.get("bicubic")))
    best = max(v for k, v in got.items() if k not in ("measurement", "zero_filled", "bicubic"))
    assert best > start


def test_tikhonov_best_is_the_best_of_its_grid(tiny_rgb):
    from metadip.conditioning import tikhonov_estimate

    op, y = evaluation.make_problem(tiny_rgb, SPECS["deblur"], 0, "astronaut")
    image, lam = baselines.tikhonov_best(tiny_rgb, y, op)
    assert lam in baselines.TIKHONOV_LAMBDAS
    best = metrics.psnr(image, tiny_rgb)
    for other in baselines.TIKHONOV_LAMBDAS:
        assert metrics.psnr(tikhonov_estimate(op, y, noise_factor=0.0, floor=other), tiny_rgb) <= best + 1e-9


def test_bm3d_skips_images_too_small_for_it():
    assert baselines.bm3d_denoise(torch.zeros(8, 8, 3).numpy(), 0.1) is None


def test_bm3d_beats_the_noisy_image_when_installed(tiny_rgb):
    pytest.importorskip("bm3d")
    op, y = evaluation.make_problem(tiny_rgb, SPECS["denoise"], 0, "astronaut")
    got = baselines.compute_baselines(tiny_rgb, y, op)
    assert got["bm3d"] > got["measurement"] + 3


def test_poisson_denoising_gets_the_anscombe_bm3d_baseline(tiny_rgb):
    pytest.importorskip("bm3d")
    op, y = evaluation.make_problem(tiny_rgb, "denoise:sigma=0,poisson=20", 0, "astronaut")
    got = baselines.compute_baselines(tiny_rgb, y, op)
    assert set(got) == {"measurement", "bm3d"}  # no TV weight rule for Poisson noise
    assert got["bm3d"] > got["measurement"] + 3
