"""Behavioural tests of the DIP loop: it denoises, stops, rolls back, survives NaN, and is deterministic."""

import copy
import math

import pytest
import torch
from conftest import sample_image

from metadip import dip, metrics, operators, optim
from metadip.errors import MetadipError
from metadip.generators import InputRecipe, build_generator, make_input
from metadip.online import PAPER, DipRecipe


def _setup(spec="denoise:sigma=25", size=32, seed=0, image="astronaut", arch=None):
    x = sample_image(image, size)
    generator = torch.Generator().manual_seed(seed)
    op = operators.build_operator(spec, x.shape[1:], generator=generator)
    y = operators.simulate(x, op, generator)
    torch.manual_seed(seed)
    net = build_generator(
        arch
        or {
            "kind": "skip",
            "num_scales": 3,
            "channels_down": 16,
            "channels_up": 16,
            "channels_skip": 4,
            "in_channels": 8,
        },
        out_channels=x.shape[1],
    )
    z = make_input(InputRecipe(channels=net.config["in_channels"]), net.input_shape(size, size))
    return x, y, op, net, z, generator


def test_dip_denoises_64px_image_by_3db_within_300_iterations():
    x, y, op, _, _, generator = _setup(size=64, image="coffee")
    torch.manual_seed(0)
    net = build_generator("skip-slim", out_channels=3)
    z = make_input(InputRecipe(), net.input_shape(64, 64))
    result = dip.fit(
        net, z, y, op, iterations=280, stop="budget", reference=x, generator=generator, track_ssim=False
    )
    noisy = metrics.psnr(y, x)
    assert metrics.psnr(result.image, x) >= noisy + 3.0
    assert len(result.history["loss"]) == 280 and result.stop_iteration == 280


def test_budget_runs_exactly_and_history_has_reference_metrics():
    x, y, op, net, z, generator = _setup()
    result = dip.fit(net, z, y, op, iterations=7, stop="budget", reference=x, generator=generator)
    assert result.stop_iteration == 7 and result.stop_reason == "budget"
    assert {len(v) for v in result.history.values()} == {7}
    assert set(result.history) == {"loss", "psnr", "ssim"}
    assert result.image.shape == x.shape and 0 <= result.image.min() and result.image.max() <= 1


def test_same_seed_gives_bit_identical_result():
    first = _setup()
    second = _setup()
    a = dip.fit(first[3], first[4], first[1], first[2], iterations=10, stop="budget", generator=first[5])
    b = dip.fit(second[3], second[4], second[1], second[2], iterations=10, stop="budget", generator=second[5])
    assert torch.equal(a.image, b.image)
    assert a.history["loss"] == b.history["loss"]


def test_wmv_stops_early_and_returns_its_best_iterate():
    x, y, op, net, z, generator = _setup()
    result = dip.fit(
        net,
        z,
        y,
        op,
        PAPER.replace(ema=0.0),
        iterations=400,
        stop=dip.make_stopping_rule("wmv", window=5, patience=10),
        generator=generator,
        reference=x,
    )
    assert result.stop_reason == "wmv" and result.stop_iteration < 400
    assert result.extras["output_iteration"] == result.stop_iteration - 10


def test_holdout_rule_keeps_part_of_the_measurements_out():
    x, y, op, net, z, generator = _setup("inpaint:ratio=0.3,sigma=10")
    result = dip.fit(net, z, y, op, iterations=30, stop="holdout", generator=generator)
    assert len(result.history["holdout_loss"]) == 30
    assert all(math.isfinite(v) for v in result.history["holdout_loss"])


def test_holdout_split_partitions_measured_entries():
    x, y, op, *_ = _setup("inpaint:ratio=0.5")
    train, held = dip.holdout_split(op, y, 0.1, torch.Generator().manual_seed(0))
    mask = op.measurement_mask().expand_as(train)
    assert torch.equal(train + held, mask)
    assert 0.05 < float(held.sum() / mask.sum()) < 0.15


def test_measurement_loss_ignores_unmeasured_entries():
    x, y, op, *_ = _setup("inpaint:ratio=0.5,sigma=0")
    corrupted = x.clone()
    corrupted[op.measurement_mask().expand_as(x) == 0] = 0.123
    assert float(dip.measurement_loss(op, corrupted, y)) == pytest.approx(0.0, abs=1e-12)


def test_complex_measurement_loss():
    x, y, op, *_ = _setup("fourier:ratio=0.3,sigma=0")
    assert y.is_complex()
    assert float(dip.measurement_loss(op, x, y)) == pytest.approx(0.0, abs=1e-10)
    assert float(dip.measurement_loss(op, x * 0.5, y)) > 0


