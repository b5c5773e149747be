"""Offset networks (``offset=True``): random DIP's network around an image estimate that it never sees."""

from __future__ import annotations

import copy

import pytest
import torch

from metadip import dip
from metadip.errors import MetadipError
from metadip.evaluation.arms import random_arch
from metadip.generators import build_generator, jitter
from metadip.generators.skip import RESIDUAL_EPS
from metadip.meta import InnerConfig, inner_loop, parameter_dict
from metadip.online import PAPER
from metadip.operators import build_operator, simulate
from metadip.tasks import Task

PLAIN = {"kind": "skip", "in_channels": 4, "channels_down": [4, 4], "channels_up": [4, 4], "channels_skip": [2, 2]}
OFFSET = {**PLAIN, "in_channels": 10, "offset": True}  # 3 estimate + 3 normaliser channels, then 4 noise


def seeded(config, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_generator(config, out_channels=3)


def offset_input(size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 10, size, size, generator=g)


def test_offset_net_starts_at_the_estimate_with_the_plain_nets_weights():
    net, plain = seeded(OFFSET), seeded(PLAIN)
    z = offset_input()
    torch.testing.assert_close(net(z), z[:, :3].clamp(RESIDUAL_EPS, 1 - RESIDUAL_EPS), rtol=0, atol=1e-6)
    weights, reference = net.state_dict(), plain.state_dict()
    assert set(weights) == set(reference)
    assert all(torch.equal(weights[k], reference[k]) for k in weights if not k.startswith("head"))
    assert net.hidden_channels == 6 and getattr(plain, "hidden_channels", 0) == 0
    assert build_generator(net.config).config == net.config  # the sidecar's config rebuilds it


def test_the_network_sees_only_the_noise_channels():
    net = seeded(OFFSET)
    with torch.no_grad():
        for module in net.head.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, 0.5)
    z = offset_input()
    other = z.clone()
    other[:, 3:6] = torch.rand_like(other[:, 3:6])  # another normaliser: nothing changes
    torch.testing.assert_close(net(other), net(z))
    shifted = z.clone()
    shifted[:, :3] = 0.5  # another estimate: the same correction on another logit
    correction = torch.logit(net(z)) - torch.logit(z[:, :3].clamp(RESIDUAL_EPS, 1 - RESIDUAL_EPS))
    torch.testing.assert_close(torch.logit(net(shifted)), correction, rtol=1e-4, atol=1e-4)
    noisy = z.clone()
    noisy[:, 6:] = torch.rand_like(noisy[:, 6:])
    assert not torch.allclose(net(noisy), net(z))


def test_jitter_leaves_the_hidden_channels_and_the_stream_alone():
    z = offset_input()
    full = jitter(z, 0.1, torch.Generator().manual_seed(5))
    kept = jitter(z, 0.1, torch.Generator().manual_seed(5), hidden=6)
    assert torch.equal(kept[:, :6], z[:, :6])
    assert torch.equal(kept[:, 6:], full[:, 6:])


def test_offset_inner_loop_equals_online_loop_with_jitter():
    """Same θ after K jittered steps in the meta-learner's inner loop and in dip.fit — neither jitters the
    estimate, which a plain jitter of all of z would (the control moves θ elsewhere)."""
    net = seeded(OFFSET)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 16, 16, generator=g)
    op = build_operator("inpaint:ratio=0.5", (3, 16, 16), generator=g)
    y = simulate(x, op, g)
    task = Task(x=x, y=y, op=op, sigma=op.sigma, seed=7, image="random", spec=op.spec())
    z = offset_input()
    steps = 4
    config = InnerConfig(steps=steps, lr=0.01, reg_noise_std=0.05)
    result = inner_loop(net, parameter_dict(net), z, task, config, generator=torch.Generator().manual_seed(3))
    online = copy.deepcopy(net)
    recipe = PAPER.replace(lr=0.01, reg_noise_std=0.05, ema=0.0)
    dip.fit(online, z, y, op, recipe, iterations=steps, rollback=False, generator=torch.Generator().manual_seed(3))
    for name, param in online.named_parameters():
        torch.testing.assert_close(result.params[name], param.detach(), rtol=1e-4, atol=1e-6)

    class Everything(torch.nn.Module):  # the same net, but z's estimate jittered too
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z, size=None):
            return self.inner(z, size=size)

    control = Everything(copy.deepcopy(net))
    dip.fit(control, z, y, op, recipe, iterations=steps, rollback=False, generator=torch.Generator().manual_seed(3))
    assert any(
        not torch.allclose(p.detach(), q.detach(), rtol=1e-4, atol=1e-6)
        for p, q in zip(control.inner.parameters(), online.parameters(), strict=True)
    )


def test_offset_options_are_checked_and_dropped_by_the_random_arm():
    with pytest.raises(MetadipError, match="choose one"):
        build_generator({**OFFSET, "residual": True}, out_channels=3)
    with pytest.raises(MetadipError, match="input channels"):
        build_generator({**OFFSET, "in_channels": 6}, out_channels=3)
    with pytest.raises(MetadipError, match="sigmoid"):
        build_generator({**OFFSET, "need_sigmoid": False}, out_channels=3)
    arch = build_generator({"name": "skip-slim", "offset": True, "in_channels": 38}, out_channels=3).config
    assert random_arch(arch) == "skip-slim"
