"""Converting a colour measurement-conditioned init into a grey one (metadip.meta.grey, model.init_from)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metadip.conditioning import conditioned_channels
from metadip.errors import MetadipError
from metadip.generators import build_generator
from metadip.meta.grey import convert_input_weight, rgb_to_grey_state

SMALL = {"channels_down": [4, 4], "channels_up": [4, 4], "channels_skip": [2, 2], "num_scales": 2}


def nets(noise: int = 3, residual: bool = True):
    """A randomly initialised colour net (non-zero head) and an empty grey net of the same design."""
    torch.manual_seed(0)
    def build(colours: int):
        inputs = conditioned_channels(colours, noise)
        return build_generator("skip", out_channels=colours, in_channels=inputs, residual=residual, **SMALL)

    rgb = build(3)
    with torch.no_grad():
        for p in rgb.head.parameters():
            p.normal_(0, 0.05)
    return rgb, build(1)


def grey_and_colour_z(noise: int = 3):
    gen = torch.Generator().manual_seed(1)
    estimate = torch.rand(1, 1, 16, 16, generator=gen) * 0.8 + 0.1
    seen = (torch.rand(1, 1, 16, 16, generator=gen) > 0.3).float()
    extra = torch.rand(1, noise, 16, 16, generator=gen) * 0.1
    grey = torch.cat([estimate, seen, extra], 1)
    colour = torch.cat([estimate.repeat(1, 3, 1, 1), seen.repeat(1, 3, 1, 1), extra], 1)
    return grey, colour


def test_grey_net_computes_the_colour_nets_features_on_a_grey_picture():
    """Every feature before the head is exactly the colour net's on R = G = B; the output is the mean of the
    colour outputs up to the (small) spread of their logit corrections."""
    rgb, grey = nets()
    grey.load_state_dict(rgb_to_grey_state(rgb.state_dict(), {k: v.shape for k, v in grey.state_dict().items()}, 2, 3))
    z_grey, z_colour = grey_and_colour_z()
    with torch.no_grad():
        torch.testing.assert_close(grey.body(z_grey), rgb.body(z_colour), rtol=1e-5, atol=1e-5)
        colour_out, grey_out = rgb(z_colour), grey(z_grey)
    spread = (colour_out - colour_out.mean(1, keepdim=True)).abs().max()
    assert spread > 1e-3  # the colour outputs do differ, so the check below is not trivial
    assert (grey_out - colour_out.mean(1, keepdim=True)).abs().max() < 0.1 * spread
    # a plain (non-residual) head maps exactly: the mean of three linear rows
    rgb, grey = nets(residual=False)
    grey.load_state_dict(rgb_to_grey_state(rgb.state_dict(), {k: v.shape for k, v in grey.state_dict().items()}, 2, 3))
    with torch.no_grad():
        logits_rgb = rgb.head(rgb.body(z_colour))
        logits_grey = grey.head(grey.body(z_grey))
    torch.testing.assert_close(logits_grey, logits_rgb.mean(1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_input_weight_sums_each_colour_block_and_keeps_shared_channels():
    weight = torch.arange(2 * 11, dtype=torch.float32).view(2, 11, 1, 1)  # 3 colour blocks + 2 shared
    out = convert_input_weight(weight, colour_blocks=3, shared=2)
    assert out.shape == (2, 5, 1, 1)
    assert out[0, :, 0, 0].tolist() == [0 + 1 + 2, 3 + 4 + 5, 6 + 7 + 8, 9, 10]
    with pytest.raises(MetadipError, match="input channels"):
        convert_input_weight(weight, colour_blocks=2, shared=2)


def test_conversion_refuses_weights_of_another_design():
    rgb, _ = nets()
    other = build_generator("skip", out_channels=1, in_channels=5, residual=True, **{**SMALL, "channels_down": [6, 4]})
    with pytest.raises(MetadipError, match="cannot convert"):
        rgb_to_grey_state(rgb.state_dict(), {k: v.shape for k, v in other.state_dict().items()}, 2, 3)
    deeper = build_generator("skip", out_channels=1, in_channels=5, residual=True, **{**SMALL, "need_1x1_up": False})
    with pytest.raises(MetadipError, match="different tensors"):
        rgb_to_grey_state(rgb.state_dict(), {k: v.shape for k, v in deeper.state_dict().items()}, 2, 3)


def test_grey_recipe_fine_tunes_a_colour_init(tmp_path):
    """model.init_from of a grey recipe (tasks.channels = 1) takes a colour conditioned init: 0 steps export the
    converted weights and the colour net's lrs, the sidecar says it was converted, and a grey picture
    reconstructs from it; a grey init cannot seed a colour recipe."""
    from metadip import api, operators
    from metadip.checkpoint import load_checkpoint
    from metadip.pretrain import run_pretrain
    from tests.test_pretrain import quiet, tiny_config

    def conditioned(config, channels: int, **changes):
        options = {**config.model.options, "in_channels": conditioned_channels(channels, 3), "residual": True}
        return dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, options=options, **changes),
            input=dataclasses.replace(config.input, z_mode="conditioned", noise_channels=3, lowpass=1.0),
            tasks=dataclasses.replace(config.tasks, channels=channels),
        )

    base = quiet(tiny_config(steps=1))
    base = dataclasses.replace(base, maml=dataclasses.replace(base.maml, learn_inner_lr=True))
    source = run_pretrain(conditioned(base, 3), tmp_path / "rgb", device="cpu", progress=False).checkpoint
    colour = load_checkpoint(source)
    grey_config = conditioned(dataclasses.replace(base, steps=0), 1, init_from=str(source))
    grey_path = run_pretrain(grey_config, tmp_path / "grey", device="cpu", progress=False).checkpoint
    copied = load_checkpoint(grey_path)
    assert copied.arch_config["out_channels"] == 1 and copied.arch_config["in_channels"] == conditioned_channels(1, 3)
    assert copied.training["init_from"]["converted"] == "rgb-to-grey"
    assert copied.inner["lr_per_tensor"] == pytest.approx(colour.inner["lr_per_tensor"])
    shapes = {k: v.shape for k, v in copied.state_dict.items()}
    expected = rgb_to_grey_state(colour.state_dict, shapes, 2, 3)
    for name, value in expected.items():
        torch.testing.assert_close(copied.state_dict[name], value)

    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    op = operators.build_operator("denoise:sigma=25", x.shape[1:])
    y = operators.simulate(x, op, torch.Generator().manual_seed(1))
    out = api.reconstruct(y, op, init=str(grey_path), iterations=2, stop="budget", device="cpu")
    assert out.image.shape == (1, 1, 16, 16) and torch.isfinite(out.image).all()

    back = conditioned(dataclasses.replace(base, steps=0), 3, init_from=str(grey_path))
    with pytest.raises(MetadipError, match="architecture differs"):
        run_pretrain(back, tmp_path / "back", device="cpu", progress=False)


def test_a_colour_init_named_for_a_grey_picture_is_refused_with_the_fitting_choice(monkeypatch):
    from metadip import api, operators

    monkeypatch.delenv("METADIP_CHECKPOINTS", raising=False)
    grey = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    op = operators.build_operator("denoise:sigma=25", grey.shape[1:])
    y = operators.simulate(grey, op, torch.Generator().manual_seed(1))
    with pytest.raises(MetadipError, match=r"for 3-channel images, this image has 1; use --init auto \(here: "):
        api.reconstruct(y, op, init="universal-slim-long", iterations=1, device="cpu")


def test_grey_net_converts_to_a_complex_net_exact_on_equal_parts():
    """Grey → two channels (real, imaginary; model.init_from of a complex recipe): on a picture whose two parts
    are equal the two-channel net computes the grey net's features and gives its output on both channels."""
    from metadip.meta.grey import change_channels_state

    torch.manual_seed(0)
    noise = 3
    grey = build_generator(
        "skip", out_channels=1, in_channels=conditioned_channels(1, noise), residual=True, need_sigmoid=True, **SMALL
    )
    two = build_generator(
        "skip", out_channels=2, in_channels=conditioned_channels(2, noise), residual=True, need_sigmoid=True, **SMALL
    )
    with torch.no_grad():
        for p in grey.head.parameters():
            p.normal_(0, 0.05)
    shapes = {k: v.shape for k, v in two.state_dict().items()}
    two.load_state_dict(change_channels_state(grey.state_dict(), shapes, 2, noise, 1, 2))
    z_grey, _ = grey_and_colour_z(noise)
    estimate, seen, extra = z_grey[:, :1], z_grey[:, 1:2], z_grey[:, 2:]
    z_two = torch.cat([estimate.repeat(1, 2, 1, 1), seen.repeat(1, 2, 1, 1), extra], 1)
    with torch.no_grad():
        torch.testing.assert_close(two.body(z_two), grey.body(z_grey), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(two(z_two), grey(z_grey).repeat(1, 2, 1, 1), rtol=1e-5, atol=1e-5)
    # RGB → grey through the general function is the historical conversion
    weight = torch.randn(4, 3 * 2 + 5, 3, 3)
    torch.testing.assert_close(
        convert_input_weight(weight, 2, 5), convert_input_weight(weight, 2, 5, source_channels=3, target_channels=1)
    )
    with pytest.raises(MetadipError, match="cannot convert"):
        first = next(k for k, v in shapes.items() if v[0] == 2)  # a head tensor: 2 rows from 1
        change_channels_state(grey.state_dict(), {**shapes, first: torch.Size([3, *shapes[first][1:]])}, 2, noise, 1, 2)
