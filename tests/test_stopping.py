"""Stopping rules on synthetic curves: each rule must stop where its signal says and keep the right iterate."""

import math

import pytest
import torch

from metadip.errors import MetadipError
from metadip.stopping import STOPPING_RULES, make_stopping_rule


def _run(rule, outputs, losses=None, holdout=None):
    for index, output in enumerate(outputs):
        loss = losses[index] if losses is not None else 1.0
        held = holdout[index] if holdout is not None else None
        if rule.update(index + 1, output, loss, held):
            return index + 1
    return None


def _outputs_with_variance_profile(profile, generator):
    """A sequence of 'outputs' whose step-to-step jitter has the given amplitude profile."""
    base = torch.rand(1, 3, 8, 8, generator=generator)
    return [base + amp * torch.randn(1, 3, 8, 8, generator=generator) for amp in profile]


def test_wmv_stops_after_patience_and_returns_minimum_variance_iterate():
    generator = torch.Generator().manual_seed(0)
    # Jitter amplitude falls to a minimum at iteration 100, then rises (noise fitting).
    profile = [0.5 * abs(t - 100) / 100 + 0.01 for t in range(1, 401)]
    outputs = _outputs_with_variance_profile(profile, generator)
    rule = make_stopping_rule("wmv", window=10, patience=50)
    rule.reset()
    stopped = _run(rule, outputs)
    assert stopped is not None
    assert 80 <= rule.best_iteration <= 120
    assert stopped == rule.best_iteration + 50
    assert rule.reason == "wmv"
    assert torch.equal(rule.best_output, outputs[rule.best_iteration - 1])


def test_wmv_runs_to_the_end_when_variance_keeps_falling():
    generator = torch.Generator().manual_seed(1)
    outputs = _outputs_with_variance_profile([1.0 / t for t in range(1, 101)], generator)
    rule = make_stopping_rule("wmv", window=5, patience=20)
    rule.reset()
    assert _run(rule, outputs) is None
    assert rule.best_iteration == 100


def test_holdout_stops_after_minimum_of_smoothed_error():
    outputs = [torch.full((1, 1, 4, 4), float(t)) for t in range(300)]
    holdout = [(t - 120) ** 2 / 1e4 + 0.1 for t in range(300)]
    rule = make_stopping_rule("holdout", patience=40, smoothing=0.5)
    rule.reset()
    stopped = _run(rule, outputs, holdout=holdout)
    assert stopped is not None and rule.reason == "holdout"
    assert 110 <= rule.best_iteration <= 130
    assert stopped == rule.best_iteration + 40


def test_holdout_ignores_missing_values():
    rule = make_stopping_rule("holdout", patience=1)
    rule.reset()
    assert _run(rule, [torch.zeros(1)] * 10, holdout=[None] * 10) is None


def test_discrepancy_stops_when_residual_reaches_noise_level():
    sigma = 25 / 255
    losses = [1.0 / t for t in range(1, 1000)]
    rule = make_stopping_rule("discrepancy", tau=1.0)
    rule.reset(sigma=sigma)
    stopped = _run(rule, [torch.zeros(1)] * len(losses), losses=losses)
    assert stopped == math.ceil(1.0 / sigma**2)
    assert rule.reason == "discrepancy"


def test_discrepancy_needs_sigma():
    with pytest.raises(MetadipError, match="noise level"):
        make_stopping_rule("discrepancy").reset(sigma=None)


def test_oracle_keeps_best_psnr_and_needs_reference():
    reference = torch.zeros(1, 1, 4, 4)
    outputs = [torch.full((1, 1, 4, 4), abs(t - 30) / 100) for t in range(200)]
    rule = make_stopping_rule("oracle", patience=20)
    rule.reset(reference=reference)
    stopped = _run(rule, outputs)
    assert rule.best_iteration == 31 and stopped == 51
    with pytest.raises(MetadipError, match="reference"):
        make_stopping_rule("oracle").reset(reference=None)


def test_budget_never_stops():
    rule = make_stopping_rule("budget")
    rule.reset()
    assert _run(rule, [torch.zeros(1)] * 50) is None


def test_unknown_rule_and_bad_options_are_user_errors():
    with pytest.raises(MetadipError, match="valid: " + ", ".join(STOPPING_RULES)):
        make_stopping_rule("nope")
    with pytest.raises(MetadipError, match="bad options"):
        make_stopping_rule("wmv", colour="red")
    with pytest.raises(MetadipError):
        make_stopping_rule("wmv", window=1)


def _peaked(peak_at: int, length: int, rise: float = 10.0, fall: float = 0.002) -> list[float]:
    """Rises to 20 + rise dB at ``peak_at``, then falls by ``fall`` dB per iteration."""
    return [20 + rise * min(i, peak_at) / peak_at - fall * max(0, i - peak_at) for i in range(1, length + 1)]


def test_converged_stops_once_the_peak_has_passed():
    from metadip.stopping import converged_stop_iteration

    # peak at 800: no gain since 800, window max(500, floor(t/2)) -> first t with t - 800 >= floor(t/2) is 1599
    assert converged_stop_iteration(_peaked(800, 6000)) == 1599
    # an early peak (100) gets the 500-iteration floor
    assert converged_stop_iteration(_peaked(100, 6000)) == 600
    # still rising at the cap: never stops (the caller's cap ends it and flags the run)
    assert converged_stop_iteration(_peaked(6000, 6000)) is None
    # gains smaller than 0.01 dB per step do not count as progress... unless they add up past it
    flat = [30.0 + 1e-4 * i for i in range(3000)]  # +0.01 dB every 100 iterations: progress each time
    assert converged_stop_iteration(flat) is None
    assert converged_stop_iteration([30.0 + 1e-6 * i for i in range(3000)]) == 501


def test_converged_rule_keeps_the_best_iterate_and_says_it_converged():
    from metadip.stopping import Converged

    reference = torch.zeros(1, 1, 4, 4)
    rule = Converged(patience=5, fraction=0.0)
    rule.reset(reference=reference)
    errors = [0.5, 0.3, 0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    stopped = None
    for iteration, error in enumerate(errors, start=1):
        if rule.update(iteration, torch.full((1, 1, 4, 4), error), loss=0.0):
            stopped = iteration
            break
    assert stopped == 8 and rule.converged and rule.best_iteration == 3
    assert float(rule.best_output.mean()) == pytest.approx(0.1)
    with pytest.raises(MetadipError):
        Converged().reset(reference=None)
