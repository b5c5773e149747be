"""``metadip demo``: PSNR against wall-clock seconds, DIP from the shipped meta-learned init versus from random
init, on four degraded versions of one picture, beside the best cheap classical method.

Each problem is solved twice — ``--init auto`` (the shipped init recommended for the operator, with its own
recipe and stopping rule) and ``--init random`` (the DIP paper's recipe, the default stopping rule) — with the
same wall-clock budget per run (and an iteration cap). A run ends when its stopping rule says so or when the
budget is spent; it then returns what its rule would have returned at that moment. The clock starts before the
init is loaded, so the seconds are what a user waits.

What the demo does **not** do is call a budget-limited run's result its best: random DIP at 64 px typically
needs thousands of iterations to peak, far beyond a two-minute demo. Where a run was cut by the budget while
its PSNR was still rising (:func:`metadip.evaluation.still_improving`'s fixed-budget test: its last 100
iterations gained more than 0.05 dB), the demo says so ("still rising at its budget: its peak is not known")
and prints no comparison of speed against it. ``metadip evaluate`` runs both arms past their peaks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metadip import api, metrics, operators
from metadip.baselines import compute_baselines, measurement_view
from metadip.fileio import atomic_save_with
from metadip.stopping import StoppingRule

#: The four problems (σ on the 0–255 scale).
OPERATORS = (
    "denoise:sigma=25",
    "inpaint:ratio=0.5",
    "superres:factor=2,sigma=2",
    "deblur:kernel=gauss,width=1.5,sigma=2",
)
#: Wall-clock budget per DIP run (seconds): 4 problems × 2 runs fit in ~2 minutes on 2 cores.
SECONDS = 12.0
#: Iteration cap per run (rarely reached within :data:`SECONDS` at 64 px on a CPU).
ITERATIONS = 3000
#: The still-rising test's window (iterations); it needs a run of at least twice that to say anything.
RISING_WINDOW = 100


class WithDeadline(StoppingRule):
    """``rule``, plus a wall-clock deadline (a :func:`time.perf_counter` value): past it the run stops after the
    current iteration, reason ``time``, returning what ``rule`` would return now (its best iterate so far)."""

    def __init__(self, rule: StoppingRule, deadline: float) -> None:
        super().__init__(name=rule.name)
        self.rule = rule
        self.deadline = deadline
        self.needs_holdout = rule.needs_holdout
        self.needs_reference = rule.needs_reference

    def reset(self, *, sigma=None, reference=None) -> None:
        super().reset(sigma=sigma, reference=reference)
        self.rule.reset(sigma=sigma, reference=reference)

    def update(self, iteration, output, loss, holdout_loss=None, estimate=None) -> bool:
        stop = self.rule.update(iteration, output, loss, holdout_loss, estimate=estimate)
        self.best_iteration, self.best_output = self.rule.best_iteration, self.rule.best_output
        if stop:
            self.reason = self.rule.reason
            return True
        if time.perf_counter() >= self.deadline:
            self.reason = "time"
            return True
        return False


@dataclass
class ArmRun:
    """One DIP run: the init it started from, its PSNR curve against seconds since the run began (one point per
    iteration), and what it returned."""

    init: str
    seconds: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    image: torch.Tensor | None = None
    final_psnr: float = float("nan")
    iterations: int = 0
    stop: str = ""
    total_seconds: float = 0.0
    output_iteration: int | None = None

    @property
    def cut(self) -> bool:
        """Ended by the budget (time or iteration cap), not by its own stopping rule."""
        return self.stop in ("time", "budget")

    @property
    def ending(self) -> str:
        """``rule`` (its stopping rule ended it), ``rising`` (cut by the budget while its PSNR still rose),
        ``levelled`` (cut, but it had levelled off) or ``short`` (cut too early to tell)."""
        if not self.cut:
            return "rule"
        if len(self.psnr) < 2 * RISING_WINDOW:
            return "short"
        # heavy: the whole evaluation package (~80 ms), and metadip.cli imports this module at start-up
        from metadip.evaluation import still_improving

        return "rising" if still_improving({"psnr": self.psnr}, window=RISING_WINDOW) else "levelled"

    def seconds_to_reach(self, target: float) -> float | None:
        """Seconds until this run's curve first reached ``target`` dB (None if it never did)."""
        reached = metrics.first_reaching(self.psnr, target)
        return None if reached is None else self.seconds[reached - 1]

    def to_json(self) -> dict:
        return {
            "init": self.init,
            "psnr": self.final_psnr,
            "iterations": self.iterations,
            "seconds": self.total_seconds,
            "stop": self.stop,
            "ending": self.ending,
            "output_iteration": self.output_iteration,
            "curve": {"seconds": [round(s, 4) for s in self.seconds], "psnr": [round(p, 4) for p in self.psnr]},
        }


def run_arm(y, op, clean, init: str, *, seed: int, device, seconds: float, iterations: int) -> ArmRun:
    """DIP on ``y`` from ``init`` with its own recipe and stopping rule, within ``seconds`` and ``iterations``."""
    started = time.perf_counter()
    recipe = api.load_init(init, arch=None, out_channels=op.image_shape[0], seed=seed, operator=op).recipe
    run = ArmRun(init=init)

    def record(iteration, estimate, row, current) -> None:
        run.seconds.append(time.perf_counter() - started)
        run.psnr.append(metrics.psnr(estimate.clamp(0, 1), clean))

    result = api.reconstruct(
        y,
        op,
        init=init,
        iterations=iterations,
        stop=WithDeadline(recipe.stopping_rule(), started + seconds),
        seed=seed,
        device=device,
        progress=False,
        callback=record,
    )
    run.total_seconds = time.perf_counter() - started
    run.init = result.init
    run.image = result.image
    run.final_psnr = metrics.psnr(result.image, clean.cpu())
    run.iterations = result.stop_iteration
    run.stop = result.stop_reason
    run.output_iteration = result.extras.get("output_iteration")
    return run


