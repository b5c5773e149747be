"""Adaptation modes: the meta-learner's inner loop adapts exactly what the online DIP loop adapts."""

from __future__ import annotations

import copy

import pytest
import torch

from metadip import dip
from metadip.adaptation import ADAPT_MODES, Z_KEY, adapted_names, adapts_input, norm_parameter_names
from metadip.errors import MetadipError
from metadip.generators import InputRecipe, build_generator
from metadip.meta import MAML, InnerConfig, InputPolicy, Reptile, inner_loop, parameter_dict
from metadip.online import PAPER
from metadip.operators import build_operator, simulate
from metadip.tasks import Task

TINY = {"kind": "skip", "in_channels": 4, "channels_down": [4, 4], "channels_up": [4, 4], "channels_skip": [2, 2]}


def tiny_net(dtype=torch.float64):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_generator(TINY, out_channels=3)
    return net.to(dtype)


def tiny_task(dtype=torch.float64, size=16, spec="denoise:sigma=25"):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, size, size, generator=g, dtype=dtype)
    op = build_operator(spec, (3, size, size), generator=g)
    y = simulate(x, op, g)
    return Task(x=x, y=y, op=op, sigma=op.sigma, seed=7, image="random", spec=op.spec())


def test_modes_pick_the_documented_parameters():
    net = tiny_net()
    every = [n for n, _ in net.named_parameters()]
    norms = norm_parameter_names(net)
    assert adapted_names(net, "all") == every
    assert adapted_names(net, "norm") == adapted_names(net, "input") == [n for n in every if n in norms]
    assert norms and len(norms) < len(every)
    assert adapts_input("input") and not adapts_input("norm") and not adapts_input("all")
    with pytest.raises(MetadipError, match="adaptation mode"):
        adapted_names(net, "everything")


@pytest.mark.parametrize("mode", ADAPT_MODES)
def test_inner_loop_equals_online_loop(mode):
    """Same θ (and z) after K steps: the functional inner loop and dip.fit adapt the same tensors the same way."""
    net = tiny_net()
    task = tiny_task()
    z = InputPolicy(InputRecipe(channels=4), "resample").z_for(task, net)
    steps = 5
    config = InnerConfig(steps=steps, lr=0.01, reg_noise_std=0.0, adapt=mode)
    result = inner_loop(net, parameter_dict(net), z, task, config)

    online = copy.deepcopy(net)
    fitted = dip.fit(
        online,
        z,
        task.y,
        task.op,
        PAPER.replace(lr=0.01, reg_noise_std=0.0, ema=0.0, adapt=mode),
        iterations=steps,
        rollback=False,
    )
    moved = set()
    for name, param in online.named_parameters():
        torch.testing.assert_close(result.params[name], param.detach(), rtol=1e-9, atol=1e-10)
        if not torch.equal(param.detach(), dict(net.named_parameters())[name].detach()):
            moved.add(name)
    assert moved == set(adapted_names(net, mode))  # exactly the adapted tensors moved
    if adapts_input(mode):
        torch.testing.assert_close(result.params[Z_KEY], fitted.extras["adapted_input"], rtol=1e-9, atol=1e-10)
        assert not torch.equal(fitted.extras["adapted_input"], z)
    else:
        assert Z_KEY not in result.params and "adapted_input" not in fitted.extras
    assert all(p.requires_grad for p in online.parameters())  # frozen only for the run


@pytest.mark.parametrize("mode", ["norm", "input"])
def test_first_order_maml_learns_the_frozen_weights_too(mode):
    """Restricted adaptation still meta-learns every weight: the outer gradient reaches the frozen ones."""
    net = tiny_net(torch.float32)
    task = tiny_task(torch.float32)
    inner = InnerConfig(steps=3, lr=0.01, reg_noise_std=0.0, adapt=mode)
    maml = MAML(net, inner, InputPolicy(InputRecipe(channels=4), "resample"), first_order=True, outer_lr=1e-3)
    grads, record = maml.meta_gradient([task])
    assert len(grads) == len(list(net.parameters()))
    frozen = [g for (n, _), g in zip(net.named_parameters(), grads, strict=True) if n not in adapted_names(net, mode)]
    assert frozen and all(float(g.abs().sum()) > 0 for g in frozen)
    assert record["outer_loss"] > 0


def test_reptile_refuses_restricted_adaptation():
    net = tiny_net(torch.float32)
    with pytest.raises(MetadipError, match="reptile"):
        Reptile(net, InnerConfig(adapt="norm"), InputPolicy(InputRecipe(channels=4), "resample"))


@pytest.mark.parametrize(
    ("mode", "spec"),
    [("all", "denoise:sigma=25"), ("input", "denoise:sigma=25"), ("all", "denoise:sigma=0,poisson=30")],
)
def test_sure_inner_loop_equals_online_loop(mode, spec):
    """The SURE loss (PURE for Poisson noise, also with σ = 0): same θ after K steps in the inner loop and in
    dip.fit (same divergence probes)."""
    net = tiny_net()
    task = tiny_task(spec=spec)
    noise = InputPolicy(InputRecipe(channels=4), "resample").z_for(task, net)

    def builder(measurement):  # a measurement-conditioned input, so the divergence probe sees the network
        return noise + 0.5 * measurement.mean(1, keepdim=True)

    z = builder(task.y)
    config = InnerConfig(steps=4, lr=0.01, reg_noise_std=0.0, adapt=mode, loss="sure")
    result = inner_loop(
        net, parameter_dict(net), z, task, config, generator=torch.Generator().manual_seed(3), input_builder=builder
    )
    online = copy.deepcopy(net)
    dip.fit(
        online,
        z,
        task.y,
        task.op,
        PAPER.replace(lr=0.01, reg_noise_std=0.0, ema=0.0, adapt=mode, loss="sure"),
        iterations=4,
        rollback=False,
        sigma=task.op.sigma / 255 or None,
        generator=torch.Generator().manual_seed(3),
        input_builder=builder,
    )
    plain = copy.deepcopy(net)  # the data fit moves θ elsewhere: the unbiased loss was in force in both loops
    dip.fit(
        plain,
        z,
        task.y,
        task.op,
        PAPER.replace(lr=0.01, reg_noise_std=0.0, ema=0.0, adapt=mode),
        iterations=4,
        rollback=False,
        generator=torch.Generator().manual_seed(3),
    )
    for name, param in online.named_parameters():
        # the finite-difference divergence (÷ ε) amplifies float64 rounding to ~1e-9
        torch.testing.assert_close(result.params[name], param.detach(), rtol=1e-6, atol=1e-7)
    assert any(
        not torch.allclose(p.detach(), q.detach(), rtol=1e-5, atol=1e-7)
        for p, q in zip(plain.parameters(), online.parameters(), strict=True)
    )


def test_sure_needs_a_known_loss_name():
    net = tiny_net()
    task = tiny_task()
    with pytest.raises(MetadipError, match="loss"):
        dip.fit(net, torch.zeros(1, 4, 16, 16, dtype=torch.float64), task.y, task.op, PAPER.replace(loss="l1"))
    with pytest.raises(MetadipError, match="inner.loss"):
        InnerConfig(loss="l1")
