"""Benchmark of the DIP core (issue 2): random-init DIP with the default preset on scikit-image's astronaut.

For each size it runs (a) a fixed budget with the ground truth to find the peak PSNR of the EMA output and
(b) the default no-ground-truth stopping rule on the same measurement, and reports how far (b) lands from (a)'s
peak. A few other bundled images are included so the stopping rule is not judged on one picture.

    python evaluate/bench_dip_core.py            # writes evaluate/results/dip_core.json and dip_core.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from metadip import api, fileio, metrics, operators
from metadip.generators import DEFAULT_ARCH
from metadip.imageio import center_square
from metadip.images import load_sample, resize
from metadip.stopping import DEFAULT_STOP

RESULTS = Path(__file__).resolve().parent / "results"


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    return resize(center_square(image), (size, size))


def run_case(name: str, size: int, budget: int, spec: str, seed: int) -> dict:
    x = square(load_sample(name, channels=3), size)
    generator = torch.Generator().manual_seed(seed)
    op = operators.build_operator(spec, x.shape[1:], generator=generator)
    y = operators.simulate(x, op, generator)
    started = time.perf_counter()
    full = api.reconstruct(y, op, init="random", iterations=budget, stop="budget", seed=seed, reference=x)
    budget_seconds = time.perf_counter() - started
    curve = full.history["psnr"]
    peak = max(curve)
    stopped = api.reconstruct(y, op, init="random", iterations=budget, seed=seed, reference=x)
    return {
        "image": name,
        "size": size,
        "operator": spec,
        "seed": seed,
        "measurement_psnr": metrics.psnr(y, x),
        "peak_psnr": peak,
        "peak_iteration": curve.index(peak) + 1,
        "final_psnr": curve[-1],
        "budget": budget,
        "stop_rule": DEFAULT_STOP,
        "stop_iteration": stopped.stop_iteration,
        "stop_output_iteration": stopped.extras.get("output_iteration"),
        "stop_psnr": stopped.psnr,
        "stop_gap_db": peak - stopped.psnr,
        "ms_per_iteration": 1000 * budget_seconds / budget,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="astronaut,coffee,chelsea")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--budgets", default="1200,2400", help="iteration budget per size")
    parser.add_argument("--operator", default="denoise:sigma=25")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sizes = [int(s) for s in args.sizes.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    rows = []
    for size, budget in zip(sizes, budgets, strict=True):
        for name in args.images.split(","):
            if size > 64 and name != "astronaut":
                continue  # 128 px runs are long on CPU: astronaut only (the benchmark image)
            row = run_case(name, size, budget, args.operator, args.seed)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "date": datetime.date.today().isoformat(),
        "arch": DEFAULT_ARCH,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
    }
    fileio.atomic_write_json(args.out / "dip_core.json", {"meta": meta, "cases": rows})
    lines = [
        f"# DIP core benchmark ({meta['date']}, {DEFAULT_ARCH}, random init, {args.operator}, "
        f"torch {meta['torch']}, {meta['threads']} threads)",
        "",
        f"Peak = best PSNR of the EMA output over a fixed budget (needs the clean image); stop = the default "
        f"no-ground-truth rule (`{DEFAULT_STOP}`) on the same measurement.",
        "",
        "| image | px | noisy PSNR | peak PSNR (iter) | final PSNR | stop PSNR (iter) | stop − peak | ms/iter |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['size']} | {r['measurement_psnr']:.2f} | {r['peak_psnr']:.2f} ({r['peak_iteration']})"
            f" | {r['final_psnr']:.2f} | {r['stop_psnr']:.2f} ({r['stop_iteration']}) | {-r['stop_gap_db']:+.2f} dB"
            f" | {r['ms_per_iteration']:.0f} |"
        )
    fileio.atomic_write_text(args.out / "dip_core.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
