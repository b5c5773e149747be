"""Generators (skip net, deep decoder) and their inputs: shapes, parameter count, configs, autograd."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from metadip.errors import MetadipError
from metadip.generators import (
    DEFAULT_ARCH,
    PRESETS,
    DeepDecoder,
    InputRecipe,
    SkipNet,
    build_generator,
    count_parameters,
    default_input_recipe,
    jitter,
    make_input,
    prepare_for_speed,
)

# Tiny variants of every preset (same kind and depth, few channels) so the tests stay fast on 2 cores.
TINY = {
    "skip": {"channels_down": 8, "channels_up": 8, "channels_skip": 2, "in_channels": 4},
    "skip-slim": {"channels_down": 6, "channels_up": 6, "in_channels": 4},
    "deep-decoder": {"channels": 8, "in_channels": 8},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are tiny: one intra-op thread is faster, and far faster on a shared, oversubscribed CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(arch: str, out_channels: int = 3, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(arch, out_channels=out_channels, **{**TINY[arch], **kw})


def z_for(net, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return make_input(default_input_recipe(net, seed=seed), net.input_shape(h, w))


def load_bench():
    path = Path(__file__).resolve().parents[1] / "evaluate" / "bench_speed.py"
    spec = importlib.util.spec_from_file_location("bench_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------- architecture


def test_full_skip_has_reference_parameter_count():
    net = build_generator("skip", out_channels=3)
    assert count_parameters(net) == 2_217_831
    assert net.config["in_channels"] == 32 and net.config["channels_down"] == [128] * 5


def test_skip_matches_plain_reference_rebuild():
    bench = load_bench()
    torch.manual_seed(1)
    ours = build_generator(
        "skip", channels_down=[8, 8, 12], channels_up=[8, 10, 12], channels_skip=[2, 3, 4], in_channels=5
    )
    ref = bench.reference_skip(in_ch=5, out_ch=3, down=[8, 8, 12], up=[8, 10, 12], skip=[2, 3, 4])
    assert count_parameters(ours) == count_parameters(ref)
    bench.copy_weights(ours, ref)
    z = torch.rand(1, 5, 32, 32)
    torch.testing.assert_close(ours(z), ref(z), rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", list(PRESETS))
@pytest.mark.parametrize("size", [(17, 23), (33, 50), (32, 32), (5, 7)])
def test_output_shapes_any_size(arch, size):
    net = tiny(arch)
    z = z_for(net, *size)
    out = net(z, size=size)
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", list(PRESETS))
@pytest.mark.parametrize("out_channels", [1, 2, 3])
def test_output_channels_and_range(arch, out_channels):
    net = tiny(arch, out_channels=out_channels)
    out = net(z_for(net, 16, 20), size=(16, 20))
    assert out.shape == (1, out_channels, 16, 20)
    if out_channels == 2:  # complex real/imag: linear head by default
        assert net.config["need_sigmoid"] is False
    else:
        assert net.config["need_sigmoid"] is True
        assert out.min() >= 0 and out.max() <= 1
    forced = tiny(arch, out_channels=2, need_sigmoid=True)
    assert forced.config["need_sigmoid"] is True


def test_skip_input_is_image_sized_and_deep_decoder_input_is_small():
    skip = tiny("skip")
    assert skip.input_shape(17, 23) == (4, 17, 23)
    dd = tiny("deep-decoder")
    assert dd.input_shape(17, 23) == (8, 2, 2)  # ceil(17/16), ceil(23/16)
    assert dd.input_shape(64, 48) == (8, 4, 3)
    assert dd(torch.rand(1, 8, 4, 3)).shape == (1, 3, 64, 48)  # default size: full upsampled output


def test_default_size_is_z_size_for_skip():
    net = tiny("skip-slim")
    assert net(torch.rand(1, 4, 19, 21)).shape == (1, 3, 19, 21)


def test_skip_pads_z_and_crops_the_same_window():
    """forward(z) equals running on the reflect-padded z and cropping the window where z sits."""
    from metadip.generators.skip import reflect_pad

    net = tiny("skip")
    h, w = 17, 23
    z = z_for(net, h, w)
    ph, pw = net.padded_size(h, w)
    assert ph % net.factor == 0 and pw % net.factor == 0 and min(ph, pw) >= 2 * net.factor
    top, left = (ph - h) // 2, (pw - w) // 2
    zp = reflect_pad(z, top, ph - h - top, left, pw - w - left)
    torch.testing.assert_close(zp[:, :, top : top + h, left : left + w], z)
    full = net(zp)
    torch.testing.assert_close(net(z), full[:, :, top : top + h, left : left + w])


def test_reflect_pad_larger_than_the_image():
    from metadip.generators.skip import reflect_pad

    x = torch.arange(3.0).view(1, 1, 1, 3)
    out = reflect_pad(x, 0, 0, 5, 6)
    assert out.shape == (1, 1, 1, 14)
    assert reflect_pad(torch.ones(1, 1, 1, 1), 2, 2, 2, 2).shape == (1, 1, 5, 5)


def test_size_too_large_is_an_error():
    net = tiny("skip-slim")
    with pytest.raises(MetadipError, match="does not fit"):
        net(torch.rand(1, 4, 16, 16), size=(17, 16))
    dd = tiny("deep-decoder")
    with pytest.raises(MetadipError, match="input_shape"):
        dd(torch.rand(1, 8, 2, 2), size=(40, 16))
    with pytest.raises(MetadipError, match="expects z"):
        net(torch.rand(1, 3, 16, 16))


def test_batchnorm_keeps_no_running_statistics():
    for arch in PRESETS:
        net = build_generator(arch)
        assert list(net.buffers()) == []
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and all(not m.track_running_stats for m in bns)


def test_configurable_options_build_and_run():
    net = build_generator(
        "skip",
        num_scales=3,
        channels_down=[4, 6, 8],
        channels_up=[4, 6, 8],
        channels_skip=[0, 2, 2],
        kernel_down=[3, 5, 3],
        kernel_up=1,
        upsample_mode="nearest",
        downsample_mode="avg",
        act="elu",
        pad_mode="zero",
        need_bias=False,
        need_1x1_up=False,
        in_channels=3,
    )
    assert net(torch.rand(1, 3, 24, 24)).shape == (1, 3, 24, 24)
    dd = build_generator("deep-decoder", channels=[8, 8, 8], kernel_size=3, upsample_mode="nearest")
    assert dd.config["num_layers"] == 3 and dd.factor == 4
    assert dd(torch.rand(1, 8, 3, 3), size=(10, 12)).shape == (1, 3, 10, 12)


# -------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("arch", list(PRESETS))
def test_config_round_trip(arch):
    net = build_generator(arch, out_channels=1)
    cfg = json.loads(json.dumps(net.config))
    assert cfg["name"] == arch and cfg["kind"] in ("skip", "deep-decoder")
    again = build_generator(cfg)
    assert again.config == net.config
    assert [p.shape for p in again.parameters()] == [p.shape for p in net.parameters()]
    # out_channels and other fields come from the dict unless overridden
    assert build_generator(cfg).out_channels == 1
    assert build_generator(cfg, out_channels=3).out_channels == 3


def test_partial_and_custom_configs():
    assert build_generator({"name": "skip-slim"}).config == build_generator("skip-slim").config
    custom = build_generator({"kind": "skip", "channels_down": 4, "channels_up": 4, "num_scales": 2})
    assert isinstance(custom, SkipNet) and custom.config["name"] == "custom"
    assert isinstance(build_generator({"kind": "deep-decoder"}), DeepDecoder)
    assert DEFAULT_ARCH == "skip-slim" and build_generator().config["name"] == "skip-slim"


def test_unknown_preset_kind_and_option_errors():
    with pytest.raises(MetadipError, match="skip-slim"):
        build_generator("unet")
    with pytest.raises(MetadipError, match="kind"):
        build_generator({"kind": "transformer"})
    with pytest.raises(MetadipError, match="channels_down"):
        build_generator("skip", channel_down=8)
    with pytest.raises(MetadipError, match="upsample"):
        build_generator("skip", upsample_mode="bicubic")
    with pytest.raises(MetadipError, match="3 entries"):
        build_generator("skip", channels_down=[8, 8, 8], num_scales=5)


# -------------------------------------------------------------------------------- functional calls / autograd


@pytest.mark.parametrize("arch", list(PRESETS))
def test_functional_call_matches_module_and_supports_second_order(arch):
    net = tiny(arch)
    size = (18, 22)
    z = z_for(net, *size)
    params = dict(net.named_parameters())
    out_module = net(z, size=size)
    out_func = functional_call(net, params, (z,), {"size": size})
    torch.testing.assert_close(out_func, out_module, rtol=0, atol=0)

    # one differentiable inner step (MAML style) and a meta-gradient back to the initial parameters
    y = torch.rand_like(out_module)
    loss = torch.mean((functional_call(net, params, (z,), {"size": size}) - y) ** 2)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    fast = {k: p - 0.01 * g for (k, p), g in zip(params.items(), grads, strict=True)}
    outer = torch.mean((functional_call(net, fast, (z,), {"size": size}) - y) ** 2)
    meta = torch.autograd.grad(outer, list(params.values()))
    assert all(torch.isfinite(g).all() for g in meta)
    assert sum(g.abs().sum() for g in meta) > 0


def test_torch_func_grad_works_and_matches_autograd():
    """No running statistics means no in-place buffer updates, so torch.func.grad works through BatchNorm."""
    net = tiny("skip-slim")
    z = z_for(net, 16, 16)
    y = torch.rand(1, 3, 16, 16)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss_fn(p):
        return torch.mean((functional_call(net, p, (z,)) - y) ** 2)

    g_func = torch.func.grad(loss_fn)(params)
    g_auto = torch.autograd.grad(torch.mean((net(z) - y) ** 2), list(net.parameters()))
    for (name, a), b in zip(g_func.items(), g_auto, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_few_adam_steps_fit_an_image():
    net = tiny("skip-slim")
    z = z_for(net, 16, 16)
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.mean((net(z) - y) ** 2)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("arch", list(PRESETS))
def test_channels_last_gives_the_same_output(arch):
    net = tiny(arch)
    z = z_for(net, 24, 20)
    expected = net(z, size=(24, 20))
    net_cl, z_cl = prepare_for_speed(net, z, "cpu", channels_last=True)
    assert z_cl.is_contiguous(memory_format=torch.channels_last)
    out = net_cl(z_cl, size=(24, 20))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    out.mean().backward()  # backward works in channels_last too


# --------------------------------------------------------------------------------------------------- inputs


def test_input_recipe_deterministic_from_seed():
    r = InputRecipe(seed=7)
    a = make_input(r, (32, 9, 11))
    b = make_input(r, (32, 9, 11))
    c = make_input(InputRecipe(seed=8), (32, 9, 11))
    assert a.shape == (1, 32, 9, 11) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 0.1


def test_input_kinds():
    g = make_input(InputRecipe(kind="gaussian", channels=4, scale=2.0, seed=1), (4, 64, 64))
    assert abs(g.std().item() - 2.0) < 0.2
    m = InputRecipe(kind="meshgrid", channels=32)
    assert m.channels == 2
    grid = make_input(m, (2, 5, 9))
    assert grid.shape == (1, 2, 5, 9)
    assert grid[0, 0, 0, 0] == 0 and grid[0, 0, 0, -1] == 1  # x along the width
    assert grid[0, 1, 0, 0] == 0 and grid[0, 1, -1, 0] == 1  # y along the height


def test_input_recipe_dict_round_trip_and_errors():
    r = InputRecipe(kind="gaussian", channels=16, scale=0.5, seed=3)
    assert InputRecipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(MetadipError, match="uniform"):
        InputRecipe(kind="perlin")
    with pytest.raises(MetadipError, match="unknown input kind"):
        InputRecipe.from_dict({"kind": "perlin"})
    with pytest.raises(MetadipError, match="unknown input recipe key"):
        InputRecipe.from_dict({"kind": "uniform", "colour": 1})
    with pytest.raises(MetadipError, match="expects 4"):
        make_input(InputRecipe(channels=32), (4, 8, 8))


def test_make_input_with_explicit_generator_and_default_recipe():
    gen = torch.Generator().manual_seed(5)
    a = make_input(InputRecipe(channels=3), (3, 4, 4), generator=gen)
    b = make_input(InputRecipe(channels=3), (3, 4, 4), generator=gen)
    assert not torch.equal(a, b)  # the caller's generator advances
    assert default_input_recipe(build_generator("deep-decoder")).channels == 64
    assert default_input_recipe({"name": "skip"}).channels == 32


def test_jitter():
    z = torch.zeros(1, 3, 8, 8)
    a = jitter(z, 0.5, torch.Generator().manual_seed(0))
    b = jitter(z, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and abs(a.std().item() - 0.5) < 0.15
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert jitter(z, 0.0, gen) is z and torch.equal(gen.get_state(), state)
