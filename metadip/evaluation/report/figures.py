"""The report's figures (PNG; matplotlib with the Agg backend, imported inside the functions so importing the
package stays fast): curves, speedup or convergence, frontier, reconstruction grids and the spectral view.

Figures are committed with every suite, so they are written small (:func:`png_bytes`): the plots on a 256-colour
palette, the reconstruction grids lossless (greyscale ones as 8-bit grey), without the opaque alpha channel."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metadip.evaluation.report.common import (
    COLORS,
    LABELS,
    _arms,
    _cases,
    _pairs,
    capped_mark,
    representative_pair,
    settings,
)
from metadip.fileio import atomic_write_bytes

SPECTRUM_ITERATIONS = (1, 10, 50, 200)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Colours of a plot's palette (median cut: antialiased lines and text stay within ~1 grey level of the render).
PLOT_COLORS = 256


def png_bytes(data: bytes, palette: bool = True) -> bytes:
    """A smaller PNG of the PNG ``data`` (a matplotlib render): an alpha channel that is opaque everywhere dropped,
    an image whose pixels are all grey stored as 8-bit grey (both lossless); otherwise, with ``palette``, an RGB
    image quantised to :data:`PLOT_COLORS` colours (for plots; not for pictures). zlib at its best. Applying it
    again changes nothing."""
    from PIL import Image, ImageChops

    with Image.open(io.BytesIO(data)) as source:
        image = source.copy()
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema() == (255, 255):
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    if image.mode == "RGB":
        red, green, blue = image.split()
        if ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(green, blue).getbbox() is None:
            image = red  # R = G = B: the grey levels themselves
        elif palette:
            image = image.quantize(PLOT_COLORS, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _save(fig, path: Path, palette: bool = True) -> Path:
    """Render ``fig`` at 100 dpi and write it through :func:`png_bytes` (``palette=False``: lossless)."""
    plt = _plt()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, dpi=100, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, png_bytes(buffer.getvalue(), palette))
    return path


def _curve_matrix(cases: Sequence[dict], key: str = "psnr") -> np.ndarray:
    length = max(len(c[key]) for c in cases)
    matrix = np.full((len(cases), length), np.nan)
    for row, case in enumerate(cases):
        values = np.array([np.nan if v is None else v for v in case[key]], dtype=float)
        matrix[row, : len(values)] = values
    return matrix


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
    return _save(fig, path, palette=False)  # pictures: lossless


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