@dataclass
class Problem:
    """One operator: its measurement, the classical baselines, and the two runs."""

    spec: str
    op: object
    y: torch.Tensor
    view: torch.Tensor
    view_name: str
    baselines: dict[str, float]
    random: ArmRun | None = None
    meta: ArmRun | None = None

    @property
    def classical(self) -> tuple[str, float]:
        """The best classical method (the measurement itself only when there is nothing else)."""
        methods = {k: v for k, v in self.baselines.items() if k != "measurement"} or self.baselines
        name = max(methods, key=methods.get)
        return name, methods[name]

    def notes(self) -> list[str]:
        """Plain statements about the runs: where one was cut while rising, and — only between runs that both
        ended by their own rule — when the meta run reached the random run's result."""
        family = self.spec.split(":")[0]
        lines = []
        for label, run in (("random", self.random), ("meta", self.meta)):
            if run is None:
                continue
            budget = f"{run.iterations} iterations, {run.total_seconds:.1f} s"
            if run.ending == "rising":
                lines.append(f"{family}: {label} still rising at its budget ({budget}): its peak is not known")
            elif run.ending == "short":
                lines.append(f"{family}: {label} cut by its budget after {budget}: too short to tell if it had peaked")
            elif run.ending == "levelled":
                lines.append(f"{family}: {label} cut by its budget ({budget}) after levelling off")
        if self.meta is not None and self.random is not None and not self.random.cut and not self.meta.cut:
            reached = self.meta.seconds_to_reach(self.random.final_psnr)
            if reached is not None:
                lines.append(
                    f"{family}: both stopped by their rules; meta passed random's result "
                    f"({self.random.final_psnr:.2f} dB) after {reached:.1f} s, random returned it after "
                    f"{self.random.total_seconds:.1f} s"
                )
        name, value = self.classical
        runs = [r for r in (self.random, self.meta) if r is not None]
        if runs and value > max(r.final_psnr for r in runs):
            which = "both DIP runs" if len(runs) == 2 else "the DIP run"
            lines.append(f"{family}: the classical {name} ({value:.2f} dB) beats {which}")
        return lines

    def to_json(self) -> dict:
        name, value = self.classical
        return {
            "operator": self.op.spec(),
            "baselines": self.baselines,
            "classical": {"name": name, "psnr": value},
            "random": self.random.to_json() if self.random else None,
            "meta": self.meta.to_json() if self.meta else None,
            "notes": self.notes(),
        }


def make_problems(clean: torch.Tensor, seed: int) -> list[Problem]:
    problems = []
    for index, spec in enumerate(OPERATORS):
        generator = torch.Generator().manual_seed(seed + index)
        op = operators.build_operator(spec, tuple(clean.shape[1:]), generator=generator)
        y = operators.simulate(clean, op, generator)
        view, view_name = measurement_view(y, op)
        problems.append(Problem(spec, op, y, view, view_name, compute_baselines(clean, y, op)))
    return problems


def figure(problems: list[Problem], clean: torch.Tensor, path: Path, seconds: float) -> None:
    """One column per operator: PSNR against seconds (meta, random, the best classical method as a line), then
    the measurement, the random run's result and the meta run's result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_meta = any(p.meta is not None for p in problems)
    rows = 4 if with_meta else 3
    columns = len(problems)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.0 * columns, 2.2 + 2.3 * (rows - 1)),
        squeeze=False,
        gridspec_kw={"height_ratios": [1.3] + [1] * (rows - 1)},
    )
    colours = {"meta": "tab:blue", "random": "tab:orange"}
    for c, problem in enumerate(problems):
        ax = axes[0][c]
        for label, run in (("random", problem.random), ("meta", problem.meta)):
            if run is None or not run.psnr:
                continue
            name = "random init" if label == "random" else f"meta ({run.init})"
            ax.plot(run.seconds, run.psnr, color=colours[label], lw=1.2, label=name)
            ax.plot([run.total_seconds], [run.final_psnr], "o", color=colours[label], ms=4)
            if run.ending == "rising":
                ax.annotate(
                    "still rising:\npeak unknown",
                    (run.seconds[-1], run.psnr[-1]),
                    fontsize=6,
                    color=colours[label],
                    xytext=(-4, -18),
                    textcoords="offset points",
                    ha="right",
                )
        name, value = problem.classical
        ax.axhline(value, color="0.3", ls="--", lw=0.9, label=f"{name} {value:.1f} dB (classical)")
        ax.set_title(problem.op.spec(), fontsize=7)
        ax.set_xlabel("seconds", fontsize=7)
        if c == 0:
            ax.set_ylabel("PSNR (dB)", fontsize=7)
        ax.set_xlim(0, max(seconds, *(r.total_seconds for r in (problem.random, problem.meta) if r)) * 1.02)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5, loc="lower right")
        images = [(f"{problem.view_name}", problem.view, None)]
        images.append(("random", problem.random.image, problem.random.final_psnr) if problem.random else None)
        if with_meta:
            images.append(("meta", problem.meta.image, problem.meta.final_psnr) if problem.meta else None)
        for r, entry in enumerate(images, start=1):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if entry is None:
                ax.set_title("n/a", fontsize=7)
                continue
            title, image, psnr = entry
            if psnr is None:
                psnr = metrics.psnr(image, clean)
            array = image[0].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
            if array.shape[-1] == 1:
                ax.imshow(array[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(array, interpolation="nearest")
            ax.set_title(f"{title} {psnr:.1f} dB", fontsize=7)
    fig.tight_layout()
    try:
        atomic_save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
