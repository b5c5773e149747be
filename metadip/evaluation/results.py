"""The results files of an evaluation: the ``results.json`` object (:func:`assemble`; keys documented in
:mod:`metadip.evaluation`), its text, ``results.csv`` and ``config.toml``, and reading ``results.json`` back.

``results.json`` is committed for every suite, so it is kept small (:func:`compact`): per-iteration curves at
the precision the runner records them with, spectral power to a few significant digits, one line per case."""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata as md
import io
import json
import math
import platform
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import metadip
from metadip.errors import MetadipError
from metadip.evaluation.arms import Arm
from metadip.evaluation.problems import _training_images
from metadip.evaluation.runner import _read_json
from metadip.evaluation.statistics import annotate_pairs, build_summary, setting_label
from metadip.evaluation.suite import EvalConfig
from metadip.fileio import atomic_write_text
from metadip.runtime import resolve_device

CASE_KEYS = (
    "image",
    "operator",
    "seed",
    "init",
    "psnr",
    "ssim",
    "peak_psnr",
    "peak_iteration",
    "stop_iteration",
    "stop_psnr",
    "seconds",
    "ms_per_iteration",
)


SUMMARY_KEYS = (
    "speedup_median",
    "speedup_iqr",
    "delta_peak_median",
    "delta_stop_median",
    "wall_clock_ratio_median",
    "n_cases",
)


CSV_COLUMNS = (
    "image",
    "operator",
    "family",
    "size",
    "tag",
    "coverage",
    "seed",
    "init",
    "init_name",
    "budget",
    "iterations",
    "peak_psnr",
    "peak_iteration",
    "final_psnr",
    "stop_iteration",
    "stop_triggered",
    "stop_output_iteration",
    "stop_psnr",
    "stop_ssim",
    "converged",
    "capped_while_improving",
    "peak_psnr_ema99",
    "target_psnr",
    "iterations_to_target",
    "speedup",
    "wall_clock_ratio",
    "seconds",
    "ms_per_iteration",
)


#: Decimals of the per-iteration curves in ``results.json``: PSNR to 0.001 dB, SSIM to 1e-4 — what the runner
#: records, and what every statistic (targets, iterations to target, speedups, the frontier, still-improving) is
#: computed from, so compacting a stored results.json changes none of them.
CURVE_DECIMALS = {"psnr": 3, "psnr_ema99": 3, "ssim": 4}
#: Significant digits of the spectral power (of each case's snapshots and of each problem's clean image and
#: measurement): only plotted, on a log axis. The spectral band errors keep the recorder's digits (the report's
#: spectral reading compares them with thresholds).
POWER_DIGITS = 3


def _round(value: Any, decimals: int) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), decimals)


def _significant(value: Any, digits: int = POWER_DIGITS) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return float(f"{float(value):.{digits}g}")


def compact_case(case: dict) -> dict:
    """A copy of a case record with its curves at :data:`CURVE_DECIMALS` and its spectral power at
    :data:`POWER_DIGITS` significant digits (non-finite values → None). Idempotent."""
    out = dict(case)
    for key, decimals in CURVE_DECIMALS.items():
        if isinstance(out.get(key), list):
            out[key] = [_round(v, decimals) for v in out[key]]
    spectral = out.get("spectral")
    if isinstance(spectral, dict) and isinstance(spectral.get("power"), list):
        out["spectral"] = {**spectral, "power": [[_significant(v) for v in row] for row in spectral["power"]]}
    return out


def compact_problem(problem: dict) -> dict:
    """A copy of a problem record with the power spectra at :data:`POWER_DIGITS` significant digits."""
    out = dict(problem)
    spectra = out.get("spectra")
    if isinstance(spectra, dict):
        out["spectra"] = {
            name: {**record, "power": [_significant(v) for v in record["power"]]}
            if isinstance(record, dict) and isinstance(record.get("power"), list)
            else record
            for name, record in spectra.items()
        }
    return out


def compact(results: dict) -> dict:
    """``results`` with every case and problem compacted (:func:`compact_case`, :func:`compact_problem`); the
    other entries as they are. Idempotent; :func:`assemble` and :func:`dump_results` apply it."""
    out = dict(results)
    if isinstance(out.get("cases"), list):
        out["cases"] = [compact_case(c) for c in out["cases"]]
    if isinstance(out.get("problems"), list):
        out["problems"] = [compact_problem(p) for p in out["problems"]]
    return out


