"""Running the cases: each arm on each problem through :func:`metadip.api.reconstruct` (with the clean image as
reference, so full PSNR / SSIM curves are recorded, and the no-ground-truth rule as a watch-only monitor), in
worker processes when asked, each finished arm stored as ``DIR/cases/<name>_<key>.json`` and skipped when the
same evaluation runs again."""

from __future__ import annotations

import concurrent.futures as futures
import json
import math
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metadip import api, metrics
from metadip.baselines import compute_baselines, measurement_view
from metadip.errors import MetadipError
from metadip.evaluation.arms import Arm, resolve_arms
from metadip.evaluation.problems import (
    Problem,
    arm_key,
    coverage,
    make_problem,
    measurement_seed,
    plan,
    problem_arms,
    run_mode,
)
from metadip.evaluation.suite import EvalConfig
from metadip.fileio import atomic_write_json
from metadip.imageio import write_image
from metadip.online import PAPER
from metadip.runtime import resolve_device
from metadip.spectral import SpectralRecorder, spectrum_record
from metadip.stopping import Converged


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9.=]+", "-", str(text)).strip("-")[:limit] or "x"


def _round_list(values: Iterable[float], digits: int) -> list[float | None]:
    return [round(float(v), digits) if math.isfinite(float(v)) else None for v in values]


def run_arm(
    arm: Arm,
    x: torch.Tensor,
    y: torch.Tensor,
    op,
    *,
    seed: int,
    iterations: int,
    stop: str,
    device: str,
    bands: int,
    tensorboard: str | Path | None = None,
    converge=None,
    ssim_every: int = 1,
) -> tuple[dict, torch.Tensor]:
    """Run one arm for the full budget — or, with ``converge`` (a :class:`~metadip.stopping.Converged` rule),
    until its PSNR has passed its peak, ``iterations`` being the cap; return (record without identity fields,
    image at the watched rule's stop)."""
    recorder = SpectralRecorder(x, iterations, n_bands=bands)
    ema_curve = EmaCurve(x, ema=CLASSIC_EMA)

    def callback(iteration, estimate, row, raw):
        recorder(iteration, estimate, row, raw)
        ema_curve(iteration, estimate, row, raw)

    result = api.reconstruct(
        y,
        op,
        init=arm.init,
        arch=arm.arch,
        iterations=iterations,
        stop=converge if converge is not None else "budget",
        ssim_every=ssim_every,
        seed=seed,
        device=device,
        reference=x,
        progress=False,
        tensorboard=tensorboard,
        callback=callback,
        monitor=stop,  # api applies the init's stop_options to it
    )
    psnr_curve = [float(v) for v in result.history.get("psnr", [])]
    ssim_curve = [float(v) for v in result.history.get("ssim", [])]
    if not psnr_curve:
        raise MetadipError(f"DIP produced no iterations for {op.spec()} ({result.stop_reason})")
    peak_index = int(np.nanargmax(np.asarray(psnr_curve)))
    monitor = result.extras.get("monitor") or {}
    stop_image = monitor.get("image", result.image).detach().cpu().float()
    run = len(psnr_curve)
    watched_stop = monitor.get("stop_iteration")
    record = {
        "psnr": _round_list(psnr_curve, 3),
        "ssim": _round_list(ssim_curve, 4),
        "peak_psnr": round(psnr_curve[peak_index], 4),
        "peak_iteration": peak_index + 1,
        "final_psnr": round(psnr_curve[-1], 4),
        "stop_rule": stop,
        "stop_iteration": int(watched_stop) if watched_stop is not None else run,
        "stop_triggered": watched_stop is not None,
        "stop_output_iteration": monitor.get("output_iteration"),
        "stop_psnr": round(metrics.psnr(stop_image, x), 4),
        "stop_ssim": round(metrics.ssim(stop_image, x), 4),
        "iterations": run,
        "seconds": round(float(result.seconds), 4),
        "setup_seconds": round(float(result.setup_seconds), 4),
        "ms_per_iteration": round(1000.0 * float(result.seconds - result.setup_seconds) / run, 4),
        "end": result.stop_reason,
        "rollbacks": result.extras.get("rollbacks", 0),
        **({"converged": bool(converge.converged)} if converge is not None else {}),
        "peak_psnr_ema99": round(max(ema_curve.curve), 4),
        "spectral": recorder.to_dict(),
    }
    if any(abs(a - b) > 1e-9 for a, b in zip(ema_curve.curve, psnr_curve, strict=False)):
        record["psnr_ema99"] = _round_list(ema_curve.curve, 3)  # the arm's own recipe is not EMA 0.99
    return record, stop_image


#: DIP's classic output average (the paper's EMA weight), recorded for both arms whatever their own recipe.
CLASSIC_EMA = PAPER.ema


