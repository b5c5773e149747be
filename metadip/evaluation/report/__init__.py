"""Figures (PNG, matplotlib with the Agg backend, imported inside the functions) and ``report.md`` for an
evaluation's ``results.json``. Everything is rebuilt from ``results.json`` and the small PNGs under
``images/`` — no DIP run is repeated:
``python -c "from metadip.evaluation.report import build_report; build_report('DIR')"``.

Figures, per setting (operator @ size):

* ``curves.png`` — PSNR vs iteration (log x), median line and interquartile band over images × seeds, meta vs
  random; dotted verticals at the median iteration where the no-ground-truth rule stops.
* ``speedup.png`` — speedup per pair (box + points; 1 = as fast as random, 0 = never reached) — or, random arm
  only, ``convergence.png``: iterations random init needs to reach its peak − 0.5 dB.
* ``grid_<setting>.png`` — clean, measurement (or its bicubic / back-projected view), random at its stop,
  meta at its stop, for up to four images.
* ``frontier.png`` — the speed–quality frontier: median iterations each arm needs to first reach random's
  peak − δ, δ ∈ {0.25, 0.5, 1, 2} dB (log y; a missing meta point = never reached in at least half the pairs).
* ``spectral_<setting>.png`` — one representative pair (median speedup): radially averaged power spectrum of
  the reconstruction at a few iterations against the clean image and the measurement, and heat maps of the
  relative error per radial frequency band over iterations, meta vs random (and their difference).

Modules: :mod:`~metadip.evaluation.report.common` (settings, pairs, formats), :mod:`~.figures` (the PNGs),
:mod:`~.markdown` (tables and readings, ``report.md``); they read ``results.json`` objects only
(:mod:`metadip.evaluation.results`, :mod:`metadip.evaluation.statistics`), never run anything.
"""

from __future__ import annotations

from pathlib import Path

from metadip.evaluation.report.common import COLORS, LABELS, _arms, capped_mark, representative_pair, settings, slug
from metadip.evaluation.report.figures import (
    SPECTRUM_ITERATIONS,
    plot_convergence,
    plot_curves,
    plot_frontier,
    plot_grid,
    plot_spectral,
    plot_speedup,
)
from metadip.evaluation.report.markdown import (
    curves_reading,
    grid_reading,
    spectral_reading,
    speedup_reading,
    write_markdown,
)
from metadip.evaluation.results import load_results

__all__ = [
    "COLORS",
    "LABELS",
    "SPECTRUM_ITERATIONS",
    "build_report",
    "capped_mark",
    "curves_reading",
    "grid_reading",
    "plot_convergence",
    "plot_curves",
    "plot_frontier",
    "plot_grid",
    "plot_spectral",
    "plot_speedup",
    "representative_pair",
    "settings",
    "slug",
    "speedup_reading",
    "spectral_reading",
    "write_markdown",
]


def build_report(out: str | Path, results: dict | None = None) -> list[Path]:
    """Write every figure and ``report.md`` into ``out`` (reading ``out/results.json`` when ``results`` is
    None). Returns the written paths."""
    out = Path(out)
    results = results if results is not None else load_results(out)
    results = {k: v for k, v in results.items() if not k.startswith("_")}
    figures: dict[str, Path] = {"curves": plot_curves(results, out / "curves.png")}
    frontier_figure = plot_frontier(results, out / "frontier.png")
    if frontier_figure is not None:
        figures["frontier"] = frontier_figure
    if "meta" in _arms(results) and "random" in _arms(results):
        figures["speedup"] = plot_speedup(results, out / "speedup.png")
    elif "random" in _arms(results):
        figures["convergence"] = plot_convergence(results, out / "convergence.png")
    for setting in settings(results):
        grid = plot_grid(results, setting, out, out / f"grid_{slug(setting)}.png")
        if grid is not None:
            figures[f"grid:{setting}"] = grid
        spectral = plot_spectral(results, setting, out / f"spectral_{slug(setting)}.png")
        if spectral is not None:
            figures[f"spectral:{setting}"] = spectral
    report = write_markdown(results, out, figures)
    return [*figures.values(), report]
