"""Command line: ``metadip demo | simulate | reconstruct`` (and the meta-learning commands).

Every user-input problem (a :class:`~metadip.errors.MetadipError` or a click usage error) is printed as
one line ``error: ...`` on stderr with exit status 2 and no traceback. Outputs are written atomically and
only after the work succeeded; output paths are checked *before* a long computation starts.

This module holds the ``metadip`` group and ``demo``; the other commands live in their own modules and are
registered at the end: ``simulate`` (:mod:`metadip.cli_simulate`), ``reconstruct``
(:mod:`metadip.cli_reconstruct`), ``evaluate`` (:mod:`metadip.cli_evaluate`), ``pretrain`` and ``checkpoints``
(:mod:`metadip.cli_pretrain`). Shared option types and checks: :mod:`metadip.cli_options`.
"""

# Imports inside functions are deliberate: they keep `metadip --help` and CLI start-up fast.

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from metadip import __version__
from metadip.batch import json_safe
from metadip.cli_evaluate import evaluate  # registered below
from metadip.cli_options import POSITIVE_FINITE, SEED
from metadip.cli_pretrain import checkpoints, pretrain  # the meta-learning commands (registered below)
from metadip.cli_reconstruct import reconstruct  # registered below
from metadip.cli_simulate import simulate  # registered below
from metadip.demo import ITERATIONS as DEMO_ITERATIONS
from metadip.demo import SECONDS as DEMO_SECONDS
from metadip.errors import MetadipError, one_line

EXIT_USER_ERROR = 2


def _fast_exit() -> None:
    """Freeze the garbage collector's generations at interpreter exit (once per process). With torch loaded,
    Python's final collection walks its ~2·10⁵ tracked objects: 0.5–1 s on a busy 2-core machine, a third of
    a small ``reconstruct``. Frozen objects are skipped by it (they are still freed by reference counting as
    modules are torn down, and every file metadip writes is complete and closed before a command returns)."""
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        import atexit
        import gc

        atexit.register(gc.freeze)
        _EXIT_HOOKED = True


_EXIT_HOOKED = False


class MetadipGroup(click.Group):
    """A click group that reports user errors as a single ``error: ...`` line (exit 2) instead of click's
    multi-line usage block or a Python traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _fast_exit()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except MetadipError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except click.UsageError as exc:
            hint = ""
            if exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code if exc.exit_code else EXIT_USER_ERROR)
        except OSError as exc:  # disk full, permission changed mid-run, ...: not a bug, not a usage error
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            click.echo(f"error: {one_line(exc.strerror or str(exc))}{where}", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(
    cls=MetadipGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, "--version", prog_name="metadip", message="%(prog)s %(version)s")
def main() -> None:
    """metadip: meta-learned fast initialisations for Deep Image Prior.

    \b
    Quick start:
      metadip demo
      metadip simulate sample:astronaut --size 128 --operator denoise:sigma=25 --seed 0 --out y.png
      metadip reconstruct y.png --out x.png

    Operator specs are NAME[:key=value,...], e.g. denoise:sigma=25, inpaint:ratio=0.5, superres:factor=4,
    deblur:kernel=gauss,width=2,sigma=5, fourier:ratio=0.3 (noise sigma on the 0-255 scale).
    """


# ------------------------------------------------------------------------------------------------- demo


@main.command(
    epilog="""\b
Examples:
  metadip demo                         (64 px astronaut, four problems, writes metadip-demo/demo.png)
  metadip demo --seconds 60 --size 96 --out results
  metadip demo --image sample:camera
