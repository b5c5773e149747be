"""Measurement-conditioned inputs and the residual skip net that uses them."""

import pytest
import torch
from conftest import sample_image

from metadip import dip, operators
from metadip.conditioning import backprojection, conditioned_channels, make_conditioned_input
from metadip.generators import InputRecipe, build_generator


def _measure(spec, size=32):
    x = sample_image("astronaut", size)
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator(spec, x.shape[1:], generator=generator)
    return x, op, operators.simulate(x, op, generator)


@pytest.mark.parametrize(
    "spec", ["denoise:sigma=10", "inpaint:ratio=0.5", "superres:factor=4", "superres:factor=8", "fourier:ratio=0.3"]
)
def test_estimate_is_close_to_the_clean_image(spec):
    x, op, y = _measure(spec)
    image, normaliser = backprojection(op, y)
    assert image.shape == x.shape and normaliser.shape == x.shape
    assert float(normaliser.max()) == pytest.approx(1.0)
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert float(torch.mean((image - x) ** 2)) < float(torch.mean((0.5 - x) ** 2))


def test_held_out_measurements_do_not_leak_into_z():
    x, op, y = _measure("denoise:sigma=25")
    train, held = dip.holdout_split(op, y, 0.2, torch.Generator().manual_seed(1))
    image, _ = backprojection(op, y, weight=train)
    hidden = held.expand_as(image) > 0
    spiked = y.clone()
    spiked[hidden] = 1.0 - spiked[hidden]  # changing held-out values must not change the estimate
    again, _ = backprojection(op, spiked, weight=train)
    assert torch.equal(image, again)
    assert not torch.equal(image[hidden], y[hidden].clamp(0, 1))


def test_conditioned_input_layout_and_residual_net_starts_at_the_estimate():
    x, op, y = _measure("inpaint:ratio=0.3")
    z = make_conditioned_input(InputRecipe(), op, y, noise_channels=4)
    assert z.shape == (1, conditioned_channels(3, 4), 32, 32)
    net = build_generator(
        {
            "kind": "skip",
            "num_scales": 2,
            "channels_down": 8,
            "channels_up": 8,
            "channels_skip": 2,
            "in_channels": 10,
            "residual": True,
        },
        out_channels=3,
    )
    out = net(z, size=(32, 32))
    assert torch.allclose(out, z[:, :3].clamp(1e-3, 1 - 1e-3), atol=1e-5)
    assert build_generator(net.config).config["residual"] is True
