"""``metadip evaluate``: meta-learned init versus random init, side by side (see :mod:`metadip.evaluation`).

Registered on the main group by :mod:`metadip.cli` (``main.add_command(evaluate)``).
"""

# Imports inside functions are deliberate: they keep `metadip --help` and CLI start-up fast.

from __future__ import annotations

import time
from pathlib import Path

import click
from click.core import ParameterSource

from metadip.errors import MetadipError
from metadip.stopping import STOPPING_RULES

#: Operators evaluated when ``--operators`` is not given: the four families the shipped init was trained on.
DEFAULT_OPERATORS = (
    "denoise:sigma=25",
    "inpaint:ratio=0.5",
    "superres:factor=4",
    "deblur:kernel=gauss,width=2,sigma=2",
)
RUN_OPTIONS = ("images", "operators", "size", "iterations", "seeds", "max_images", "tag")


class _EvaluateCommand(click.Command):
    """Lets ``--operators`` take several values (``--operators A B C``): the words after it up to the next
    option are rewritten to ``--operators A --operators B --operators C`` before click parses them."""

    def parse_args(self, ctx, args):
        rewritten: list[str] = []
        greedy = False
        taken = 0
        for arg in [*args, None]:  # None: the end, to check the last --operators got a value
            if greedy and (arg is None or arg == "--" or arg.startswith("-")) and taken == 0:
                raise click.UsageError("--operators needs at least one SPEC (e.g. --operators denoise:sigma=25)", ctx)
            if arg is None:
                break
            if arg == "--operators":
                greedy, taken = True, 0
            elif arg.startswith("--operators="):
                greedy, taken = True, 1
                rewritten += ["--operators", arg.split("=", 1)[1]]
            elif greedy and not arg.startswith("-"):
                rewritten += ["--operators", arg]
                taken += 1
            else:
                greedy = False
                rewritten.append(arg)
        return super().parse_args(ctx, rewritten)