"""
)
@click.option(
    "--size", type=click.IntRange(min=16), default=64, show_default=True, help="Image side in pixels."
)
@click.option(
    "--out", default="metadip-demo", show_default=True, metavar="DIR", help="Folder for demo.png / .json."
)
@click.option(
    "--seconds",
    type=POSITIVE_FINITE,
    default=DEMO_SECONDS,
    show_default=True,
    metavar="S",
    help="Wall-clock budget of each DIP run (a run's stopping rule may end it earlier).",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=DEMO_ITERATIONS,
    show_default=True,
    metavar="N",
    help="Iteration cap of each DIP run.",
)
@click.option(
    "--image", default="sample:astronaut", show_default=True, metavar="CLEAN", help="Path or sample:NAME."
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for operators, noise and weights.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda", help="Where to run.")
def demo(size: int, out: str, seconds: float, iterations: int, image: str, seed: int, device: str) -> None:
    """Degrade a picture with four operators (denoise, inpaint, super-resolve, deblur) and reconstruct each
    with DIP from random init and, when one is shipped, from the meta-learned init --init auto picks; plot
    PSNR against wall-clock seconds for both (the best classical method as a line) in DIR/demo.png, print a
    table and say where a run was cut by its budget while still improving.

    Every run gets the same budget (--seconds, --iterations) and ends earlier when its own stopping rule says
    so. Random DIP usually needs far more than a demo's budget to peak: no speed-up is claimed against it.
    """
    from metadip import demo as demo_module
    from metadip.checkpoint import shipped_init_for
    from metadip.fileio import atomic_write_json
    from metadip.imageio import check_output_path, load_image_source
    from metadip.runtime import resolve_device

    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise MetadipError(f"--out {out_dir} exists and is not a directory")
    figure_path = out_dir / "demo.png"
    check_output_path(figure_path)
    resolved_device = resolve_device(device)
    started = time.perf_counter()
    clean = load_image_source(image, size=size)
    problems = demo_module.make_problems(clean, seed)
    # --init auto per operator: the init recommended for it, else the universal default.
    meta_inits = [shipped_init_for(clean.shape[1], operator=p.op) for p in problems]
    meta_init = ", ".join(dict.fromkeys(name for name in meta_inits if name))
    budget = f"{seconds:g} s or {iterations} iterations, whichever comes first, unless its stopping rule ends it"
    click.echo(f"demo: {image} {size}x{size}, init random" + (f" vs {meta_init}" if meta_init else ""))
    click.echo(f"each DIP run: {budget}")
    if len(set(meta_inits)) > 1:
        chosen = ", ".join(f"{p.op.name} → {name or 'none'}" for p, name in zip(problems, meta_inits, strict=True))
        click.echo(f"meta init per operator (--init auto): {chosen}")
    width = max(len(p.op.spec()) for p in problems)
    columns = [("operator", -width), ("classical", -11), ("PSNR", 6)]
    for arm in ("random", "meta") if meta_init else ("random",):
        columns += [(f"{arm} PSNR", 11), ("iters", 5), ("sec", 5), ("stop", -7)]

    def line(cells) -> str:
        return "  ".join(
            f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w) in zip(cells, columns, strict=True)
        ).rstrip()

    click.echo(line([name for name, _ in columns]))
    options = {"seed": seed, "device": resolved_device, "seconds": seconds, "iterations": iterations}
    for problem, op_init in zip(problems, meta_inits, strict=True):
        problem.random = demo_module.run_arm(problem.y, problem.op, clean, "random", **options)
        if op_init:
            problem.meta = demo_module.run_arm(problem.y, problem.op, clean, op_init, **options)
        name, value = problem.classical
        cells = [problem.op.spec(), name, f"{value:.2f}"]
        for run in (problem.random, problem.meta) if meta_init else (problem.random,):
            if run is None:
                cells += ["n/a", "", "", ""]
            else:
                cells += [f"{run.final_psnr:.2f}", run.iterations, f"{run.total_seconds:.1f}", run.stop]
        click.echo(line(cells))
    click.echo(
        "PSNR: dB against the clean image, of what each run returned; classical: the best cheap method "
        "(metadip.baselines; an oracle-tuned λ where it has one); sec: the run's wall-clock seconds, init "
        "loading included; stop: the stopping rule that ended the run, or time / budget when the budget did."
    )
    notes = [note for p in problems for note in p.notes()]
    for note in notes:
        click.echo(f"  {note}")
    if any(p.random is not None and p.random.cut for p in problems):
        click.echo(
            "No speed-up is claimed against a random run cut by its budget: its peak is not known "
            "(metadip evaluate runs both inits past their peaks)."
        )

    demo_module.figure(problems, clean, figure_path, seconds)
    summary = {
        "image": image,
        "size": size,
        "seed": seed,
        "seconds_budget": seconds,
        "iterations_cap": iterations,
        "meta_init": meta_init,
    }
    atomic_write_json(out_dir / "demo.json", json_safe({**summary, "rows": [p.to_json() for p in problems]}))
    click.echo(f"wrote {figure_path} and {out_dir / 'demo.json'} ({time.perf_counter() - started:.0f} s)")


# --------------------------------------------------------------------------------------------- registration

main.add_command(simulate)
main.add_command(reconstruct)
main.add_command(pretrain)
main.add_command(checkpoints)
main.add_command(evaluate)

__all__ = ["main", "simulate", "reconstruct", "demo", "pretrain", "checkpoints"]