class EmaCurve:
    """``callback(iteration, estimate, row, raw)`` keeping the PSNR of the EMA (weight ``ema``) of the raw
    outputs — the same average :func:`metadip.dip.fit` forms, so for an arm whose recipe uses that EMA the
    curve equals its own PSNR curve."""

    def __init__(self, reference: torch.Tensor, ema: float = CLASSIC_EMA) -> None:
        self.reference = reference.detach().float()
        self.ema = float(ema)
        self.average: torch.Tensor | None = None
        self.curve: list[float] = []

    def __call__(self, iteration: int, estimate: torch.Tensor, row=None, raw=None) -> None:
        current = (estimate if raw is None else raw).detach()
        if self.average is None:
            self.average = current.clone()
        else:
            self.average.mul_(self.ema).add_(current, alpha=1 - self.ema)
        self.curve.append(metrics.psnr(self.average.clamp(0, 1).to(self.reference.device), self.reference))


# ------------------------------------------------------------------------------------------------------ cases


def _case_name(problem: Problem, label: str, key: str) -> str:
    family = problem.operator.split(":", 1)[0]
    return f"{_slug(problem.item.name, 24)}_{family}_s{problem.seed}_{problem.size}px_{label}_{key}"


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _save_png(path: Path, image: torch.Tensor) -> None:
    write_image(path, image.detach().cpu().float().clamp(0, 1))


def _problem_record(
    problem: Problem, out: Path, cases_dir: Path, images_dir: Path, arms: Sequence[Arm], bands: int
) -> tuple[dict, Any, torch.Tensor]:
    """Load or build the problem record (baselines, clean / measurement spectra and PNGs); returns it with
    the operator and y (drawn again — deterministic — when an arm still has to run)."""
    op, y = make_problem(problem.x, problem.operator, problem.seed, problem.item.name)
    path = cases_dir / f"{_case_name(problem, 'problem', problem.pair_key)}.json"
    cached = _read_json(path)
    base = (
        f"{_slug(problem.item.name, 24)}_{problem.operator.split(':', 1)[0]}_s{problem.seed}_"
        f"{problem.size}px_{problem.pair_key}"
    )
    files = {"clean": f"images/{base}_clean.png", "measurement": f"images/{base}_measurement.png"}
    if cached and cached.get("pair_key") == problem.pair_key and all((out / f).is_file() for f in files.values()):
        return cached, op, y
    view, kind = measurement_view(y, op)
    _save_png(out / files["clean"], problem.x)
    _save_png(out / files["measurement"], view)
    meta = next((a for a in arms if a.label == "meta"), None)
    record = {
        "pair_key": problem.pair_key,
        "image": problem.item.name,
        "image_sha256": problem.image_sha,
        "operator": problem.operator,
        "operator_canonical": op.spec(),
        "family": op.name,
        "seed": problem.seed,
        "size": problem.size,
        "tag": problem.tag,
        "coverage": coverage(problem.operator, meta.training) if meta is not None else None,
        "measurement_seed": measurement_seed(problem.seed, problem.item.name, problem.operator),
        "measurement_kind": kind,
        "baselines": compute_baselines(problem.x, y, op),
        "spectra": {"clean": spectrum_record(problem.x), "measurement": spectrum_record(view)},
        "files": files,
    }
    atomic_write_json(path, record)
    return record, op, y


ProgressFactory = Callable[[int], Any]


@dataclass
class _Task:
    """One arm on one problem, everything a worker process needs to run it and store the case."""

    problem: Problem
    arm: Arm
    key: str
    name: str
    problem_record: dict
    out: str
    stop: str
    bands: int
    device: str
    tensorboard: str | None
    converge: tuple[int, float] | None = None  # (patience, fraction) of the Converged rule; None = fixed budget
    ssim_every: int = 1


