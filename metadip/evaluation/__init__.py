"""Evaluation: how fast and how well DIP converges from a meta-learned init versus random init.

For every (image, operator, seed) the measurement ``y`` is drawn once, from a generator seeded by a hash of
(seed, image, operator), and DIP runs from each init on the same architecture — each with its own recipe; the
random arm is the DIP paper's — for a fixed budget (``stop="budget"``) with the clean image as ``reference``
(so full PSNR / SSIM curves are recorded) and the no-ground-truth stopping rule as a watch-only ``monitor``
(where it would have stopped and what it would have returned). A :class:`~metadip.spectral.SpectralRecorder`
callback records per-band errors and power spectra at log-spaced iterations.

Each finished arm is stored as ``DIR/cases/<name>_<key>.json`` (atomically), keyed by a hash of everything
that determines it (image content, operator, seed, size, init and its hash, architecture, budget, stopping
rule), and skipped when the same evaluation is run again; ``DIR/results.json`` / ``results.csv`` /
``config.toml`` / figures / ``report.md`` are then rebuilt from the stored cases.

``results.json`` keys (stable; other tools read them):

* ``cases``: one entry per (image, operator, seed, init) with ``image, operator, seed, init`` (``"meta"`` or
  ``"random"``), ``psnr`` and ``ssim`` (per iteration), ``peak_psnr, peak_iteration, stop_iteration,
  stop_psnr, seconds, ms_per_iteration`` and more (``size, family, tag, coverage, stop_output_iteration,
  stop_ssim, final_psnr, target_psnr, iterations_to_target, baselines, spectral, files, pair_key``).
* ``summary``: ``overall`` and ``by_operator`` (operator spec) → ``speedup_median, speedup_iqr,
  delta_peak_median, delta_stop_median, wall_clock_ratio_median, n_cases`` (+ medians of peaks, stops,
  iterations-to-target, baselines); also ``by_setting`` (operator @ size), ``by_family``, ``by_size``,
  ``by_tag``.
* ``config``: everything to re-run (options, command, init name + sha256, seeds, sizes, versions, date).
* ``problems``: per (image, operator, seed): baselines and the power spectra of the clean image and the
  measurement (for the spectral figure).

speedup = iterations random init needs to first reach (its peak − 0.5 dB) ÷ iterations meta init needs to
reach that PSNR (a meta run that never reaches it scores 0 and is counted). wall_clock_ratio is the same
ratio in seconds (iterations × ms per iteration of each arm).

Modules, in the one-way order of the data (each imports only those before it):
:mod:`~metadip.evaluation.suite` (``EvalConfig``, suite TOML) → :mod:`~.arms` (meta / random / auto arms) →
:mod:`~.problems` (images, measurements, cache keys) → :mod:`~.runner` (running and caching cases, workers) →
:mod:`~.statistics` (pairs, frontier, summaries) → :mod:`~.results` (``results.json`` / ``results.csv``) →
:mod:`~.report` (figures and ``report.md``, from results only); :mod:`~.pipeline` (:func:`evaluate`) ties them
together. Every public name is importable from ``metadip.evaluation``.
"""

from metadip.baselines import compute_baselines, measurement_view
from metadip.evaluation.arms import CONDITIONED_OPTIONS, Arm, meta_arm, random_arch, resolve_arms
from metadip.evaluation.pipeline import evaluate
from metadip.evaluation.problems import (
    CASE_FORMAT,
    LEVER_DEFAULTS,
    ImageItem,
    Problem,
    arm_key,
    coverage,
    load_clean,
    make_problem,
    measurement_seed,
    plan,
    problem_arms,
    resolve_images,
    run_mode,
)
from metadip.evaluation.results import (
    CASE_KEYS,
    CSV_COLUMNS,
    SUMMARY_KEYS,
    assemble,
    command_line,
    dump_results,
    load_results,
    results_csv,
    write_results,
)
from metadip.evaluation.runner import (
    CLASSIC_EMA,
    EmaCurve,
    ProgressFactory,
    parallelism,
    run_arm,
    run_cases,
    set_threads,
)
from metadip.evaluation.statistics import (
    ARMS,
    FRONTIER_DB,
    annotate_pairs,
    build_summary,
    frontier,
    iqr,
    median,
    pair_statistics,
    quantiles,
    setting_label,
    still_improving,
    summarize,
)
from metadip.evaluation.suite import (
    BASELINE_CHOICES,
    MARGIN_DB,
    QUICK_SUITE,
    EvalConfig,
    RunSpec,
    load_suite,
    quick_config,
    with_overrides,
)

__all__ = [
    "ARMS",
    "Arm",
    "BASELINE_CHOICES",
    "CASE_FORMAT",
    "CASE_KEYS",
    "CLASSIC_EMA",
    "CONDITIONED_OPTIONS",
    "CSV_COLUMNS",
    "EmaCurve",
    "EvalConfig",
    "FRONTIER_DB",
    "ImageItem",
    "LEVER_DEFAULTS",
    "MARGIN_DB",
    "Problem",
    "ProgressFactory",
    "QUICK_SUITE",
    "RunSpec",
    "SUMMARY_KEYS",
    "annotate_pairs",
    "arm_key",
    "assemble",
    "build_summary",
    "command_line",
    "compute_baselines",
    "coverage",
    "dump_results",
    "evaluate",
    "frontier",
    "iqr",
    "load_clean",
    "load_results",
    "load_suite",
    "make_problem",
    "measurement_seed",
    "measurement_view",
    "median",
    "meta_arm",
    "pair_statistics",
    "parallelism",
    "plan",
    "problem_arms",
    "quantiles",
    "quick_config",
    "random_arch",
    "resolve_arms",
    "resolve_images",
    "results_csv",
    "run_arm",
    "run_cases",
    "run_mode",
    "set_threads",
    "setting_label",
    "still_improving",
    "summarize",
    "with_overrides",
    "write_results",
]
