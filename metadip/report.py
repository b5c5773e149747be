"""Figures (PNG, matplotlib with the Agg backend, imported inside the functions) and ``report.md`` for an
evaluation's ``results.json``. Everything is rebuilt from ``results.json`` and the small PNGs under
``images/`` — no DIP run is repeated:
``python -c "from metadip.report import build_report; build_report('DIR')"``.

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
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metadip.fileio import atomic_save_with, atomic_write_text

COLORS = {"random": "#1f77b4", "meta": "#d95f02"}
LABELS = {"random": "random init", "meta": "meta init"}
SPECTRUM_ITERATIONS = (1, 10, 50, 200)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _plt()
    try:
        atomic_save_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return path


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def settings(results: dict) -> list[str]:
    """Setting labels (operator @ size) in the order the cases appear."""
    from metadip.evaluation import setting_label

    return list(dict.fromkeys(setting_label(c) for c in results["cases"]))


def _cases(results: dict, setting: str, arm: str | None = None) -> list[dict]:
    from metadip.evaluation import setting_label

    return [c for c in results["cases"] if setting_label(c) == setting and (arm is None or c["init"] == arm)]


def _arms(results: dict) -> list[str]:
    present = {c["init"] for c in results["cases"]}
    return [a for a in ("random", "meta") if a in present]


def _curve_matrix(cases: Sequence[dict], key: str = "psnr") -> np.ndarray:
    length = max(len(c[key]) for c in cases)
    matrix = np.full((len(cases), length), np.nan)
    for row, case in enumerate(cases):
        values = np.array([np.nan if v is None else v for v in case[key]], dtype=float)
        matrix[row, : len(values)] = values
    return matrix


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


# ---------------------------------------------------------------------------------------------------- figures


def _panel_grid(count: int, width: float, height: float):
    """A figure with one panel per setting, up to three per row (panels beyond ``count`` hidden); the panels
    in reading order."""
    plt = _plt()
    columns = min(3, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    panels = list(axes.flat)
    for ax in panels[count:]:
        ax.axis("off")
    return fig, panels


def plot_curves(results: dict, path: Path) -> Path:
    names = settings(results)
    fig, axes = _panel_grid(len(names), 4.6, 3.4)
    for ax, setting in zip(axes, names, strict=False):
        for arm in _arms(results):
            cases = _cases(results, setting, arm)
            if not cases:
                continue
            matrix = _curve_matrix(cases)
            x = np.arange(1, matrix.shape[1] + 1)
            with np.errstate(all="ignore"):
                mid = np.nanmedian(matrix, axis=0)
                low, high = np.nanpercentile(matrix, 25, axis=0), np.nanpercentile(matrix, 75, axis=0)
            ax.plot(x, mid, color=COLORS[arm], lw=1.6, label=f"{LABELS[arm]} (n={len(cases)})")
            ax.fill_between(x, low, high, color=COLORS[arm], alpha=0.22, lw=0)
            stop = np.median([c["stop_iteration"] for c in cases])
            ax.axvline(stop, color=COLORS[arm], ls=":", lw=1)
        target = [c.get("target_psnr") for c in _cases(results, setting, "random") if c.get("target_psnr") is not None]
        if target:
            ax.axhline(float(np.median(target)), color="0.4", ls="--", lw=0.8, label="random peak − 0.5 dB (median)")
        ax.set_xscale("log")
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3, which="both", lw=0.5)
        finite = _curve_matrix(_cases(results, setting))
        if np.isfinite(finite).any():
            top = np.nanmax(finite)
            ax.set_ylim(max(np.nanpercentile(finite, 2) - 1, top - 20), top + 1)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "PSNR vs iteration: median and interquartile band over images × seeds; dotted: median stop "
        "of the no-ground-truth rule",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_speedup(results: dict, path: Path) -> Path:
    plt = _plt()
    names = settings(results)
    data = [[c["speedup"] for c in _cases(results, s, "meta") if c.get("speedup") is not None] for s in names]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(names) + 2), 3.8))
    positions = np.arange(1, len(names) + 1)
    ax.boxplot(
        [d if d else [np.nan] for d in data],
        positions=positions,
        widths=0.5,
        showfliers=False,
        medianprops={"color": COLORS["meta"], "lw": 2},
    )
    rng = np.random.default_rng(0)
    for pos, values in zip(positions, data, strict=True):
        ax.scatter(pos + rng.uniform(-0.12, 0.12, len(values)), values, s=14, color="0.25", alpha=0.7, zorder=3)
    ax.axhline(1.0, color="0.4", ls="--", lw=0.8)
    top = max((max(d) for d in data if d), default=1.0)
    if top > 10:  # wide range: logarithmic above 1, linear below (0 = never reached stays visible)
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("symlog", linthresh=1.0)
        ax.yaxis.set_major_formatter(ScalarFormatter())
    else:
        ax.set_ylim(bottom=0)
    ax.set_xticks(positions, [n.replace(" @ ", "\n@ ") for n in names], fontsize=7, rotation=0)
    ax.set_ylabel("speedup (×, 0 = never reached)")
    ax.set_title(
        "Speedup: iterations random needs to reach its peak − 0.5 dB\n÷ iterations meta needs (dashed: 1×)", fontsize=9
    )
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)


def plot_convergence(results: dict, path: Path) -> Path:
    """Random arm only: iterations to reach its own peak − 0.5 dB, and peak iteration, per setting."""
    plt = _plt()
    names = settings(results)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(names) + 2), 3.8))
    positions = np.arange(1, len(names) + 1)
    for key, shift, color in (
        ("iterations_to_target", -0.15, COLORS["random"]),
        ("peak_iteration", 0.15, "0.5"),
    ):
        values = [[c[key] for c in _cases(results, s, "random") if c.get(key) is not None] for s in names]
        ax.boxplot(
            [v if v else [np.nan] for v in values],
            positions=positions + shift,
            widths=0.25,
            showfliers=False,
            medianprops={"color": color, "lw": 2},
        )
    ax.set_yscale("log")
    ax.set_xticks(positions, [n.replace(" @ ", "\n@ ") for n in names], fontsize=7)
    ax.set_ylabel("iterations")
    ax.set_title("Random init: iterations to peak − 0.5 dB (blue) and to the peak (grey)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)


def _read_png(out: Path, relative: str | None):
    if not relative or not (out / relative).is_file():
        return None
    from PIL import Image

    with Image.open(out / relative) as image:
        array = np.asarray(image.convert("RGB"))
    return array


def _pairs(results: dict, setting: str) -> list[tuple[dict | None, dict | None]]:
    random_cases = {c["pair_key"]: c for c in _cases(results, setting, "random")}
    meta_cases = {c["pair_key"]: c for c in _cases(results, setting, "meta")}
    keys = list(dict.fromkeys([*random_cases, *meta_cases]))
    return [(random_cases.get(k), meta_cases.get(k)) for k in keys]


def plot_grid(results: dict, setting: str, out: Path, path: Path, max_rows: int = 4) -> Path | None:
    plt = _plt()
    pairs = _pairs(results, setting)
    chosen: list[tuple[dict | None, dict | None]] = []
    seen_images: set[str] = set()
    for pair in sorted(pairs, key=lambda p: next(c for c in p if c)["seed"]):
        image = next(c for c in pair if c)["image"]
        if image not in seen_images:
            seen_images.add(image)
            chosen.append(pair)
        if len(chosen) >= max_rows:
            break
    if not chosen:
        return None
    problems = {p["pair_key"]: p for p in results.get("problems", [])}
    arms = _arms(results)
    columns = 2 + len(arms)
    fig, axes = plt.subplots(len(chosen), columns, figsize=(2.3 * columns, 2.6 * len(chosen)), squeeze=False)
    for row, pair in enumerate(chosen):
        any_case = next(c for c in pair if c)
        problem = problems.get(any_case["pair_key"], {})
        files = any_case.get("files", {})
        baselines = any_case.get("baselines") or {}
        kind = problem.get("measurement_kind", "measurement")
        first = next(iter(baselines.values()), None)
        panels = [
            ("clean", files.get("clean")),
            (f"{kind}" + (f" {first:.1f} dB" if first is not None else ""), files.get("measurement")),
        ]
        by_arm = dict(zip(("random", "meta"), pair, strict=True))
        for arm in arms:
            case = by_arm.get(arm)
            title = (
                f"{arm} @ {case['stop_output_iteration'] or case['stop_iteration']}: {case['stop_psnr']:.1f} dB"
                if case
                else f"{arm}: n/a"
            )
            panels.append((title, case["files"].get("stop") if case else None))
        for col, (title, relative) in enumerate(panels):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            array = _read_png(out, relative)
            if array is not None:
                ax.imshow(array, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            if col == 0:
                ax.set_ylabel(f"{any_case['image']} s{any_case['seed']}", fontsize=7)
    fig.suptitle(f"{setting}: each arm's output where the no-ground-truth rule stops", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


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


def _snapshot_rows(spectral: dict, wanted: Sequence[int] = SPECTRUM_ITERATIONS) -> list[int]:
    iterations = spectral.get("iterations", [])
    if not iterations:
        return []
    rows = []
    budget = iterations[-1]
    for target in [*[w for w in wanted if w < budget], budget]:
        index = int(np.argmin([abs(math.log(i) - math.log(target)) for i in iterations]))
        if index not in rows:
            rows.append(index)
    return rows


def plot_spectral(results: dict, setting: str, path: Path) -> Path | None:
    plt = _plt()
    from matplotlib import colors as mcolors

    random_case, meta_case = representative_pair(results, setting)
    cases = [(arm, c) for arm, c in (("random", random_case), ("meta", meta_case)) if c and c.get("spectral")]
    if not cases:
        return None
    any_case = cases[0][1]
    problem = next((p for p in results.get("problems", []) if p["pair_key"] == any_case["pair_key"]), {})
    spectra = problem.get("spectra", {})
    n = len(cases)
    columns = max(n + 1, 3) if n == 2 else 2
    fig, axes = plt.subplots(2, columns, figsize=(4.4 * columns, 7.0), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.97, top=0.92, bottom=0.08, wspace=0.35, hspace=0.35)
    # -- top row: power spectra per arm, then band error at the rule's stop -------------------------------
    for col, (arm, case) in enumerate(cases):
        ax = axes[0][col]
        spectral = case["spectral"]
        freqs = np.asarray(spectral["frequencies"])
        if spectra.get("clean"):
            ax.plot(
                spectra["clean"]["frequencies"],
                _arr(spectra["clean"]["power"]),
                color="k",
                lw=2,
                label="clean",
            )
        if spectra.get("measurement"):
            ax.plot(
                spectra["measurement"]["frequencies"],
                _arr(spectra["measurement"]["power"]),
                color="0.55",
                lw=1.5,
                ls="--",
                label=problem.get("measurement_kind", "measurement"),
            )
        rows = _snapshot_rows(spectral)
        cmap = plt.get_cmap("Blues" if arm == "random" else "Oranges")
        for k, index in enumerate(rows):
            shade = cmap(0.35 + 0.6 * k / max(1, len(rows) - 1))
            ax.plot(
                freqs,
                _arr(spectral["power"][index]),
                color=shade,
                lw=1.2,
                label=f"it {spectral['iterations'][index]}",
            )
        ax.set_yscale("log")
        ax.set_xlabel("radial frequency (cycles/pixel)")
        ax.set_ylabel("power")
        ax.set_title(f"{LABELS[arm]}: power spectrum over iterations", fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3, which="both", lw=0.4)
    ax = axes[0][n]
    for arm, case in cases:
        spectral = case["spectral"]
        edges = np.asarray(spectral["band_edges"])
        centres = 0.5 * (edges[:-1] + edges[1:])
        stop_row = int(
            np.argmin(
                [abs(i - (case.get("stop_output_iteration") or case["stop_iteration"])) for i in spectral["iterations"]]
            )
        )
        for index, ls in ((0, ":"), (stop_row, "-")):
            ax.plot(
                centres,
                _arr(spectral["band_error"][index]),
                color=COLORS[arm],
                ls=ls,
                marker="o",
                ms=3,
                label=f"{arm} it {spectral['iterations'][index]}",
            )
    ax.set_xlabel("band centre (cycles/pixel)")
    ax.set_ylabel("relative error")
    ax.set_title("relative error per band: first iterate vs at the rule's stop", fontsize=8)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3, lw=0.4)
    for ax in axes[0][n + 1 :]:
        ax.axis("off")
    # -- bottom row: heat maps ------------------------------------------------------------------------------
    matrices = {arm: _arr(case["spectral"]["band_error"]).T for arm, case in cases}
    vmax = max(1.0, max(float(np.nanmax(m)) for m in matrices.values()))
    vmax = min(vmax, 2.0)
    images = []
    for col, (arm, case) in enumerate(cases):
        ax = axes[1][col]
        spectral = case["spectral"]
        image = ax.imshow(
            matrices[arm],
            aspect="auto",
            origin="lower",
            cmap="magma_r",
            vmin=0,
            vmax=vmax,
            interpolation="nearest",
        )
        images.append(image)
        _heat_axes(ax, spectral)
        ax.set_title(f"{LABELS[arm]}: relative error per band", fontsize=8)
    fig.colorbar(images[-1], ax=axes[1][n - 1], fraction=0.05, pad=0.02)
    if n == 2 and matrices["random"].shape == matrices["meta"].shape:
        ax = axes[1][2]
        diff = matrices["meta"] - matrices["random"]
        limit = max(0.05, float(np.nanmax(np.abs(diff))))
        image = ax.imshow(
            diff,
            aspect="auto",
            origin="lower",
            cmap="RdBu_r",
            norm=mcolors.TwoSlopeNorm(0.0, -limit, limit),
            interpolation="nearest",
        )
        _heat_axes(ax, cases[0][1]["spectral"])
        ax.set_title("meta − random (blue: meta closer)", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, format="%.2f")
    else:
        for ax in axes[1][n:]:
            ax.axis("off")
    fig.suptitle(f"{setting} — {any_case['image']}, seed {any_case['seed']} (representative pair)", fontsize=9)
    return _save(fig, path)


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _heat_axes(ax, spectral: dict) -> None:
    iterations = spectral["iterations"]
    edges = spectral["band_edges"]
    step = max(1, len(iterations) // 8)
    ticks = list(range(0, len(iterations), step))
    ax.set_xticks(ticks, [str(iterations[t]) for t in ticks], fontsize=7)
    ax.set_yticks(
        range(len(edges) - 1),
        [f"{edges[b]:.2f}–{edges[b + 1]:.2f}" for b in range(len(edges) - 1)],
        fontsize=6,
    )
    ax.set_xlabel("iteration (log-spaced)")
    ax.set_ylabel("band (cycles/pixel)")


# ------------------------------------------------------------------------------------------------- readings


def _first_below(spectral: dict, band: int, threshold: float) -> int | None:
    for iteration, row in zip(spectral["iterations"], spectral["band_error"], strict=True):
        value = row[band]
        if value is not None and value <= threshold:
            return iteration
    return None


def _late_note(results: dict, setting: str) -> str:
    """A caveat when random init was still improving at the end of the budget (its peak is budget-limited)."""
    from metadip.evaluation import still_improving

    cases = _cases(results, setting, "random")
    late = sum(still_improving(c) for c in cases)
    if not late:
        return ""
    budget = max(c.get("budget", c["iterations"]) for c in cases)
    return (
        f" **Random init was still improving at the end of its {budget}-iteration cap in {late} of "
        f"{len(cases)} runs**, so its peak (and the target) is the cap's, not its best."
    )


def curves_reading(results: dict) -> list[str]:
    from metadip.evaluation import still_improving

    out = []
    for setting in settings(results):
        s = results["summary"]["by_setting"].get(setting, {})
        n = s.get("n_cases", 0)
        if s.get("n_pairs"):
            out.append(
                f"**{setting}** ({n} images×seeds): meta reaches random's peak − 0.5 dB in a median of "
                f"{_iters(s.get('iterations_to_target_meta_median'))} iterations vs "
                f"{_iters(s.get('iterations_to_target_random_median'))} for random (median speedup "
                f"×{_fmt(s.get('speedup_median'), 1)}, IQR {_fmt(s.get('speedup_iqr'), 1)}; reached in "
                f"{_fmt(100 * (s.get('meta_reached_fraction') or 0), 0)}% of pairs). Peak PSNR "
                f"{_fmt(s.get('meta_peak_psnr_median'))} vs {_fmt(s.get('random_peak_psnr_median'))} dB "
                f"(Δ {_signed(s.get('delta_peak_median'))} dB, meta's peak at iteration "
                f"{_iters(s.get('meta_peak_iteration_median'))} vs "
                f"{_iters(s.get('random_peak_iteration_median'))})"
                f"; at the {results['config'].get('stop_rule', 'wmv')} stop "
                f"{_fmt(s.get('meta_stop_psnr_median'))} vs "
                f"{_fmt(s.get('random_stop_psnr_median'))} dB (Δ {_signed(s.get('delta_stop_median'))})."
                + _late_note(results, setting)
            )
        else:
            arm = "random" if s.get("random_peak_psnr_median") is not None else "meta"
            gap = None
            if s.get(f"{arm}_peak_psnr_median") is not None and s.get(f"{arm}_stop_psnr_median") is not None:
                gap = s[f"{arm}_peak_psnr_median"] - s[f"{arm}_stop_psnr_median"]
            budget = max((c["iterations"] for c in _cases(results, setting, arm)), default=0)
            late = sum(still_improving(c) for c in _cases(results, setting, arm))
            to_target = s.get("iterations_to_target_random_median") if arm == "random" else None
            out.append(
                f"**{setting}** ({n} images×seeds, {arm} init only): median peak "
                f"{_fmt(s.get(f'{arm}_peak_psnr_median'))} dB at iteration "
                f"{_iters(s.get(f'{arm}_peak_iteration_median'))}; it is within 0.5 dB of its peak after "
                f"{_iters(to_target)} iterations; "
                f"the stopping rule stops at {_iters(s.get(f'{arm}_stop_iteration_median'))} with "
                f"{_fmt(s.get(f'{arm}_stop_psnr_median'))} dB ({_fmt(gap)} dB below the peak)."
                + (f" {late} of {n} runs still improve at the end of the {budget}-iteration budget." if late else "")
            )
    return out


def speedup_reading(results: dict) -> str:
    overall = results["summary"]["overall"]
    by_setting = results["summary"]["by_setting"]
    ranked = sorted(
        ((s, v["speedup_median"]) for s, v in by_setting.items() if v.get("speedup_median") is not None),
        key=lambda item: item[1],
    )
    if not ranked:
        return ""
    never = sum(1 for c in results["cases"] if c["init"] == "meta" and c.get("iterations_to_target") is None)
    text = (
        f"Over all {overall['n_pairs']} pairs the median speedup is ×{_fmt(overall['speedup_median'], 1)} "
        f"(IQR {_fmt(overall['speedup_iqr'], 1)}, quartiles {_fmt(overall['speedup_q25'], 1)}–"
        f"{_fmt(overall['speedup_q75'], 1)}); in wall-clock time "
        f"×{_fmt(overall['wall_clock_ratio_median'], 1)} "
        f"(meta {_fmt(overall.get('meta_ms_per_iteration_median'), 1)} ms/iteration vs random "
        f"{_fmt(overall.get('random_ms_per_iteration_median'), 1)}). "
    )
    if len(ranked) > 1:
        text += (
            f"Largest for {ranked[-1][0]} (×{_fmt(ranked[-1][1], 1)}), smallest for {ranked[0][0]} "
            f"(×{_fmt(ranked[0][1], 1)}). "
        )
    text += (
        f"Meta never reached random's target in {never} of {overall['n_pairs']} pairs (counted as 0)."
        if never
        else "Meta reached random's target in every pair."
    )
    below = [s for s, v in ranked if v < 1]
    if below:
        text += f" Meta was slower than random (median < 1) for: {', '.join(below)}."
    return text


def grid_reading(results: dict, setting: str) -> str:
    s = results["summary"]["by_setting"].get(setting, {})
    baselines = s.get("baselines_median") or {}
    parts = []
    if s.get("n_pairs"):
        parts.append(
            f"At the stopping rule's output the median PSNR is {_fmt(s.get('meta_stop_psnr_median'))} dB "
            f"for meta and {_fmt(s.get('random_stop_psnr_median'))} dB for random "
            f"(Δ {_signed(s.get('delta_stop_median'))} dB), stopping at a median iteration of "
            f"{_iters(s.get('meta_stop_iteration_median'))} vs "
            f"{_iters(s.get('random_stop_iteration_median'))}."
        )
    else:
        arm = "random" if s.get("random_stop_psnr_median") is not None else "meta"
        parts.append(
            f"At the stopping rule's output the median PSNR is {_fmt(s.get(f'{arm}_stop_psnr_median'))} dB "
            f"(iteration {_iters(s.get(f'{arm}_stop_iteration_median'))})."
        )
    if baselines:
        parts.append(
            "Context on the same measurements: "
            + ", ".join(f"{name.replace('_', ' ')} {_fmt(v)} dB" for name, v in baselines.items())
            + "."
        )
    return " ".join(parts)


def spectral_reading(results: dict, setting: str) -> str:
    random_case, meta_case = representative_pair(results, setting)
    cases = [(arm, c) for arm, c in (("random", random_case), ("meta", meta_case)) if c and c.get("spectral")]
    if not cases:
        return ""
    first = cases[0][1]
    bands = len(first["spectral"]["band_edges"]) - 1
    sentences = [f"Representative pair: {first['image']}, seed {first['seed']}."]
    for arm, case in cases:
        spectral = case["spectral"]
        low, high = _first_below(spectral, 0, 0.2), _first_below(spectral, bands - 1, 0.5)
        final = spectral["band_error"][-1]
        low_text = f"falls below 0.2 at iteration {low}" if low is not None else "never falls below 0.2"
        high_text = (
            f"the highest band's falls below 0.5 at iteration {high}"
            if high is not None
            else "the highest band's never gets below 0.5"
        )
        sentences.append(
            f"{LABELS[arm].capitalize()}: the lowest band's relative error {low_text}, {high_text}; "
            f"at iteration "
            f"{spectral['iterations'][-1]} they are {_fmt(final[0])} and {_fmt(final[-1])}."
        )
    if len(cases) == 2:
        r, m = cases[0][1]["spectral"], cases[1][1]["spectral"]
        common = [i for i in r["iterations"] if i in m["iterations"]]
        early = [i for i in common if i >= 10][:1] or common[:1]
        if early:
            it = early[0]
            re_row = r["band_error"][r["iterations"].index(it)]
            me_row = m["band_error"][m["iterations"].index(it)]
            better = sum(
                1 for a, b in zip(me_row, re_row, strict=True) if a is not None and b is not None and a < b - 0.01
            )
            worse = sum(
                1 for a, b in zip(me_row, re_row, strict=True) if a is not None and b is not None and a > b + 0.01
            )
            sentences.append(
                f"At iteration {it} meta is closer to the clean image in {better} of {bands} bands "
                f"and further in "
                f"{worse} (lowest band {_fmt(me_row[0])} vs {_fmt(re_row[0])} for random, highest "
                f"{_fmt(me_row[-1])} "
                f"vs {_fmt(re_row[-1])})."
            )
        end_r, end_m = r["band_error"][-1][-1], m["band_error"][-1][-1]
        if end_r is not None and end_m is not None:
            family = first.get("family", "")
            if end_m > end_r + 0.02:
                sentences.append(
                    f"At the end of the budget meta's highest band is further from the clean image "
                    f"than random's "
                    f"({_fmt(end_m)} vs {_fmt(end_r)})"
                    + (": it has fitted more of the noise." if family == "denoise" else ".")
                )
            elif end_m < end_r - 0.02:
                sentences.append(
                    f"At the end of the budget meta's highest band is closer to the clean image than "
                    f"random's ({_fmt(end_m)} vs {_fmt(end_r)})."
                )
            else:
                sentences.append(
                    f"At the end of the budget both arms' highest band errors are about equal "
                    f"({_fmt(end_m)} vs {_fmt(end_r)})."
                )
    return " ".join(sentences)


# --------------------------------------------------------------------------------------------------- markdown


def _summary_table(results: dict) -> list[str]:
    by_setting = results["summary"]["by_setting"]
    with_meta = any(v.get("n_pairs") for v in by_setting.values())
    if with_meta:
        header = (
            "| setting | tag | in training? | n | random peak | meta peak | Δ peak | Δ stop | iters "
            "to target "
            "(random → meta) | speedup median [IQR] | wall-clock ratio | seconds per run (random / meta) |"
        )
        lines = [header, "|" + "---|" * 12]
        for name, s in by_setting.items():
            lines.append(
                f"| {name}{capped_mark(s)} | {s.get('tag') or ''} | {s.get('coverage') or '?'} | {s['n_cases']} | "
                f"{_fmt(s.get('random_peak_psnr_median'))} | "
                f"{_fmt(s.get('meta_peak_psnr_median'))} | {_signed(s.get('delta_peak_median'))} | "
                f"{_signed(s.get('delta_stop_median'))} | "
                f"{_iters(s.get('iterations_to_target_random_median'))} → "
                f"{_iters(s.get('iterations_to_target_meta_median'))} | ×{_fmt(s.get('speedup_median'), 1)} "
                f"[{_fmt(s.get('speedup_iqr'), 1)}] | ×{_fmt(s.get('wall_clock_ratio_median'), 1)} | "
                f"{_fmt(s.get('random_seconds_median'), 1)} / {_fmt(s.get('meta_seconds_median'), 1)} |"
            )
        o = results["summary"]["overall"]
        lines.append(
            f"| **overall** | | | {o['n_cases']} | {_fmt(o.get('random_peak_psnr_median'))} | "
            f"{_fmt(o.get('meta_peak_psnr_median'))} | {_signed(o.get('delta_peak_median'))} | "
            f"{_signed(o.get('delta_stop_median'))} | {_iters(o.get('iterations_to_target_random_median'))} "
            f"→ {_iters(o.get('iterations_to_target_meta_median'))} | ×{_fmt(o.get('speedup_median'), 1)} "
            f"[{_fmt(o.get('speedup_iqr'), 1)}] | ×{_fmt(o.get('wall_clock_ratio_median'), 1)} | "
            f"{_fmt(o.get('random_seconds_median'), 1)} / {_fmt(o.get('meta_seconds_median'), 1)} |"
        )
    else:
        arm = _arms(results)[0]
        lines = [
            f"| setting | tag | n | {arm} peak | peak iteration | iters to peak − 0.5 dB | stop iteration | "
            "stop PSNR |",
            "|" + "---|" * 8,
        ]
        for name, s in by_setting.items():
            lines.append(
                f"| {name} | {s.get('tag') or ''} | {s['n_cases']} | "
                f"{_fmt(s.get(f'{arm}_peak_psnr_median'))} | "
                f"{_iters(s.get(f'{arm}_peak_iteration_median'))} | "
                f"{_iters(s.get('iterations_to_target_random_median'))} | "
                f"{_iters(s.get(f'{arm}_stop_iteration_median'))} | "
                f"{_fmt(s.get(f'{arm}_stop_psnr_median'))} |"
            )
    return lines


def capped_mark(summary: dict) -> str:
    """`` ⚠ k/n capped`` when k random runs of a setting hit the cap while still improving (else "")."""
    capped = summary.get("random_still_improving_at_end") or 0
    if not capped:
        return ""
    total = summary.get("n_pairs") or summary.get("n_cases") or 0
    return f" ⚠ {capped}/{total} capped"


def _baseline_table(results: dict) -> list[str]:
    """Per setting: each DIP arm's peak, its peak with the classic EMA 0.99 of outputs, its PSNR at the
    no-ground-truth stop, and every classical method of the family (blank where a family has none)."""
    by_setting = results["summary"]["by_setting"]
    names = list(dict.fromkeys(n for s in by_setting.values() for n in (s.get("baselines_median") or {})))
    arms = _arms(results)
    columns = [f"DIP {a} peak | {a} EMA 0.99 peak | {a} @ stop" for a in arms]
    header = "| setting | " + " | ".join(columns + [n.replace("_", " ") for n in names]) + " |"
    lines = [header, "|" + "---|" * (1 + 3 * len(arms) + len(names))]
    for setting, s in by_setting.items():
        base = s.get("baselines_median") or {}
        cells = []
        for a in arms:
            cells += [
                _fmt(s.get(f"{a}_peak_psnr_median")),
                _fmt(s.get(f"{a}_peak_psnr_ema99_median")),
                _fmt(s.get(f"{a}_stop_psnr_median")),
            ]
        cells += ["" if base.get(n) is None else _fmt(base.get(n)) for n in names]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return lines


def _frontier_table(results: dict) -> list[str]:
    """Per setting and δ: median iterations (seconds) each arm needs to first reach random's peak − δ."""
    lines = [
        "| setting | δ (dB) | random: iterations (s) | meta: iterations (s) | speedup median | meta reached |",
        "|---|---|---|---|---|---|",
    ]
    any_row = False
    for setting, s in results["summary"]["by_setting"].items():
        for delta, f in (s.get("frontier") or {}).items():
            any_row = True
            lines.append(
                f"| {setting} | {delta} | {_iters(f.get('iterations_random_median'))} "
                f"({_fmt(f.get('seconds_random_median'), 1)}) | {_iters(f.get('iterations_meta_median'))} "
                f"({_fmt(f.get('seconds_meta_median'), 1)}) | ×{_fmt(f.get('speedup_median'), 1)} | "
                f"{_fmt(100 * (f.get('meta_reached_fraction') or 0), 0)}% |"
            )
    return lines if any_row else []


