"""results.json and the report's figures stay small (issue 18): the writer rounds curves and spectra as designed,
one line per case, a written and re-read results.json gives the same statistics, and figures are palette PNGs
(plots) or lossless (grids)."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from metadip import evaluation
from metadip.evaluation.arms import Arm
from metadip.evaluation.report.figures import _plt, _save, png_bytes
from metadip.evaluation.results import (
    CURVE_DECIMALS,
    POWER_DIGITS,
    assemble,
    compact,
    compact_case,
    dump_results,
    load_results,
    rewrite_results,
)
from metadip.evaluation.suite import quick_config


def _curve(rng, peak, at, length, start=10.0):
    """Full-precision PSNR curve: rise to ``peak`` at ``at``, then a slow decline, with a little noise."""
    i = np.arange(1, length + 1)
    curve = np.where(i <= at, start + (peak - start) * i / at, peak - 0.004 * (i - at))
    return list(curve + rng.normal(0, 0.003, length))


def _record(rng, init, pair, image, operator, peak, at, length=400, converged=True):
    psnr = _curve(rng, peak, at, length)
    peak_index = int(np.argmax(psnr))
    return {
        "key": f"{pair}-{init}",
        "pair_key": pair,
        "image": image,
        "operator": operator,
        "family": operator.split(":")[0],
        "size": 32,
        "tag": "seen",
        "coverage": "seen",
        "seed": 0,
        "init": init,
        "init_name": "tiny" if init == "meta" else "random",
        "init_sha256": "abc" if init == "meta" else "random-1",
        "budget": length,
        "psnr": psnr,
        "ssim": [float(v) for v in rng.uniform(0, 1, length)],
        "peak_psnr": psnr[peak_index],
        "peak_iteration": peak_index + 1,
        "final_psnr": psnr[-1],
        "stop_iteration": min(length, at + 50),
        "stop_psnr": psnr[min(length, at + 50) - 1],
        "iterations": length,
        "seconds": 1.2345678,
        "ms_per_iteration": 3.0864195 if init == "random" else 4.1234567,
        "converged": converged,
        "spectral": {
            "iterations": [1, 10, 100],
            "band_edges": [0.0, 0.25, 0.5],
            "band_error": [[0.912345, 1.0123456], [0.5, 0.75], [0.1234567, 0.2]],
            "frequencies": [0.125, 0.25, 0.375, 0.5],
            "power": [list(rng.uniform(1e-4, 10, 4)) for _ in range(3)],
        },
    }


def _synthetic(seed=0):
    rng = np.random.default_rng(seed)
    records, problems = [], []
    for n, (image, operator) in enumerate(
        [("a", "denoise:sigma=25"), ("b", "denoise:sigma=25"), ("a", "inpaint:ratio=0.5"), ("c", "inpaint:ratio=0.5")]
    ):
        pair = f"p{n}"
        records.append(_record(rng, "random", pair, image, operator, 28.0 + n * 0.37, 150 + 40 * n))
        records.append(_record(rng, "meta", pair, image, operator, 27.6 + n * 0.41, 20 + 7 * n))
        problems.append(
            {
                "pair_key": pair,
                "baselines": {"tv": 25.0 + n / 7},
                "spectra": {"clean": {"frequencies": [0.25, 0.5], "power": [3.14159265, 0.000123456789]}},
            }
        )
    records[-2]["psnr"][-1] = records[-2]["peak_psnr"] + 0.5  # one random run still improving at its cap
    records[-2]["converged"] = False
    return records, problems


def _arms():
    common = {"arch": None, "sha256": "abc", "arch_config": {"name": "skip"}, "inner": {}}
    return [
        Arm(label="random", init="random", name="random", **common),
        Arm(label="meta", init="tiny", name="tiny", **common),
    ]


def _decimals(number: str) -> int:
    return len(number.split(".")[1]) if "." in number else 0


# ---------------------------------------------------------------------------------------------- compact records


def test_compact_case_rounds_curves_and_power_and_is_idempotent():
    case = {
        "psnr": [24.123456789, float("nan"), None, 30.0],
        "psnr_ema99": [20.98765],
        "ssim": [0.123456789, None, float("inf")],
        "peak_psnr": 30.123456,  # scalars are the runner's, untouched
        "spectral": {"iterations": [1], "band_error": [[0.1234567]], "power": [[0.0023012345, 13.859, 12345.6]]},
    }
    out = compact_case(case)
    assert out["psnr"] == [24.123, None, None, 30.0] and out["psnr_ema99"] == [20.988]
    assert out["ssim"] == [0.1235, None, None]
    assert out["spectral"]["power"] == [[0.0023, 13.9, 12300.0]]
    assert out["spectral"]["band_error"] == [[0.1234567]] and out["peak_psnr"] == 30.123456
    assert case["psnr"][0] == 24.123456789 and case["spectral"]["power"][0][0] == 0.0023012345  # not mutated
    assert compact_case(out) == out
    assert CURVE_DECIMALS["psnr"] == 3 and CURVE_DECIMALS["ssim"] == 4 and POWER_DIGITS == 3


def test_dump_results_one_compact_line_per_case_with_rounded_numbers(tmp_path):
    records, problems = _synthetic()
    results = {"cases": records, "summary": {"overall": {"n_cases": 4}}, "config": {"name": "x"}, "problems": problems}
    text = dump_results(results)
    lines = text.splitlines()
    case_lines = [line for line in lines if line.startswith('  {"key"')]
    assert len(case_lines) == len(records) and all(", " not in line and '": ' not in line for line in case_lines)
    assert '"summary": {\n  "overall"' in text  # the small entries stay indented
    data = json.loads(text)
    for case in data["cases"]:
        psnr = re.search(r'"psnr":\[([^\]]*)\]', case_lines[data["cases"].index(case)]).group(1).split(",")
        assert max(_decimals(v) for v in psnr) <= 3
        assert all(v is None or v == round(v, 4) for v in case["ssim"])
        assert all(float(f"{v:.3g}") == v for row in case["spectral"]["power"] for v in row)
    assert data["problems"][0]["spectra"]["clean"]["power"] == [3.14, 0.000123]
    assert dump_results(data) == text  # idempotent: re-writing a stored results.json changes nothing
    (tmp_path / "results.json").write_text(text)
    assert rewrite_results(tmp_path) == (len(text.encode()), len(text.encode()))


# ----------------------------------------------------------------------------------------- round trip, summary


def test_round_trip_keeps_every_statistic(tmp_path):
    records, problems = _synthetic()
    config = quick_config()
    results = assemble(config, records, problems, _arms(), out=tmp_path, device="cpu")
    assert results["cases"][0]["psnr"] == compact_case(records[0])["psnr"]  # statistics see the stored curves
    text = dump_results(results)
    (tmp_path / "results.json").write_text(text)
    loaded = load_results(tmp_path)

    assert loaded["summary"] == json.loads(json.dumps(results["summary"]))
    assert evaluation.build_summary(loaded["cases"], config.margin_db) == loaded["summary"]
    assert [evaluation.still_improving(c) for c in loaded["cases"]] == [
        evaluation.still_improving(c) for c in results["cases"]
    ]
    assert sum(c["capped_while_improving"] for c in loaded["cases"]) == 1
    again = [dict(c) for c in loaded["cases"]]
    evaluation.annotate_pairs(again, config.margin_db)
    keys = ("target_psnr", "iterations_to_target", "speedup", "wall_clock_ratio", "capped_while_improving")
    assert [[c.get(k) for k in keys] for c in again] == [[c.get(k) for k in keys] for c in loaded["cases"]]
    random = {c["pair_key"]: c for c in loaded["cases"] if c["init"] == "random"}
    meta = {c["pair_key"]: c for c in loaded["cases"] if c["init"] == "meta"}
    memory = {c["pair_key"]: c for c in results["cases"] if c["init"] == "random"}
    memory_meta = {c["pair_key"]: c for c in results["cases"] if c["init"] == "meta"}
    for key in random:
        assert evaluation.pair_statistics(random[key], meta[key]) == evaluation.pair_statistics(
            memory[key], memory_meta[key]
        )
    assert dump_results(loaded) == text
    assert compact(loaded) == loaded


# ------------------------------------------------------------------------------------------------------ figures


def _render(draw) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2.0, 1.5))
    draw(ax)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=60, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).astype(float)


def test_png_bytes_palette_for_plots_lossless_for_pictures(tmp_path):
    plot = _render(lambda ax: [ax.plot(np.sin(np.linspace(0, k, 50)), lw=1.5) for k in range(1, 6)])
    small = png_bytes(plot)
    assert Image.open(io.BytesIO(small)).mode == "P" and len(small) < len(plot)
    mse = np.mean((_pixels(small) - _pixels(plot)) ** 2)
    assert 10 * math.log10(255**2 / max(mse, 1e-12)) > 35
    assert png_bytes(small) == small

    rng = np.random.default_rng(0)
    colour = _render(lambda ax: ax.imshow(rng.uniform(0, 1, (12, 12, 3)), interpolation="nearest"))
    lossless = png_bytes(colour, palette=False)
    assert Image.open(io.BytesIO(lossless)).mode == "RGB"
    assert np.array_equal(_pixels(lossless), _pixels(colour))

    grey = _render(lambda ax: ax.imshow(rng.uniform(0, 1, (12, 12)), cmap="gray", interpolation="nearest"))
    stored = png_bytes(grey, palette=True)  # all-grey pixels: 8-bit grey, exact even for a plot
    assert Image.open(io.BytesIO(stored)).mode == "L" and np.array_equal(_pixels(stored), _pixels(grey))

    plt = _plt()
    fig, ax = plt.subplots(figsize=(2.0, 1.5))
    ax.imshow(rng.uniform(0, 1, (8, 8, 3)), interpolation="nearest")
    path = _save(fig, tmp_path / "grid.png", palette=False)
    assert Image.open(path).mode == "RGB"


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_png_bytes_keeps_real_transparency(mode):
    image = Image.new(mode, (8, 8), (10, 20, 30, 128) if mode == "RGBA" else (10, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with Image.open(io.BytesIO(png_bytes(buffer.getvalue()))) as out:
        assert out.mode == mode and out.getpixel((0, 0)) == image.getpixel((0, 0))
