"""``evaluate``: the whole evaluation — arms, cases (resumed from ``DIR/cases``), results files and report."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from metadip.evaluation.arms import resolve_arms
from metadip.evaluation.report import build_report
from metadip.evaluation.results import assemble, write_results
from metadip.evaluation.runner import run_cases
from metadip.evaluation.suite import EvalConfig


def evaluate(
    config: EvalConfig,
    out: str | Path,
    *,
    device: str = "auto",
    tensorboard: str | Path | None = None,
    progress: bool = True,
    report: bool = True,
    echo: Callable[[str], None] | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> dict:
    """Run ``config`` into ``out`` (resuming finished cases) and write results.json / results.csv /
    config.toml and, with ``report``, the figures and report.md. ``jobs`` / ``threads``: see
    :func:`~metadip.evaluation.runner.parallelism`. Returns the results object with an extra ``_counts`` entry
    {"run", "skipped", "jobs", "threads"} (not written)."""
    echo = echo or (lambda message: print(message, file=sys.stderr))
    arms, notes = resolve_arms(config)
    for note in notes:
        echo(note)
    records, problem_records, arms, counts = run_cases(
        config,
        out,
        device=device,
        tensorboard=tensorboard,
        progress=progress,
        echo=echo,
        arms=arms,
        jobs=jobs,
        threads=threads,
    )
    results = assemble(
        config,
        records,
        problem_records,
        arms,
        out=out,
        device=device,
        notes=notes,
        jobs=counts["jobs"],
        threads=counts["threads"],
    )
    write_results(out, results, config)
    if report:
        build_report(out, results)
    results["_counts"] = counts
    return results
