"""Meta-learners: the functional inner loop, MAML (second order vs finite differences, first order vs the
plain gradient at the adapted weights) and Reptile (moves θ0 toward θ_K)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from metadip.dip import measurement_loss
from metadip.errors import MetadipError
from metadip.generators import InputRecipe, build_generator
from metadip.meta import (
    MAML,
    InnerConfig,
    InputPolicy,
    Reptile,
    inner_loop,
    parameter_dict,
    resolve_loss_steps,
)
from metadip.meta.inner import inner_generator
from metadip.operators import build_operator
from metadip.tasks import Task

TINY = {
    "kind": "skip",
    "in_channels": 4,
    "channels_down": [4, 4],
    "channels_up": [4, 4],
    "channels_skip": [2, 2],
}


def tiny_net(dtype=torch.float32, act="leakyrelu", seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_generator({**TINY, "act": act}, out_channels=3)
    return net.to(dtype)


def tiny_task(dtype=torch.float32, spec="inpaint:ratio=0.5,sigma=0", seed=1, size=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g, dtype=dtype)
    op = build_operator(spec, (3, size, size), generator=g)
    y = op.A(x) + 0.05 * torch.randn(x.shape, generator=g, dtype=dtype)
    mask = op.measurement_mask()
    if mask is not None:
        y = y * mask.to(dtype)
    return Task(x=x, y=y, op=op, sigma=12.75, seed=1000 + seed, image="random", spec=op.spec())


def policy():
    return InputPolicy(InputRecipe(channels=4), "resample")


def directional_fd(fn, params, direction, h):
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(h * d)
    plus = fn()
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * h * d)
    minus = fn()
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(h * d)
    return (plus - minus) / (2 * h)


def test_inner_adam_matches_torch_adam():
    """The functional Adam is torch.optim.Adam, step for step (same jitter draws)."""
    net = tiny_net(torch.float64)
    task = tiny_task(torch.float64)
    z = policy().z_for(task, net)
    config = InnerConfig(steps=4, lr=0.01, reg_noise_std=1 / 30)
    result = inner_loop(net, parameter_dict(net), z, task, config, generator=torch.Generator().manual_seed(7))

    reference = copy.deepcopy(net)
    opt = torch.optim.Adam(reference.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(7)
    for _ in range(4):
        noisy = z + (1 / 30) * torch.randn(z.shape, generator=g, dtype=z.dtype)
        opt.zero_grad()
        measurement_loss(task.op, reference(noisy, size=task.size), task.y).backward()
        opt.step()
    for name, param in reference.named_parameters():
        torch.testing.assert_close(result.params[name], param, rtol=1e-9, atol=1e-10)
    assert len(result.losses) == 4 and result.losses[-1] < result.losses[0]


@pytest.mark.parametrize("learn_inner_lr", [False, True])
def test_maml_second_order_matches_finite_differences(learn_inner_lr):
    """Meta-gradient through 3 inner Adam steps (jitter on, multi-step 'both' loss, Meta-SGD) vs central
    differences in float64 along random directions. A smooth activation (SiLU) so the difference quotient is
    not spoiled by LeakyReLU kinks crossed by the perturbation."""
    net = tiny_net(torch.float64, act="silu")
    task = tiny_task(torch.float64)
    inner = InnerConfig(steps=3, lr=0.01, reg_noise_std=0.03)
    maml = MAML(
        net,
        inner,
        policy(),
        first_order=False,
        outer_loss="both",
        loss_steps="all",
        learn_inner_lr=learn_inner_lr,
    )
    if learn_inner_lr:
        with torch.no_grad():
            for i, p in enumerate(maml.log_lr.values()):
                p.fill_(0.3 * math.sin(i))
    grads, record = maml.task_gradient(task)
    params = maml.meta_parameters()
    assert len(grads) == len(params)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))
        numeric = directional_fd(lambda: maml.task_gradient(task)[1]["outer_loss"], params, direction, 1e-7)
        assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-9)
    if learn_inner_lr:  # the learned-lr part of the gradient on its own
        direction = [torch.zeros_like(p) for p in params[: len(maml.names)]]
        direction += [torch.ones_like(p) for p in params[len(maml.names) :]]
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))
        numeric = directional_fd(lambda: maml.task_gradient(task)[1]["outer_loss"], params, direction, 1e-7)
        assert abs(analytic) > 1e-6
        assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-9)


def test_first_order_maml_is_plain_gradient_at_adapted_weights():
    net = tiny_net(torch.float64)
    task = tiny_task(torch.float64, spec="denoise:sigma=20")
    inner = InnerConfig(steps=3, lr=0.01, reg_noise_std=0.03)
    maml = MAML(net, inner, policy(), first_order=True, outer_loss="clean", loss_steps="last")
    grads, _ = maml.task_gradient(task)

    z = maml.inputs.z_for(task, net)
    generator = inner_generator(task)
    k = inner.draw_steps(generator)
    adapted = inner_loop(net, parameter_dict(net), z, task, inner, steps=k, generator=generator).params
    clone = copy.deepcopy(net)
    with torch.no_grad():
        for name, param in clone.named_parameters():
            param.copy_(adapted[name])
    torch.mean((clone(z, size=task.size) - task.x) ** 2).backward()
    for g, (_, param) in zip(grads, clone.named_parameters(), strict=True):
        torch.testing.assert_close(g, param.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss_steps", ["last", "all"])
def test_truncated_second_order_interpolates_between_first_order_and_full(loss_steps):
    """second_order_steps = 0 is first-order MAML; = K (or more) is full second-order MAML."""
    net = tiny_net(torch.float64)
    task = tiny_task(torch.float64)

    def grads(first_order, second_order_steps=None):
        inner = InnerConfig(steps=3, reg_noise_std=0.03, second_order_steps=second_order_steps)
        maml = MAML(net, inner, policy(), first_order=first_order, loss_steps=loss_steps)
        return maml.task_gradient(task)[0]

    for a, b in zip(grads(False, 0), grads(True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-13)
    for a, b in zip(grads(False, 5), grads(False, None), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-13)
    partial, full = grads(False, 1), grads(False, None)
    assert any(not torch.allclose(a, b) for a, b in zip(partial, full, strict=True))


def test_first_order_multi_step_loss_sums_gradients_at_each_iterate():
    net = tiny_net(torch.float64)
    task = tiny_task(torch.float64)
    inner = InnerConfig(steps=3, lr=0.01, reg_noise_std=0.0)
    maml = MAML(net, inner, policy(), first_order=True, outer_loss="measurement", loss_steps=[1, 3])
    grads, _ = maml.task_gradient(task)
    z = maml.inputs.z_for(task, net)
    expected = [torch.zeros_like(p) for p in net.parameters()]
    for t in (1, 3):
        theta = inner_loop(net, parameter_dict(net), z, task, inner, steps=t).params
        clone = copy.deepcopy(net)
        with torch.no_grad():
            for name, param in clone.named_parameters():
                param.copy_(theta[name])
        (measurement_loss(task.op, clone(z, size=task.size), task.y) / 2).backward()
        expected = [e + p.grad for e, p in zip(expected, clone.parameters(), strict=True)]
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-13)


def test_reptile_moves_theta0_toward_adapted_weights():
    net = tiny_net()
    task = tiny_task()
    inner = InnerConfig(steps=5, lr=0.01)
    reptile = Reptile(net, inner, policy(), epsilon_start=0.3, epsilon_end=0.3, anneal_steps=10)
    z = reptile.inputs.z_for(task, net)
    generator = inner_generator(task)
    k = inner.draw_steps(generator)
    adapted = inner_loop(net, parameter_dict(net), z, task, inner, steps=k, generator=generator).params

    def distance():
        return math.sqrt(
            sum(float(((p.detach() - adapted[n].detach()) ** 2).sum()) for n, p in net.named_parameters())
        )

    before = distance()
    assert before > 0
    info = reptile.step([task], step=0)
    assert info["epsilon"] == pytest.approx(0.3)
    assert distance() == pytest.approx((1 - 0.3) * before, rel=1e-4)


def test_reptile_learned_z_moves_against_the_clean_loss_gradient():
    net = tiny_net()
    task = tiny_task()
    inputs = InputPolicy.create(InputRecipe(channels=4), "fixed", net, sizes=[16])
    reptile = Reptile(
        net, InnerConfig(steps=3, lr=0.01), inputs, epsilon_start=0.2, epsilon_end=0.1, anneal_steps=2, z_lr=0.05
    )
    assert reptile.meta_parameters()[-1] is inputs.fixed_z
    grads, _ = reptile.meta_gradient([task])
    z_before = inputs.fixed_z.clone()
    record = reptile.apply(grads, step=1)  # ε = 0.15: z moves by 0.05 · 0.15 / 0.2 in RMS
    assert record["z_step"] == pytest.approx(0.0375)
    step = inputs.fixed_z - z_before
    assert float(step.pow(2).mean().sqrt()) == pytest.approx(0.0375, rel=1e-5)
    cosine = float((-step * grads[-1]).sum() / (step.norm() * grads[-1].norm()))
    assert cosine == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(MetadipError, match="z_mode = 'fixed'"):
        Reptile(tiny_net(), InnerConfig(), policy(), z_lr=0.05)


def test_reptile_epsilon_anneals_linearly():
    reptile = Reptile(
        tiny_net(), InnerConfig(), policy(), epsilon_start=0.2, epsilon_end=0.02, anneal_steps=100
    )
    assert reptile.epsilon(0) == pytest.approx(0.2)
    assert reptile.epsilon(50) == pytest.approx(0.11)
    assert reptile.epsilon(100) == pytest.approx(0.02)
    assert reptile.epsilon(1000) == pytest.approx(0.02)


def test_meta_batch_gradient_is_mean_of_task_gradients():
    net = tiny_net()
    tasks = [tiny_task(seed=s) for s in (1, 2, 3)]
    maml = MAML(net, InnerConfig(steps=2), policy(), first_order=True)
    mean, record = maml.meta_gradient(tasks)
    singles = [maml.task_gradient(t)[0] for t in tasks]
    for i, g in enumerate(mean):
        torch.testing.assert_close(g, sum(s[i] for s in singles) / 3)
    assert set(record) >= {"outer_loss", "psnr", "inner_loss", "k"}


def test_maml_steps_reduce_the_outer_loss():
    """Behavioural: a few outer steps on one task make θ0 better at that task after K steps."""
    net = tiny_net()
    task = tiny_task(spec="denoise:sigma=10")
    maml = MAML(net, InnerConfig(steps=2, reg_noise_std=0.0), policy(), first_order=False, outer_lr=3e-3)
    first = maml.task_gradient(task)[1]["outer_loss"]
    for _ in range(8):
        maml.step([task])
    assert maml.task_gradient(task)[1]["outer_loss"] < first


def test_sampled_k_and_loss_steps():
    inner = InnerConfig(steps=5, sample_steps=(2, 6))
    ks = {inner.draw_steps(torch.Generator().manual_seed(s)) for s in range(60)}
    assert ks == {2, 3, 4, 5, 6}
    assert resolve_loss_steps("last", 4) == [4]
    assert resolve_loss_steps("all", 3) == [1, 2, 3]
    assert resolve_loss_steps([0, 2, 9], 4) == [0, 2]
    assert resolve_loss_steps([9], 4) == [4]


def test_learned_inner_lrs_are_reported_and_first_order_gives_them_gradients():
    net = tiny_net()
    maml = MAML(net, InnerConfig(steps=2), policy(), first_order=True, learn_inner_lr=True)
    lrs = maml.inner_lrs()
    assert (
        lrs is not None
        and set(lrs) == set(maml.names)
        and all(v == pytest.approx(0.01) for v in lrs.values())
    )
    grads, _ = maml.task_gradient(tiny_task())
    lr_grads = grads[len(maml.names) :]
    assert len(lr_grads) == len(maml.names) and any(float(g.abs()) > 0 for g in lr_grads)
