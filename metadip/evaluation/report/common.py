"""What the report's figures and text share: the settings of a results object, their cases and pairs, the
representative pair, arm colours and labels, number formats and the capped-run mark."""

from __future__ import annotations

import math
import re

import numpy as np

from metadip.evaluation.statistics import setting_label

COLORS = {"random": "#1f77b4", "meta": "#d95f02"}
LABELS = {"random": "random init", "meta": "meta init"}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def settings(results: dict) -> list[str]:
    """Setting labels (operator @ size) in the order the cases appear."""
    return list(dict.fromkeys(setting_label(c) for c in results["cases"]))


def _cases(results: dict, setting: str, arm: str | None = None) -> list[dict]:
    return [c for c in results["cases"] if setting_label(c) == setting and (arm is None or c["init"] == arm)]


def _arms(results: dict) -> list[str]:
    present = {c["init"] for c in results["cases"]}
    return [a for a in ("random", "meta") if a in present]


def _fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}{unit}"


def _signed(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}"


def _iters(value) -> str:
    return "never" if value is None else f"{value:.0f}"


def _pairs(results: dict, setting: str) -> list[tuple[dict | None, dict | None]]:
    random_cases = {c["pair_key"]: c for c in _cases(results, setting, "random")}
    meta_cases = {c["pair_key"]: c for c in _cases(results, setting, "meta")}
    keys = list(dict.fromkeys([*random_cases, *meta_cases]))
    return [(random_cases.get(k), meta_cases.get(k)) for k in keys]


def representative_pair(results: dict, setting: str) -> tuple[dict | None, dict | None]:
    """The pair whose speedup (or, random only, peak PSNR) is closest to the setting's median."""
    pairs = [p for p in _pairs(results, setting) if p[0] is not None or p[1] is not None]
    if not pairs:
        return None, None
    with_both = [p for p in pairs if p[0] is not None and p[1] is not None]
    if with_both:
        values = [p[1].get("speedup") or 0.0 for p in with_both]
        mid = float(np.median(values))
        return min(with_both, key=lambda p: (abs((p[1].get("speedup") or 0.0) - mid), p[0]["seed"]))
    key = [c for c in pairs[0] if c][0]["init"]
    index = 0 if key == "random" else 1
    values = [p[index]["peak_psnr"] for p in pairs]
    mid = float(np.median(values))
    return min(pairs, key=lambda p: (abs(p[index]["peak_psnr"] - mid), p[index]["seed"]))


def capped_mark(summary: dict) -> str:
    """`` ⚠ k/n capped`` when k random runs of a setting hit the cap while still improving (else "")."""
    capped = summary.get("random_still_improving_at_end") or 0
    if not capped:
        return ""
    total = summary.get("n_pairs") or summary.get("n_cases") or 0
    return f" ⚠ {capped}/{total} capped"