@click.command(
    "evaluate",
    cls=_EvaluateCommand,
    epilog="""\b
Examples:
  metadip evaluate --quick                                  (2 held-out images, 2 operators, ~1-2 min)
  metadip evaluate --init universal-slim --operators denoise:sigma=25 inpaint:ratio=0.5 --size 64 --seeds 3
  metadip evaluate --images my_photos/ --operators superres:factor=4 --init runs/x/x.json --out eval-x
  metadip evaluate --config evaluate/suites/default.toml --out evaluate/results/default
\b
Outputs in --out: results.json (curves, summary, config), results.csv, config.toml, curves.png,
speedup.png, grid_*.png, spectral_*.png, report.md, images/, cases/ (finished cases; a re-run skips them).
""",
)
@click.option(
    "--images",
    default="held-out",
    show_default=True,
    metavar="held-out|DIR|NAME[,NAME]",
    help="The init's held-out images, a folder of PNG/JPG (centre-cropped, resized to --size), or "
    "scikit-image sample names / image files.",
)
@click.option(
    "--operators",
    multiple=True,
    metavar="SPEC [SPEC ...]",
    help=f"Operator specs (default: {' '.join(DEFAULT_OPERATORS)}).",
)
@click.option(
    "--init",
    default="auto",
    show_default=True,
    metavar="NAME|PATH|auto|random",
    help="Meta-learned checkpoint; auto = reconstruct's choice (the init recommended for the suite's operator "
    "family when all operators share one, else the universal default; random if none); random = random arm only.",
)
@click.option(
    "--baseline",
    type=click.Choice(["random", "none"]),
    default="random",
    show_default=True,
    help="Also run random init on the same architecture (its own recipe: the DIP paper's).",
)
@click.option(
    "--size",
    type=click.IntRange(min=8),
    default=64,
    show_default=True,
    metavar="PX",
    help="Image side in pixels.",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=3000,
    show_default=True,
    metavar="N",
    help="Cap per run: each arm runs until its PSNR has passed its peak (see --patience) or N iterations; "
    "with --fixed-budget exactly N.",
)
@click.option(
    "--fixed-budget",
    is_flag=True,
    help="Run every arm for exactly --iterations instead of to convergence (its peak may be the budget's).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    metavar="N",
    help="Convergence: stop an arm after max(N, 0.5 × iterations so far) iterations without a 0.01 dB gain.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    metavar="K",
    help="Seeds 0..K-1 per (image, operator): measurement noise/mask and init draw.",
)
@click.option(
    "--max-images", type=click.IntRange(min=1), default=None, metavar="N", help="Use only the first N images."
)
@click.option(
    "--stop",
    type=click.Choice(STOPPING_RULES),
    default="holdout",
    show_default=True,
    help="The no-ground-truth stopping rule to record (watched, never obeyed).",
)
@click.option("--arch", default=None, metavar="NAME", help="Architecture for --init random (default skip-slim).")
@click.option("--tag", default="", metavar="TEXT", help="Label for these cases (e.g. seen, left-out).")
@click.option("--out", default="metadip-evaluate", show_default=True, metavar="DIR", help="Output folder.")
@click.option("--quick", is_flag=True, help="The quick suite's settings (options given explicitly still win).")
@click.option(
    "--config",
    "config_path",
    default=None,
    metavar="FILE",
    help="Run a suite file (evaluate/suites/*.toml or a previous run's config.toml).",
)
@click.option("--tensorboard", default=None, metavar="DIR", help="Also log every case's curves to TensorBoard.")
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="N",
    help="Worker processes running cases in parallel; 0 = auto (one single-threaded worker per CPU core, "
    "at most 8; one process on CUDA).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="CPU threads per run (default: cores / jobs).",
)
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda", help="Where to run.")
@click.option("--report/--no-report", default=True, show_default=True, help="Write figures and report.md.")
@click.pass_context
def evaluate(
    ctx: click.Context,
    images,
    operators,
    init,
    baseline,
    size,
    iterations,
    fixed_budget,
    patience,
    seeds,
    max_images,
    stop,
    arch,
    tag,
    out,
    quick,
    config_path,
    tensorboard,
    jobs,
    threads,
    device,
    report,
) -> None:
    """Compare DIP from a meta-learned init with DIP from random init: same measurement, same architecture,
    each arm run until its PSNR has passed its peak (or a fixed budget), PSNR at every iteration, where the
    no-ground-truth stopping rule stops, speedups, the speed-quality frontier, classical baselines, figures
    (curves, speedup, frontier, images, spectral view) and report.md. Re-running skips finished cases.
    """
    from metadip import evaluation
    from metadip.runtime import resolve_device

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE

    if quick and config_path:
        raise MetadipError("--quick and --config are mutually exclusive")
    resolve_device(device)  # fail fast on a bad --device
    if config_path:
        clashing = [f"--{n.replace('_', '-')}" for n in RUN_OPTIONS if given(n)]
        if clashing:
            raise MetadipError(f"{', '.join(clashing)} cannot be combined with --config (edit the suite file)")
        base = evaluation.load_suite(config_path)
    elif quick:
        base = evaluation.quick_config()
    else:
        base = None

    if base is not None:
        runs = base.runs
        if quick:  # explicit run options override the quick suite's
            changes = {
                n: v
                for n, v in (
                    ("images", images),
                    ("size", size),
                    ("iterations", iterations),
                    ("seeds", seeds),
                    ("max_images", max_images),
                    ("tag", tag),
                )
                if given(n)
            }
            if operators:
                changes["operators"] = tuple(operators)
            if changes:
                from dataclasses import replace

                runs = tuple(replace(r, **changes) for r in runs)
        from dataclasses import replace as replace_config

        config = replace_config(
            base,
            runs=runs,
            init=init if given("init") else base.init,
            baseline=baseline if given("baseline") else base.baseline,
            stop=stop if given("stop") else base.stop,
            arch=arch if given("arch") else base.arch,
            converge=False if fixed_budget else base.converge,
            patience=patience if given("patience") else base.patience,
        )
    else:
        run = evaluation.RunSpec(
            operators=tuple(operators) or DEFAULT_OPERATORS,
            images=images,
            size=size,
            iterations=iterations,
            seeds=seeds,
            max_images=max_images,
            tag=tag,
        )
        config = evaluation.EvalConfig(
            runs=(run,),
            init=init,
            baseline=baseline,
            stop=stop,
            arch=arch,
            name=Path(out).name or "evaluate",
            converge=not fixed_budget,
            patience=patience,
        )
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise MetadipError(f"--out {out_dir} exists and is not a directory")

    started = time.perf_counter()
    results = evaluation.evaluate(
        config,
        out_dir,
        device=device,
        tensorboard=tensorboard,
        progress=True,
        report=report,
        echo=lambda m: click.echo(m, err=True),
        jobs=jobs,
        threads=threads,
    )
    counts = results.get("_counts", {})
    click.echo(f"cases: {counts.get('run', 0)} run, {counts.get('skipped', 0)} already done (skipped)")
    _echo_summary(results)
    written = ["results.json", "results.csv", "config.toml"] + (["report.md", "*.png"] if report else [])
    click.echo(f"wrote {', '.join(str(out_dir / w) for w in written)} ({time.perf_counter() - started:.0f} s)")


def _echo_summary(results: dict) -> None:
    from metadip.evaluation.report import capped_mark

    by_setting = results["summary"]["by_setting"]

    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    width = max((len(s) for s in by_setting), default=10)
    if any(v.get("n_pairs") for v in by_setting.values()):
        click.echo(
            f"{'setting':<{width}}  {'n':>3}  {'rand peak':>9}  {'meta peak':>9}  {'dPeak':>6}  "
            f"{'dStop':>6}  "
            f"{'speedup':>7}  {'IQR':>5}"
        )
        for name, s in by_setting.items():
            click.echo(
                f"{name:<{width}}  {s['n_cases']:>3}  {fmt(s.get('random_peak_psnr_median')):>9}  "
                f"{fmt(s.get('meta_peak_psnr_median')):>9}  {fmt(s.get('delta_peak_median')):>6}  "
                f"{fmt(s.get('delta_stop_median')):>6}  {fmt(s.get('speedup_median'), 1):>7}  "
                f"{fmt(s.get('speedup_iqr'), 1):>5}{capped_mark(s)}"
            )
    else:
        arm = "random" if any(c["init"] == "random" for c in results["cases"]) else "meta"
        click.echo(f"{'setting':<{width}}  {'n':>3}  {'peak':>6}  {'at':>5}  {'stop':>6}  {'at':>5}")
        for name, s in by_setting.items():
            click.echo(
                f"{name:<{width}}  {s['n_cases']:>3}  {fmt(s.get(f'{arm}_peak_psnr_median')):>6}  "
                f"{fmt(s.get(f'{arm}_peak_iteration_median'), 0):>5}  "
                f"{fmt(s.get(f'{arm}_stop_psnr_median')):>6}  "
                f"{fmt(s.get(f'{arm}_stop_iteration_median'), 0):>5}"
            )
