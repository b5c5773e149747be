"""Regenerate every committed evaluation result, then README's results table.

    python evaluate/run_suites.py                # every evaluate/suites/NAME.toml -> evaluate/results/NAME/
    python evaluate/run_suites.py --quick        # the quick suite only (<= 2 min on 2 CPU cores)
    python evaluate/run_suites.py --suite default --suite size256
    python evaluate/run_suites.py --estimate     # projected runtime here (times a few iterations)
    python evaluate/run_suites.py --fresh ...    # ignore finished cases (default: resume them)

Each suite is ``evaluate/suites/<name>.toml`` (see :mod:`metadip.evaluation` for its keys) and produces
results.json, results.csv, config.toml, figures and report.md in ``evaluate/results/<name>/``; finished cases
in ``cases/`` are reused, so an interrupted run continues where it stopped. Git keeps results.json/csv,
config.toml, report.md and the figures it embeds; ``cases/`` and the raw per-case images in ``images/`` (which
the grid figures are drawn from) are written but ignored (``.gitignore``), so rebuilding a report's grids needs
the suite to have run here. Afterwards README's table is
rebuilt by ``evaluate/readme_table.py`` (skipped with ``--no-readme``, or when only the quick suite ran).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "evaluate"):  # the package, and the sibling script readme_table
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import readme_table  # noqa: E402

SUITES = ROOT / "evaluate" / "suites"
RESULTS = ROOT / "evaluate" / "results"
#: Run order: the quick suite first, so a broken setup fails fast, then the order of README's table.
ORDER = ("quick",) + tuple(name for name in readme_table.ORDER if name != "quick")


def available() -> list[str]:
    names = [p.stem for p in sorted(SUITES.glob("*.toml"))]
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def estimate(names: list[str], device: str, jobs: int = 1) -> float:
    """Print and return the projected seconds: cases × budget × measured ms per iteration (at each size),
    divided by ``jobs`` (assumes the parallel workers do not slow each other down: optimistic)."""
    import torch

    from metadip import api, evaluation, images
    from metadip.errors import MetadipError
    from metadip.imageio import load_sample_image
    from metadip.operators import build_operator, simulate

    speed: dict[int, float] = {}

    def ms_per_iteration(size: int, arms) -> float:
        if size not in speed:
            x = load_sample_image("astronaut", size)
            generator = torch.Generator().manual_seed(0)
            op = build_operator("denoise:sigma=25", tuple(x.shape[1:]), generator=generator)
            y = simulate(x, op, generator)
            arm = arms[-1]
            api.reconstruct(
                y, op, init=arm.init, arch=arm.arch, iterations=3, stop="budget", device=device, reference=x
            )
            result = api.reconstruct(
                y,
                op,
                init=arm.init,
                arch=arm.arch,
                iterations=15,
                stop="budget",
                device=device,
                reference=x,
                monitor="wmv",
            )
            speed[size] = 1000 * (result.seconds - result.setup_seconds) / 15
        return speed[size]

    total = 0.0
    for name in names:
        config = evaluation.load_suite(SUITES / f"{name}.toml")
        try:
            arms, _ = evaluation.resolve_arms(config)
            n_arms = len(arms)
        except MetadipError as exc:
            print(f"{name}: {exc}; timing random init and assuming both arms on the default held-out images")
            arms, _ = evaluation.resolve_arms(evaluation.with_overrides(config, init="random", baseline="random"))
            n_arms = 1 if config.baseline == "none" else 2
        meta = next((a for a in arms if a.label == "meta"), None)
        seconds = 0.0
        for run in config.runs:
            try:
                count = len(evaluation.resolve_images(run.images, meta, run.max_images))
            except MetadipError:
                count = min(run.max_images or len(images.DEFAULT_HELD_OUT), len(images.DEFAULT_HELD_OUT))
            runs = count * len(run.operators) * run.seeds * n_arms
            ms = ms_per_iteration(run.size, arms)
            part = runs * run.iterations * ms / 1000
            print(
                f"  {name}: {count} images × {len(run.operators)} operators × {run.seeds} seeds × "
                f"{n_arms} arms "
                f"× {run.iterations} it at {run.size} px ({ms:.0f} ms/it) ≈ {part / 60:.1f} min"
            )
            seconds += part
        seconds /= max(1, jobs)
        print(f"{name}: ≈ {seconds / 60:.1f} min (+ figures)")
        total += seconds
    print(f"total ≈ {total / 60:.1f} min on {device} with {torch.get_num_threads()} threads × {jobs} job(s)")
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate evaluate/results/<suite>/ and README's table.")
    parser.add_argument("--suite", action="append", choices=available(), help="suite(s) to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="the quick suite only")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--jobs", type=int, default=0, help="worker processes (0 = auto: one single-threaded worker per core)"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    parser.add_argument("--estimate", action="store_true", help="print the projected runtime and exit")
    parser.add_argument("--fresh", action="store_true", help="delete each suite's results first (no resume)")
    parser.add_argument("--no-readme", action="store_true", help="do not update README's results table")
    parser.add_argument("--tensorboard", default=None, metavar="DIR", help="also log curves to DIR/<suite>")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # suites name checkpoint paths relative to the repository root (e.g. evaluate/ablation/...)

    from metadip import evaluation
    from metadip.errors import MetadipError

    names = ["quick"] if args.quick else (args.suite or available())
    if args.estimate:
        jobs, threads = evaluation.parallelism(args.jobs, args.threads, args.device, 10**6)
        evaluation.set_threads(threads)
        estimate(names, args.device, jobs)
        return 0
    for name in names:
        out = (RESULTS / name).relative_to(ROOT)  # relative (cwd is ROOT): the committed re-run commands stay portable
        if args.fresh and out.exists():
            shutil.rmtree(out)
        print(f"== suite {name} -> {out}", flush=True)
        started = time.perf_counter()
        try:
            config = evaluation.load_suite(SUITES / f"{name}.toml")
            tb = str(Path(args.tensorboard) / name) if args.tensorboard else None
            results = evaluation.evaluate(
                config,
                out,
                device=args.device,
                tensorboard=tb,
                progress=True,
                jobs=args.jobs,
                threads=args.threads,
            )
        except MetadipError as exc:
            print(f"error: suite {name}: {exc}", file=sys.stderr)
            return 2
        counts = results.get("_counts", {})
        overall = results["summary"]["overall"]
        print(
            f"   {counts.get('run', 0)} run, {counts.get('skipped', 0)} reused; overall speedup median "
            f"{overall.get('speedup_median')} (IQR {overall.get('speedup_iqr')}); "
            f"{(time.perf_counter() - started) / 60:.1f} min",
            flush=True,
        )
    if not args.no_readme and any(n != "quick" for n in names):
        try:
            readme_table.main(["--update"])
        except SystemExit as exc:  # README missing or without markers: report, but the results are written
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