class _SpikyNet(torch.nn.Module):
    """Wraps a net and returns NaN (or a huge value) at chosen forward calls."""

    def __init__(self, net, bad_calls, value):
        super().__init__()
        self.net, self.bad_calls, self.value, self.calls = net, set(bad_calls), value, 0

    def forward(self, z, size=None):
        self.calls += 1
        out = self.net(z, size=size)
        if self.calls in self.bad_calls:
            return out * 0 + self.value
        return out


@pytest.mark.parametrize("value", [float("nan"), 1e3])
def test_spikes_and_nans_are_rolled_back(value):
    x, y, op, net, z, generator = _setup()
    spiky = _SpikyNet(net, bad_calls={15}, value=value)
    result = dip.fit(spiky, z, y, op, iterations=25, stop="budget", generator=generator)
    assert result.rollbacks == 1
    assert result.stop_iteration == 25 and len(result.history["loss"]) == 25
    assert all(math.isfinite(v) for v in result.history["loss"])


def test_persistent_divergence_stops_with_best_iterate():
    x, y, op, net, z, generator = _setup()
    spiky = _SpikyNet(net, bad_calls=range(12, 1000), value=float("nan"))
    result = dip.fit(spiky, z, y, op, iterations=50, stop="budget", generator=generator)
    assert result.stop_reason == "diverged" and result.stop_iteration == 11
    assert torch.isfinite(result.image).all()


def test_bad_arguments_are_user_errors():
    x, y, op, net, z, generator = _setup()
    with pytest.raises(MetadipError, match="iterations"):
        dip.fit(net, z, y, op, iterations=0)
    with pytest.raises(MetadipError, match="ema"):
        dip.fit(net, z, y, op, PAPER.replace(ema=1.0), iterations=1)
    with pytest.raises(MetadipError, match="optimizer"):
        dip.fit(net, z, y, op, PAPER.replace(optimizer="lbfgs"), iterations=1)


def test_monitor_rule_is_watched_but_not_obeyed():
    x, y, op, net, z, generator = _setup()
    result = dip.fit(
        net,
        z,
        y,
        op,
        PAPER.replace(ema=0.0),
        iterations=60,
        stop="budget",
        generator=generator,
        monitor=dip.make_stopping_rule("wmv", window=5, patience=10),
    )
    assert result.stop_iteration == 60
    watched = result.extras["monitor"]
    assert (
        watched["rule"] == "wmv" and watched["stop_iteration"] is not None and watched["stop_iteration"] < 60
    )
    assert watched["output_iteration"] == watched["stop_iteration"] - 10
    assert watched["image"].shape == x.shape


def test_per_tensor_learning_rates_reach_the_optimizer():
    x, y, op, net, z, generator = _setup()
    names = [n for n, _ in net.named_parameters()]
    opt = dip.make_optimizer("adam", net, 0.01, {names[0]: 0.5})
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[1]["lr"] == 0.01


def _optimiser_run(make, steps: int = 12, restore_at: int = 5):
    """``steps`` optimiser steps on the tiny net's parameters (two tensors with their own lr, one tensor without
    a gradient for the first three steps), a state_dict / load_state_dict round trip at ``restore_at``; returns
    the parameters after each step."""
    x, y, op, net, z, generator = _setup(size=16)
    named = list(net.named_parameters())
    groups = [{"params": [p], "lr": 0.05 if i < 2 else 0.01} for i, (_, p) in enumerate(named)]
    opt = make(groups)
    frozen = named[-1][1]
    trace = []
    saved = None
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        noisy = z + (1 / 30) * torch.randn(z.shape, generator=generator)
        dip.measurement_loss(op, net(noisy, size=(16, 16)), y).backward()
        if step < 3:
            frozen.grad = None
        if step == restore_at:
            saved = (copy.deepcopy(opt.state_dict()), [p.detach().clone() for _, p in named])
        opt.step()
        if step == restore_at + 2:  # roll back two steps, as fit does on a spike
            with torch.no_grad():
                for (_, p), value in zip(named, saved[1], strict=True):
                    p.copy_(value)
            opt.load_state_dict(copy.deepcopy(saved[0]))
        trace.append([p.detach().clone() for _, p in named])
    return trace


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda g: optim.Adam(g, lr=0.01), lambda g: torch.optim.Adam(g, lr=0.01)),
        (
            lambda g: optim.Adam(g, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
            lambda g: torch.optim.Adam(g, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
        ),
        (lambda g: optim.SGD(g, lr=0.01), lambda g: torch.optim.SGD(g, lr=0.01, momentum=0.9)),
    ],
    ids=["adam", "adam-betas-eps", "sgd"],
)
def test_optimisers_are_bit_identical_to_torch_optim(ours, theirs):
    """metadip.optim runs torch.optim's CPU arithmetic: the same parameters, bit for bit, after every step
    (per-tensor learning rates, a tensor without a gradient, a rollback through the state dict)."""
    mine, reference = _optimiser_run(ours), _optimiser_run(theirs)
    for step, (a, b) in enumerate(zip(mine, reference, strict=True)):
        for p, q in zip(a, b, strict=True):
            assert torch.equal(p, q), f"step {step + 1}: max difference {float((p - q).abs().max())}"


