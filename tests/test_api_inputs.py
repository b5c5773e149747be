"""The Python API refuses what it cannot reconstruct with one-line MetadipErrors, accepts the harmless variants
(3-D y, float64, a tensor that requires grad), and the CLI round trips added with those checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import metadip
from metadip import dip, operators
from metadip.cli import main
from metadip.errors import MetadipError
from metadip.imageio import load_sample_image


def _problem(spec: str = "denoise:sigma=10", size: int = 16):
    x = load_sample_image("astronaut", size)
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator(spec, tuple(x.shape[1:]), generator=generator)
    return x, operators.simulate(x, op, generator), op


def _run(y, op, **kwargs):
    return metadip.reconstruct(y, op, init="random", iterations=2, stop="budget", **kwargs)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda y: y.repeat(2, 1, 1, 1), "one image per call"),
        (lambda y: y[0, 0], "C×H×W or 1×C×H×W"),
        (lambda y: (y * 255).to(torch.uint8), "dtype torch.uint8"),
        (lambda y: y * 255, "divide by 255"),
        (lambda y: y - 5, r"values span"),
        (lambda y: y[:, :1], "expects"),
        (lambda y: y[..., :8], "expects"),
        (lambda y: y.numpy(), "must be a torch.Tensor"),
        (lambda y: y.to(torch.complex64), "complex"),
    ],
)
def test_bad_measurements_are_refused(change, fragment):
    _, y, op = _problem()
    with pytest.raises(MetadipError, match=fragment):
        _run(change(y), op)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"lr": float("nan")}, "lr must be"),
        ({"lr": 0.0}, "lr must be"),
        ({"lr": math.inf}, "lr must be"),
        ({"seed": 2**70}, "seed must be"),
        ({"seed": -1}, "seed must be"),
        ({"iterations": 2.5}, "iterations must be"),
    ],
)
def test_bad_settings_are_refused(kwargs, fragment):
    _, y, op = _problem()
    with pytest.raises(MetadipError, match=fragment):
        metadip.reconstruct(y, op, init="random", stop="budget", **({"iterations": 2} | kwargs))


def test_operator_and_reference_are_checked():
    x, y, op = _problem()
    with pytest.raises(MetadipError, match="metadip operator"):
        _run(y, "denoise:sigma=10")
    with pytest.raises(MetadipError, match="NaN"):
        _run(y, op, reference=torch.full_like(x, math.nan))
    with pytest.raises(MetadipError, match="reference image has shape"):
        _run(y, op, reference=x[:, :1])


def test_harmless_variants_are_accepted():
    x, y, op = _problem()
    plain = _run(y, op).image
    for variant in (y[0], y.double(), y.clone().requires_grad_(True), y.contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(_run(variant, op).image, plain)


def test_simulate_refuses_integer_or_nan_images():
    x, _, op = _problem()
    with pytest.raises(MetadipError, match="float image"):
        operators.simulate((x * 255).to(torch.uint8), op, None)
    with pytest.raises(MetadipError, match="NaN"):
        operators.simulate(torch.full_like(x, math.nan), op, None)


def test_near_zero_loss_is_not_a_spike(monkeypatch):
    """One pixel observed (99.9 % missing): the meta init fits it to ~1e-4 and the loss then jumps by factors
    of 4–10 without anything going wrong. Below SPIKE_FLOOR that is not a divergence (with no floor it was)."""
    x = load_sample_image("astronaut", 32)
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator("inpaint:ratio=0.999", tuple(x.shape[1:]), generator=generator)
    y = operators.simulate(x, op, generator)
    result = metadip.reconstruct(y, op, iterations=20, stop="holdout")
    assert result.stop_reason == "budget" and result.extras["rollbacks"] == 0
    monkeypatch.setattr(dip, "SPIKE_FLOOR", 1e-12)
    assert metadip.reconstruct(y, op, iterations=20, stop="holdout").extras["rollbacks"] > 0


def test_generated_kernel_larger_than_the_image_round_trips(tmp_path):
    """simulate writes the (wrapping) motion kernel it drew; reconstruct must accept its own record."""
    runner = CliRunner()
    y = tmp_path / "y.png"
    args = ["simulate", "sample:camera", "--size", "16", "--operator", "deblur:kernel=motion,length=21"]
    assert runner.invoke(main, [*args, "--out", str(y)]).exit_code == 0
    result = runner.invoke(main, ["reconstruct", str(y), "--out", str(tmp_path / "x.png"), "--iterations", "2"])
    assert result.exit_code == 0, result.output
    absurd = runner.invoke(main, [*args[:-1], "deblur:width=50", "--out", str(tmp_path / "z.png")])
    assert absurd.exit_code == 2 and "more than 4×" in absurd.stderr


def test_simulate_takes_a_kernel_and_a_mask_file(tmp_path):
    from PIL import Image

    def simulate(*args: str):
        return CliRunner().invoke(main, ["simulate", "sample:camera", "--size", "16", *map(str, args)])

    kernel = np.zeros((5, 5))
    kernel[2, :] = 1
    np.save(tmp_path / "k.npy", kernel)
    result = simulate("--operator", "deblur", "--kernel", tmp_path / "k.npy", "--out", tmp_path / "yk.png")
    assert result.exit_code == 0, result.output
    assert np.allclose(np.load(tmp_path / "yk.kernel.npy"), kernel / kernel.sum())
    mask = np.ones((16, 16), np.uint8) * 255
    mask[4:8, 4:8] = 0
    Image.fromarray(mask).save(tmp_path / "m.png")
    result = simulate("--operator", "inpaint", "--mask", tmp_path / "m.png", "--out", tmp_path / "ym.png")
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(tmp_path / "ym.mask.png"))
    assert (written == 0).sum() == 16 and written[5, 5] == 0
    ratio = simulate("--operator", "inpaint:ratio=0.5", "--mask", tmp_path / "m.png", "--out", tmp_path / "yr.png")
    assert ratio.exit_code == 2 and "a mask file means holes=file" in ratio.stderr