def plot_frontier(results: dict, path: Path) -> Path | None:
    """Median iterations to random's peak − δ against δ, per setting, both arms (log y)."""
    by_setting = {k: v for k, v in results["summary"]["by_setting"].items() if v.get("frontier")}
    if not by_setting:
        return None
    names = list(by_setting)
    fig, axes = _panel_grid(len(names), 4.2, 3.0)
    for ax, setting in zip(axes, names, strict=False):
        front = by_setting[setting]["frontier"]
        deltas = [float(d) for d in front]
        for arm in ("random", "meta"):
            values = [front[d].get(f"iterations_{arm}_median") for d in front]
            ys = [np.nan if v is None else v for v in values]
            ax.plot(deltas, ys, "o-", color=COLORS[arm], label=LABELS[arm])
        ax.set_yscale("log")
        ax.set_xlabel("δ below random's peak (dB)")
        ax.set_ylabel("iterations (median)")
        ax.set_title(setting + capped_mark(by_setting[setting]), fontsize=9)
        ax.grid(alpha=0.3, which="both", lw=0.5)
        ax.legend(fontsize=7)
    fig.suptitle("Speed–quality frontier: iterations to reach random init's peak − δ", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _budget_text(config: dict) -> str:
    caps = ", ".join(map(str, config["iterations"]))
    options = config.get("options") or {}
    if options.get("converge"):
        return (
            f"each arm runs until its PSNR has passed its peak — stopped after max({options.get('patience')}, "
            f"{options.get('patience_fraction')} × iterations so far) iterations without a gain of 0.01 dB — "
            f"or a cap of {caps} iterations (runs that hit the cap while improving are flagged ⚠); PSNR every "
            f"iteration, SSIM every iteration up to 500 then every {options.get('ssim_every', 1)}th"
        )
    return f"budget {caps} iterations (fixed; PSNR/SSIM recorded every iteration)"


def write_markdown(results: dict, out: Path, figures: dict) -> Path:
    config = results["config"]
    init = config.get("init", {})
    arms = config.get("arms", _arms(results))
    lines = [f"# Evaluation: {config.get('name', 'evaluate')}", ""]
    if config.get("description"):
        lines += [config["description"], ""]
    if "meta" in arms:
        lines.append(
            f"Meta-learned init **{init.get('name')}** (sha256 `{str(init.get('sha256'))[:16]}…`; "
            f"{init.get('card') or ''}; network `{(init.get('arch') or {}).get('name', 'custom')}`) against random "
            f"init (`{config.get('random', {}).get('arch') or 'same network'}`, the DIP paper's recipe), each with "
            "its own recipe, on the same measurements."
        )
    else:
        lines.append(
            f"Random init only (`{config.get('random', {}).get('arch')}`, the DIP paper's recipe): "
            "no meta-learned init was given."
        )
    lines += [
        "",
        f"Images: {', '.join(config.get('images', []))}; sizes "
        f"{', '.join(f'{s} px' for s in config.get('sizes', []))};"
        f" seeds {', '.join(map(str, config.get('seeds', [])))}; "
        + _budget_text(config)
        + "; watched stopping rule "
        f"`{config.get('stop_rule')}` (no ground truth). Device {config.get('device')}, "
        f"{config.get('threads')} threads"
        + (f" × {config['jobs']} parallel jobs" if config.get("jobs", 1) > 1 else "")
        + f"; {config.get('date')}.",
        "",
        f"Re-run: `{config.get('command')}`",
        "",
    ]
    for note in config.get("notes", []):
        lines.append(f"> {note}")
    lines += [
        "",
        "## Summary",
        "",
        "PSNR in dB (medians over images × seeds). *Target* = random init's peak − "
        f"{config.get('margin_db', 0.5)} dB; *speedup* = iterations random needs to first reach it "
        f"÷ iterations"
        " meta needs (0 when meta never does); Δ = meta − random; *stop* = the output of the no-ground-truth "
        "rule.",
        "",
    ]
    lines += _summary_table(results)
    lines += [""]
    baseline_lines = _baseline_table(results)
    if baseline_lines:
        lines += [
            "## Against classical methods and DIP's own EMA",
            "",
            "Median PSNR (dB) on the same measurements. Each DIP arm: its peak, the peak of the classic EMA of "
            "outputs (weight 0.99; the random arm's own recipe), and its output at the no-ground-truth stop. "
            "Classical methods (`metadip/baselines.py`): TV (weight 0.75·σ/255) and BM3D for denoising, "
            "biharmonic filling for inpainting, bicubic and Tikhonov for super-resolution, Tikhonov "
            "(Wiener-type, ‖∇x‖² prior) for deblurring, zero-filled and TV-regularised least squares for "
            "Fourier; λ / TV weight picked with the clean image from a small grid (oracle: flatters them).",
            "",
        ]
        lines += baseline_lines + [""]
    frontier_lines = _frontier_table(results)
    if frontier_lines:
        lines += [
            "## Speed–quality frontier",
            "",
            "Median iterations (and seconds) each arm needs to first reach random init's peak − δ; never "
            "counts as infinite in the median (shown as *never*). The 0.5 dB row is the headline speedup.",
            "",
        ]
        if "frontier" in figures:
            lines += [f"![speed-quality frontier]({figures['frontier'].name})", ""]
        lines += frontier_lines + [""]
    lines += ["## Convergence", "", f"![PSNR vs iteration]({figures['curves'].name})", ""]
    lines += [f"- {sentence}" for sentence in curves_reading(results)]
    lines += [""]
    if "speedup" in figures:
        lines += [
            "## Speedup",
            "",
            f"![speedup per setting]({figures['speedup'].name})",
            "",
            speedup_reading(results),
            "",
        ]
    elif "convergence" in figures:
        lines += [
            "## Iterations to converge",
            "",
            f"![iterations to target]({figures['convergence'].name})",
            "",
            "Without a meta-learned init there is no speedup to show; the figure gives the iteration budget "
            "random init needs, the quantity a meta init has to beat.",
            "",
        ]
    lines += ["## Reconstructions", ""]
    for setting in settings(results):
        figure = figures.get(f"grid:{setting}")
        if figure is None:
            continue
        lines += [
            f"### {setting}",
            "",
            f"![{setting}]({figure.name})",
            "",
            grid_reading(results, setting),
            "",
        ]
    lines += [
        "## Spectral view",
        "",
        "Radially averaged power spectrum of the reconstruction at a few iterations against the "
        "clean image and "
        "the measurement (top), and the relative error ‖F(x̂) − F(x)‖/‖F(x)‖ in each radial frequency band "
        "over iterations (bottom; log-spaced columns) — which frequencies each init gets right, and when.",
        "",
    ]
    for setting in settings(results):
        figure = figures.get(f"spectral:{setting}")
        if figure is None:
            continue
        lines += [
            f"### {setting}",
            "",
            f"![spectral view {setting}]({figure.name})",
            "",
            spectral_reading(results, setting),
            "",
        ]
    versions = config.get("versions", {})
    lines += [
        "## Configuration",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform") + ".",
        f"Platform: {versions.get('platform', '?')}.",
        "",
        "Files: `results.json` (every curve; keys documented in `metadip/evaluation.py`), `results.csv` "
        "(one row per case), `config.toml` (re-run with `metadip evaluate --config config.toml`), `images/`, "
        "`cases/` (the resume cache).",
        "",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def build_report(out: str | Path, results: dict | None = None) -> list[Path]:
    """Write every figure and ``report.md`` into ``out`` (reading ``out/results.json`` when ``results`` is
    None). Returns the written paths."""
    from metadip.evaluation import load_results

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