def _versions() -> dict:
    out = {
        "metadip": metadip.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for package in ("scikit-image", "matplotlib", "bm3d"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return out


def command_line(config: EvalConfig, out: str | Path, config_path: str | Path | None = None) -> list[str]:
    """argv that re-runs ``config`` (one run: plain options; several: ``--config FILE``)."""
    argv = ["metadip", "evaluate"]
    if len(config.runs) == 1:
        run = config.runs[0]
        argv += [
            "--images",
            run.images,
            "--operators",
            *run.operators,
            "--size",
            str(run.size),
            "--iterations",
            str(run.iterations),
            "--seeds",
            str(run.seeds),
        ]
        if run.max_images:
            argv += ["--max-images", str(run.max_images)]
        if run.tag:
            argv += ["--tag", run.tag]
    else:
        argv += ["--config", str(config_path or Path(out) / "config.toml")]
    argv += ["--init", config.init, "--baseline", config.baseline, "--stop", config.stop]
    if config.arch:
        argv += ["--arch", config.arch]
    return argv + ["--out", str(out)]


def assemble(
    config: EvalConfig,
    records: Sequence[dict],
    problem_records: Sequence[dict],
    arms: Sequence[Arm],
    *,
    out: str | Path,
    device: str = "auto",
    notes: Sequence[str] = (),
    jobs: int = 1,
    threads: int | None = None,
) -> dict:
    """The ``results.json`` object (keys: see :mod:`metadip.evaluation`), compacted (:func:`compact`) before any
    statistic is taken, so the summary and the report are computed from exactly what results.json stores."""
    cases = [compact_case(r) for r in records]
    annotate_pairs(cases, config.margin_db)
    problems = {p["pair_key"]: compact_problem(p) for p in problem_records}
    for case in cases:
        case["baselines"] = dict(problems.get(case["pair_key"], {}).get("baselines", {}))
    meta = next((a for a in arms if a.label == "meta"), None)
    sizes = sorted({r.size for r in config.runs})
    try:
        resolved_device = str(resolve_device(device))
    except MetadipError:
        resolved_device = str(device)
    config_record = {
        "name": config.name,
        "description": config.description,
        "command": " ".join(_quote(a) for a in command_line(config, out)),
        "options": config.to_dict(),
        "arms": [a.label for a in arms],
        "meta_init_by_setting": {
            setting_label(c): {"name": c["init_name"], "sha256": c["init_sha256"]} for c in cases if c["init"] == "meta"
        },
        "init": {
            "requested": config.init,
            "name": meta.name if meta else "random",
            "sha256": meta.sha256 if meta else None,
            "card": meta.card if meta else None,
            "meta_steps": (meta.training or {}).get("steps") if meta else None,
            "arch": (meta or arms[0]).arch_config,
            "recipe": meta.inner if meta else None,
            "held_out_images": _training_images(meta)[1] if meta else None,
        },
        "random": {
            "recipe": next((a.inner for a in arms if a.label == "random"), None),
            "arch": next((a.arch_config.get("name") for a in arms if a.label == "random"), None),
            "arch_config": next((a.arch_config for a in arms if a.label == "random"), None),
        },
        "seeds": sorted({c["seed"] for c in cases}),
        "sizes": sizes,
        "iterations": sorted({r.iterations for r in config.runs}),
        "operators": list(dict.fromkeys(op for r in config.runs for op in r.operators)),
        "images": list(dict.fromkeys(c["image"] for c in cases)),
        "stop_rule": config.stop,
        "margin_db": config.margin_db,
        "bands": config.bands,
        "device": resolved_device,
        "threads": int(threads or torch.get_num_threads()),
        "jobs": int(jobs),
        "versions": _versions(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "notes": list(notes),
    }
    return {
        "cases": cases,
        "summary": build_summary(cases, config.margin_db),
        "config": config_record,
        "problems": list(problems.values()),
    }


def _quote(arg: str) -> str:
    return shlex.quote(str(arg))


def results_csv(results: dict) -> str:
    """One row per case (no per-iteration lists); baseline PSNRs as ``baseline_<name>`` columns."""
    baseline_names = sorted({n for c in results["cases"] for n in (c.get("baselines") or {})})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"baseline_{n}" for n in baseline_names)])
    for case in results["cases"]:
        row = ["" if case.get(k) is None else case.get(k) for k in CSV_COLUMNS]
        row += ["" if (case.get("baselines") or {}).get(n) is None else case["baselines"][n] for n in baseline_names]
        writer.writerow(row)
    return buffer.getvalue()


def dump_results(results: dict) -> str:
    """results.json text of ``results`` compacted (:func:`compact`): ``summary`` and ``config`` indented, one
    line per case / problem without spaces (compact curves keep the file small and its diffs readable)."""

    def one_line(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_json_default)

    parts = []
    for key, value in compact(results).items():
        if key.startswith("_"):
            continue
        if key in ("cases", "problems") and isinstance(value, list):
            body = "[]" if not value else "[\n  " + ",\n  ".join(one_line(v) for v in value) + "\n ]"
        else:
            body = json.dumps(value, indent=1, allow_nan=False, default=_json_default).replace("\n", "\n ")
        parts.append(f" {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def rewrite_results(path: str | Path) -> tuple[int, int]:
    """Re-write a stored results.json (a file or its folder) through :func:`dump_results` — e.g. one written
    before :func:`compact` — leaving every other file alone; returns its size in bytes (before, after)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    before = path.stat().st_size
    text = dump_results(load_results(path))
    atomic_write_text(path, text)
    return before, len(text.encode("utf-8"))


def write_results(out: str | Path, results: dict, config: EvalConfig) -> list[Path]:
    out = Path(out)
    paths = [out / "results.json", out / "results.csv", out / "config.toml"]
    atomic_write_text(paths[0], dump_results(results))
    atomic_write_text(paths[1], results_csv(results))
    header = (
        f"metadip evaluate config (re-run: metadip evaluate --config {paths[2]} --out {out})\n"
        f"written {results['config']['date']}"
    )
    atomic_write_text(paths[2], config.to_toml(header))
    return paths


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    data = _read_json(path)
    if data is None or "cases" not in data:
        raise MetadipError(f"{path} is not a metadip results.json")
    return data