def _execute(task: _Task) -> dict:
    """Run one arm (the measurement is drawn again: deterministic) and store its case file and PNG."""
    problem, arm, out = task.problem, task.arm, Path(task.out)
    op, y = make_problem(problem.x, problem.operator, problem.seed, problem.item.name)
    tb = None
    if task.tensorboard is not None:
        tb = (
            Path(task.tensorboard)
            / _slug(problem.item.name)
            / _slug(problem.operator)
            / f"s{problem.seed}_{problem.size}px"
            / arm.label
        )
    body, stop_image = run_arm(
        arm,
        problem.x,
        y,
        op,
        seed=problem.seed,
        iterations=problem.iterations,
        stop=task.stop,
        device=task.device,
        bands=task.bands,
        tensorboard=tb,
        converge=None if task.converge is None else Converged(*task.converge),
        ssim_every=task.ssim_every,
    )
    stop_png = f"images/{task.name}_stop.png"
    _save_png(out / stop_png, stop_image)
    prob = task.problem_record
    record = {
        "key": task.key,
        "pair_key": problem.pair_key,
        "image": problem.item.name,
        "operator": problem.operator,
        "family": prob["family"],
        "size": problem.size,
        "tag": problem.tag,
        "coverage": prob.get("coverage"),
        "seed": problem.seed,
        "init": arm.label,
        "init_name": arm.name,
        "init_sha256": arm.sha256,
        "budget": problem.iterations,
        **body,
        "files": {**prob["files"], "stop": stop_png},
    }
    atomic_write_json(out / "cases" / f"{task.name}.json", record)
    return record


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # metadip.runtime.configure_threads respects it
    torch.set_num_threads(threads)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op CPU threads from now on (also for :func:`metadip.api.reconstruct`, which keeps
    an explicit ``OMP_NUM_THREADS``). None leaves the default (every core)."""
    if threads is not None:
        if threads < 1:
            raise MetadipError(f"threads must be >= 1, got {threads}")
        _worker_init(int(threads))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def parallelism(jobs: int, threads: int | None, device: str, n_tasks: int) -> tuple[int, int | None]:
    """(worker processes, CPU threads per run). ``jobs`` 0 = auto: one process on CUDA, else one
    single-threaded worker per core (at most 8, at most one per case) — small DIP nets use several cores far
    better as parallel runs than as threads of one run (measured: 10× on 2 shared cores). ``threads`` None =
    all cores for one process, cores // jobs for several."""
    if jobs < 0:
        raise MetadipError(f"jobs must be >= 0 (0 = auto), got {jobs}")
    if threads is not None and threads < 1:
        raise MetadipError(f"threads must be >= 1, got {threads}")
    cores = _cores()
    if jobs == 0:
        jobs = 1 if resolve_device(device).type == "cuda" else max(1, min(cores, 8, n_tasks))
    jobs = max(1, min(jobs, max(1, n_tasks)))
    if threads is None and jobs > 1:
        threads = max(1, cores // jobs)
    return jobs, threads


def run_cases(
    config: EvalConfig,
    out: str | Path,
    *,
    device: str = "auto",
    tensorboard: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    arms: Sequence[Arm] | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> tuple[list[dict], list[dict], list[Arm], dict]:
    """Run (or load from ``out/cases``) every arm of every problem. Returns (case records, problem records,
    arms, counts {"run": n, "skipped": m, "jobs": j, "threads": t}).

    Cases run in ``jobs`` worker processes (``spawn``; 0 = auto, see :func:`parallelism`; the command line's
    default) with ``threads`` CPU threads each. Spawned workers re-import the calling script, so a script using
    ``jobs != 1`` needs an ``if __name__ == "__main__":`` guard. Per-iteration times then include the
    contention of parallel runs; both arms share it.
    """
    echo = echo or (lambda message: print(message, file=sys.stderr))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MetadipError(f"--out {out} exists and is not a directory")
    if arms is None:
        arms, notes = resolve_arms(config)
        for note in notes:
            echo(note)
    problems = plan(config, arms)
    cases_dir, images_dir = out / "cases", out / "images"
    counts = {"run": 0, "skipped": 0}
    done: dict[str, dict] = {}
    order: list[str] = []
    problem_records: list[dict] = []
    tasks: list[_Task] = []
    for problem in problems:
        own = problem_arms(problem, arms)
        prob, _, _ = _problem_record(problem, out, cases_dir, images_dir, own, config.bands)
        meta = next((a for a in own if a.label == "meta"), None)
        # labels are not part of the cache key: a reused case takes this run's tag and the current init's view
        prob = {
            **prob,
            "tag": problem.tag,
            "coverage": coverage(problem.operator, meta.training) if meta is not None else None,
        }
        problem_records.append(prob)
        for arm in own:
            key = arm_key(problem, arm, config.stop, config.bands, run_mode(config))
            name = _case_name(problem, arm.label, key)
            order.append(key)
            cached = _read_json(cases_dir / f"{name}.json")
            if cached and cached.get("key") == key and (out / f"images/{name}_stop.png").is_file():
                done[key] = {**cached, "tag": problem.tag, "coverage": prob["coverage"]}
                counts["skipped"] += 1
                continue
            tasks.append(
                _Task(
                    problem,
                    arm,
                    key,
                    name,
                    prob,
                    str(out),
                    config.stop,
                    config.bands,
                    str(device),
                    None if tensorboard is None else str(tensorboard),
                    (config.patience, float(config.patience_fraction)) if config.converge else None,
                    config.ssim_every,
                )
            )
    jobs, threads = parallelism(jobs, threads, device, len(tasks))
    counts.update(jobs=jobs, threads=threads if threads is not None else torch.get_num_threads())
    if jobs == 1:
        set_threads(threads)
        counts["threads"] = torch.get_num_threads() if threads is None else threads
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(order),
        initial=counts["skipped"],
        desc="evaluate",
        unit="case",
        disable=None if progress else True,
        dynamic_ncols=True,
    )

    def finished(record: dict) -> None:
        done[record["key"]] = record
        counts["run"] += 1
        bar.update(1)

    try:
        if jobs == 1:
            for task in tasks:
                bar.set_postfix_str(
                    f"{task.problem.item.name} {task.problem.operator} s{task.problem.seed} {task.arm.label}",
                    refresh=False,
                )
                finished(_execute(task))
        else:
            per_worker = threads or 1
            context = multiprocessing.get_context("spawn")
            with futures.ProcessPoolExecutor(
                max_workers=jobs, mp_context=context, initializer=_worker_init, initargs=(per_worker,)
            ) as pool:
                pending = [pool.submit(_execute, task) for task in tasks]
                try:
                    for future in futures.as_completed(pending):
                        finished(future.result())
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
    finally:
        bar.close()
    records = [done[key] for key in order]
    return records, problem_records, list(arms), counts