def test_fit_gives_the_same_result_as_with_torch_optim(monkeypatch):
    """dip.fit with metadip.optim (the CPU default) and with torch.optim: identical history and image, with
    per-tensor learning rates and a rollback (a spike at the 15th forward pass)."""

    def run():
        x, y, op, net, z, generator = _setup()
        lrs = {name: 0.02 for name, _ in list(net.named_parameters())[::3]}
        spiky = _SpikyNet(net, bad_calls={15}, value=1e3)
        recipe = PAPER.replace(lr_per_tensor=lrs)
        return dip.fit(
            spiky, z, y, op, recipe, iterations=30, stop="budget", generator=generator, reference=x, track_ssim=False
        )

    ours = run()
    monkeypatch.setattr(
        optim,
        "make",
        lambda name, params, lr, betas, eps: torch.optim.Adam(
            params, lr=lr, betas=betas or optim.BETAS, eps=eps or optim.EPS
        ),
    )
    reference = run()
    assert ours.rollbacks == reference.rollbacks == 1
    assert ours.history == reference.history
    assert torch.equal(ours.image, reference.image)


def test_the_recipe_reaches_the_optimizer():
    """make_optimizer honours the recipe's Adam constants (None: torch's defaults) and per-tensor lrs, and fit
    runs them: a recipe stating torch's defaults gives the bit-identical run of one that states none."""
    x, y, op, net, z, generator = _setup()
    names = [n for n, _ in net.named_parameters()]
    opt = dip.make_optimizer("adam", net, 0.01, {names[0]: 0.5}, betas=(0.5, 0.9), eps=1e-4)
    assert (opt.betas, opt.eps) == ((0.5, 0.9), 1e-4) and opt.param_groups[0]["lr"] == 0.5
    assert (dip.make_optimizer("adam", net, 0.01).betas, dip.make_optimizer("adam", net, 0.01).eps) == (
        optim.BETAS,
        optim.EPS,
    )

    def run(recipe):
        x, y, op, net, z, generator = _setup()
        return dip.fit(net, z, y, op, recipe, iterations=6, stop="budget", generator=generator)

    plain, stated, other = run(PAPER), run(PAPER.replace(betas=optim.BETAS, eps=optim.EPS)), run(PAPER.replace(eps=0.1))
    assert plain.history == stated.history and torch.equal(plain.image, stated.image)
    assert plain.history["loss"][1:] != other.history["loss"][1:]


def test_recipe_round_trips_the_sidecar_json_and_refuses_bad_values():
    exported = {
        "optimizer": "adam",
        "lr": 0.002,
        "reg_noise_std": 0.01,
        "ema": 0.9,
        "iterations": 1000,
        "stop": "holdout",
        "stop_options": {"holdout": {"patience": 60}},
        "meta_inner_steps": 48,
        "adapt": "all",
        "loss": "mse",
        "betas": [0.9, 0.999],
        "eps": 1e-08,
        "lr_per_tensor": {"head.0.weight": 0.001},
    }
    recipe = DipRecipe.from_dict(exported)
    assert recipe.to_dict() == exported and list(recipe.to_dict()) == list(exported)
    assert recipe.betas == (0.9, 0.999) and recipe.stopping_rule().patience == 60
    assert PAPER.to_dict() == {
        "optimizer": "adam", "lr": 0.01, "reg_noise_std": 1 / 30, "ema": 0.99, "iterations": 3000, "stop": "holdout"
    }
    assert DipRecipe.from_dict({}) == PAPER  # a missing key takes the paper's value, as reconstruct always did
    overridden = recipe.override(lr=0.05, iterations=7)
    assert (overridden.lr, overridden.lr_per_tensor, overridden.iterations) == (0.05, None, 7)
    for bad, match in (({"lr": 0}, "lr"), ({"ema": 1.0}, "ema"), ({"betas": [0.9]}, "betas"), ({"bogus": 1}, "bogus"),
                       ({"stop": "never"}, "stop"), ({"adapt": "some"}, "adaptation mode")):
        with pytest.raises(MetadipError, match=match):
            DipRecipe.from_dict({**exported, **bad})
