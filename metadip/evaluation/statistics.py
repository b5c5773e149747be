"""Statistics of the case records (plain dicts, as stored in ``results.json``): per pair the speedup, Δ peak /
stop, wall-clock ratio and the speed–quality frontier; medians per group (:func:`summarize`,
:func:`build_summary`); whether a run ended while still improving (:func:`still_improving`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from metadip import metrics
from metadip.evaluation.suite import MARGIN_DB
from metadip.stopping import replay

#: The speed–quality frontier: iterations (and seconds) each arm needs to reach random's peak − δ.
FRONTIER_DB = (0.25, 0.5, 1.0, 2.0)
ARMS = ("random", "meta")


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def median(values: Iterable[Any]) -> float | None:
    """Median of the finite values (None if there are none)."""
    vals = _finite(values)
    return float(np.median(vals)) if vals else None


def quantiles(values: Iterable[Any]) -> tuple[float | None, float | None]:
    vals = _finite(values)
    if not vals:
        return None, None
    return float(np.percentile(vals, 25)), float(np.percentile(vals, 75))


def iqr(values: Iterable[Any]) -> float | None:
    """Interquartile range q75 − q25 (linear interpolation, numpy's default)."""
    q25, q75 = quantiles(values)
    return None if q25 is None else q75 - q25


def pair_statistics(random_case: dict, meta_case: dict, margin_db: float = MARGIN_DB) -> dict:
    """Speed / quality comparison of one (image, operator, seed): target = random's peak − margin;
    iterations each arm needs to first reach it (None = never), speedup (0 when meta never reaches it),
    wall-clock ratio (the same in seconds), delta_peak and delta_stop (meta − random, dB)."""
    random_curve = _finite(random_case["psnr"])
    meta_curve = [float(v) if v is not None else -math.inf for v in meta_case["psnr"]]
    target = max(random_curve) - margin_db
    random_iters = metrics.first_reaching(random_curve, target)
    meta_iters = metrics.first_reaching(meta_curve, target)
    speed = metrics.speedup(random_curve, meta_curve, margin_db)
    if meta_iters is None:
        wall = 0.0
    else:
        wall = seconds_to(random_case, random_iters) / max(seconds_to(meta_case, meta_iters), 1e-12)
    return {
        "target_psnr": target,
        "iterations_random": random_iters,
        "iterations_meta": meta_iters,
        "speedup": speed,
        "wall_clock_ratio": wall,
        "delta_peak": float(meta_case["peak_psnr"]) - float(random_case["peak_psnr"]),
        "delta_stop": float(meta_case["stop_psnr"]) - float(random_case["stop_psnr"]),
        "frontier": frontier(random_case, meta_case),
    }


def seconds_to(case: dict, iterations: int) -> float:
    """Wall-clock seconds a run needs for its first ``iterations`` iterations: its setup (network and z; a
    classical estimate in z is computed there — 0 for cases recorded before it was timed) plus the iterations at
    its mean cost."""
    return float(case.get("setup_seconds", 0.0)) + iterations * float(case["ms_per_iteration"]) / 1e3


def frontier(random_case: dict, meta_case: dict, deltas: Sequence[float] = FRONTIER_DB) -> dict[str, dict]:
    """Per δ (key ``f"{δ:g}"``): iterations and seconds each arm needs to first reach random's peak − δ
    (None = never) and the iteration speedup (0 when meta never gets there)."""
    random_curve = _finite(random_case["psnr"])
    meta_curve = [float(v) if v is not None else -math.inf for v in meta_case["psnr"]]
    peak = max(random_curve)
    out: dict[str, dict] = {}
    for delta in deltas:
        target = peak - float(delta)
        r_it = metrics.first_reaching(random_curve, target)
        m_it = metrics.first_reaching(meta_curve, target)
        out[f"{float(delta):g}"] = {
            "iterations_random": r_it,
            "iterations_meta": m_it,
            "seconds_random": None if r_it is None else round(seconds_to(random_case, r_it), 3),
            "seconds_meta": None if m_it is None else round(seconds_to(meta_case, m_it), 3),
            "speedup": 0.0 if m_it is None else round(float(r_it) / float(m_it), 4),
        }
    return out


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _median_with_never(values: Sequence[int | None]) -> float | None:
    """Median counting never (None) as +inf; None when the median itself is 'never'."""
    if not values:
        return None
    vals = [math.inf if v is None else float(v) for v in values]
    result = float(np.median(vals))
    return None if math.isinf(result) or math.isnan(result) else result


def summarize(cases: Sequence[dict], margin_db: float = MARGIN_DB) -> dict:
    """Summary statistics of a group of cases (both arms; pairs matched by ``pair_key``)."""
    by_arm: dict[str, dict[str, dict]] = {label: {} for label in ARMS}
    for case in cases:
        by_arm.setdefault(case["init"], {})[case["pair_key"]] = case
    random_cases, meta_cases = by_arm.get("random", {}), by_arm.get("meta", {})
    pairs = [pair_statistics(random_cases[k], meta_cases[k], margin_db) for k in random_cases if k in meta_cases]
    keys = list(dict.fromkeys(c["pair_key"] for c in cases))
    summary: dict[str, Any] = {
        "n_cases": len(keys),
        "n_pairs": len(pairs),
        "n_images": len({c["image"] for c in cases}),
        "n_seeds": len({c["seed"] for c in cases}),
    }
    speedups = [p["speedup"] for p in pairs]
    q25, q75 = quantiles(speedups)
    summary.update(
        {
            "speedup_median": _rounded(median(speedups)),
            "speedup_iqr": _rounded(iqr(speedups)),
            "speedup_q25": _rounded(q25),
            "speedup_q75": _rounded(q75),
            "meta_reached_fraction": _rounded(sum(p["iterations_meta"] is not None for p in pairs) / len(pairs))
            if pairs
            else None,
            "iterations_to_target_random_median": _rounded(
                _median_with_never([p["iterations_random"] for p in pairs]), 1
            ),
            "iterations_to_target_meta_median": _rounded(_median_with_never([p["iterations_meta"] for p in pairs]), 1),
            "delta_peak_median": _rounded(median(p["delta_peak"] for p in pairs)),
            "delta_stop_median": _rounded(median(p["delta_stop"] for p in pairs)),
            "wall_clock_ratio_median": _rounded(median(p["wall_clock_ratio"] for p in pairs)),
            "frontier": {
                key: {
                    "iterations_random_median": _rounded(
                        _median_with_never([p["frontier"][key]["iterations_random"] for p in pairs]), 1
                    ),
                    "iterations_meta_median": _rounded(
                        _median_with_never([p["frontier"][key]["iterations_meta"] for p in pairs]), 1
                    ),
                    "seconds_random_median": _rounded(
                        _median_with_never([p["frontier"][key]["seconds_random"] for p in pairs]), 2
                    ),
                    "seconds_meta_median": _rounded(
                        _median_with_never([p["frontier"][key]["seconds_meta"] for p in pairs]), 2
                    ),
                    "speedup_median": _rounded(median(p["frontier"][key]["speedup"] for p in pairs)),
                    "meta_reached_fraction": _rounded(
                        sum(p["frontier"][key]["iterations_meta"] is not None for p in pairs) / len(pairs)
                    ),
                }
                for key in (pairs[0]["frontier"] if pairs else {})
            },
        }
    )
    if not pairs and random_cases:  # random arm only: its own iterations to (peak − margin)
        reached = []
        for case in random_cases.values():
            curve = _finite(case["psnr"])
            reached.append(metrics.first_reaching(curve, max(curve) - margin_db) if curve else None)
        summary["iterations_to_target_random_median"] = _rounded(_median_with_never(reached), 1)
    for label, group in (("random", random_cases), ("meta", meta_cases)):
        if not group:
            continue
        values = list(group.values())
        summary[f"{label}_peak_psnr_median"] = _rounded(median(c["peak_psnr"] for c in values))
        summary[f"{label}_peak_iteration_median"] = _rounded(median(c["peak_iteration"] for c in values), 1)
        summary[f"{label}_stop_psnr_median"] = _rounded(median(c["stop_psnr"] for c in values))
        summary[f"{label}_stop_iteration_median"] = _rounded(median(c["stop_iteration"] for c in values), 1)
        summary[f"{label}_ms_per_iteration_median"] = _rounded(median(c["ms_per_iteration"] for c in values), 2)
        summary[f"{label}_seconds_median"] = _rounded(median(c.get("seconds") for c in values), 2)
        summary[f"{label}_iterations_median"] = _rounded(median(c.get("iterations") for c in values), 1)
        summary[f"{label}_peak_psnr_ema99_median"] = _rounded(
            median(c.get("peak_psnr_ema99", c["peak_psnr"]) for c in values)
        )
        summary[f"{label}_capped"] = sum(bool(c.get("iterations", 0) >= c.get("budget", math.inf)) for c in values)
        summary[f"{label}_still_improving_at_end"] = sum(still_improving(c) for c in values)
    baselines: dict[str, list[float]] = {}
    seen_pairs: set[str] = set()
    for case in cases:
        if case["pair_key"] in seen_pairs:
            continue
        seen_pairs.add(case["pair_key"])
        for name, value in (case.get("baselines") or {}).items():
            baselines.setdefault(name, []).append(value)
    summary["baselines_median"] = {k: _rounded(median(v)) for k, v in baselines.items()}
    return summary


def still_improving(case: dict, window: int = 100, gain_db: float = 0.05, patience: int = 500) -> bool:
    """Whether a run ended while it was still getting better — its "peak" is then the budget's. A run of a
    converged suite (it has ``converged``): it hit the cap with a 0.01 dB gain in its last ``patience``
    iterations (replayed from its curve; a capped run that had plateaued longer is not flagged). A fixed-budget
    run: its last ``window`` iterations gained more than ``gain_db``."""
    if case.get("converged"):
        return False
    curve = _finite(case.get("psnr") or [])
    if "converged" in case:
        stopped_at, progress = replay(curve, patience=patience)
        return stopped_at is None and len(curve) - progress < patience
    if case.get("capped_while_improving"):
        return True
    if len(curve) <= window:
        return False
    return max(curve[-window:]) - max(curve[:-window]) > gain_db


def setting_label(case: dict) -> str:
    """``operator @ SIZEpx`` — the unit the report and README rows are about."""
    return f"{case['operator']} @ {case['size']}px"


def build_summary(cases: Sequence[dict], margin_db: float = MARGIN_DB) -> dict:
    """``overall``, ``by_operator`` (spec), ``by_setting`` (spec @ size), ``by_family``, ``by_size``,
    ``by_tag``."""

    def grouped(key: Callable[[dict], str]) -> dict[str, dict]:
        groups: dict[str, list[dict]] = {}
        for case in cases:
            groups.setdefault(key(case), []).append(case)
        return {name: summarize(group, margin_db) for name, group in groups.items()}

    summary = {
        "overall": summarize(cases, margin_db),
        "by_operator": grouped(lambda c: c["operator"]),
        "by_setting": grouped(setting_label),
        "by_family": grouped(lambda c: c["family"]),
        "by_size": grouped(lambda c: str(c["size"])),
    }
    if any(c.get("tag") for c in cases):
        summary["by_tag"] = grouped(lambda c: c.get("tag") or "untagged")
    for name, case in ((setting_label(c), c) for c in cases):
        entry = summary["by_setting"][name]
        entry.setdefault("operator", case["operator"])
        entry.setdefault("size", case["size"])
        entry.setdefault("tag", case.get("tag", ""))
        entry.setdefault("coverage", case.get("coverage"))
    return summary


def annotate_pairs(cases: list[dict], margin_db: float = MARGIN_DB) -> None:
    """Add ``target_psnr`` and ``iterations_to_target`` (and ``speedup`` on meta cases) in place."""
    random_cases = {c["pair_key"]: c for c in cases if c["init"] == "random"}
    meta_cases = {c["pair_key"]: c for c in cases if c["init"] == "meta"}
    for key, random_case in random_cases.items():
        curve = _finite(random_case["psnr"])
        target = max(curve) - margin_db
        random_case["target_psnr"] = round(target, 4)
        random_case["iterations_to_target"] = metrics.first_reaching(curve, target)
        meta_case = meta_cases.get(key)
        if meta_case is not None:
            stats = pair_statistics(random_case, meta_case, margin_db)
            meta_case["target_psnr"] = round(target, 4)
            meta_case["iterations_to_target"] = stats["iterations_meta"]
            meta_case["speedup"] = round(stats["speedup"], 4)
            meta_case["wall_clock_ratio"] = round(stats["wall_clock_ratio"], 4)
    for case in cases:
        case.setdefault("target_psnr", None)
        case.setdefault("iterations_to_target", None)
        if "converged" in case:  # derived from the curve, one definition (still_improving) for every reader
            case["capped_while_improving"] = still_improving(case)
