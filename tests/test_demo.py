"""metadip.demo's honesty rules: a run cut by its budget while rising is said to be so, no speed comparison is
made against it, and a wall-clock deadline ends a DIP run with what its stopping rule would return."""

from __future__ import annotations

import time

import torch

from metadip import demo, dip, operators
from metadip.generators import InputRecipe, build_generator, make_input
from metadip.stopping import make_stopping_rule


def _run(curve, stop: str, seconds_per_iteration: float = 0.05) -> demo.ArmRun:
    run = demo.ArmRun(init="x", psnr=list(curve), stop=stop)
    run.seconds = [seconds_per_iteration * (i + 1) for i in range(len(curve))]
    run.iterations, run.total_seconds, run.final_psnr = len(curve), run.seconds[-1], curve[-1]
    return run


def _problem(random: demo.ArmRun, meta: demo.ArmRun | None, baselines=None) -> demo.Problem:
    image = torch.zeros(1, 3, 8, 8)
    return demo.Problem(
        "denoise:sigma=25",
        None,
        image,
        image,
        "measurement",
        baselines or {"measurement": 10.0, "tv": 12.0},
        random=random,
        meta=meta,
    )


RISING = [10 + 0.05 * i for i in range(300)]  # +5 dB over its last 100 iterations
LEVELLED = [min(20.0, 10 + 0.1 * i) for i in range(300)]  # flat for its last 200


def test_a_run_cut_while_rising_is_called_so_and_no_comparison_is_made():
    problem = _problem(_run(RISING, "time"), _run(LEVELLED, "holdout"))
    assert problem.random.ending == "rising" and problem.meta.ending == "rule"
    notes = problem.notes()
    assert any("random still rising at its budget" in n and "its peak is not known" in n for n in notes)
    assert not any("passed random's result" in n or "speed" in n for n in notes)


def test_cut_runs_that_levelled_off_or_are_too_short_to_tell():
    assert _run(LEVELLED, "budget").ending == "levelled"
    assert _run(RISING[:150], "time").ending == "short"  # under two windows: nothing can be said
    notes = _problem(_run(RISING[:150], "time"), None).notes()
    assert any("too short to tell" in n for n in notes)


def test_runs_ended_by_their_rules_are_compared_on_the_clock():
    random = _run(RISING, "holdout", seconds_per_iteration=0.1)  # 24.95 dB after 30 s
    meta = _run([20.0, 25.0, 25.6], "holdout")
    notes = _problem(random, meta, {"measurement": 10.0, "tv": 30.0}).notes()
    assert any(
        "meta passed random's result (24.95 dB) after 0.1 s, random returned it after 30.0 s" in n for n in notes
    )
    assert any("the classical tv (30.00 dB) beats both DIP runs" in n for n in notes)


def test_deadline_stops_a_fit_with_the_rules_choice():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator("denoise:sigma=25", x.shape[1:], generator=generator)
    y = operators.simulate(x, op, generator)
    torch.manual_seed(0)
    net = build_generator("skip-slim", out_channels=3)
    z = make_input(InputRecipe(), net.input_shape(16, 16))
    rule = demo.WithDeadline(make_stopping_rule("holdout"), time.perf_counter() - 1.0)  # already past
    assert rule.needs_holdout
    result = dip.fit(net, z, y, op, iterations=50, stop=rule, generator=generator)
    assert result.stop_reason == "time" and result.stop_iteration == 1
    assert result.extras["output_iteration"] == rule.rule.best_iteration
