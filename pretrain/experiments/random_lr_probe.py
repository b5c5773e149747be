"""Probe (issue 16 lever 5, log entry 66): is random-init DIP's lr the cost of its peak, or only of its speed?

Every meta-learned init so far reaches random DIP's neighbourhood fast and peaks below it. The other way round is
a *learned online optimiser from random weights* (Meta-SGD with θ0 = PyTorch's init): it keeps the random arm's
prior by construction and needs only that larger (per-layer, per-step) steps reach the same peak sooner. This
zero-shot check scales the DIP paper's lr (Adam 0.01, all else the random arm's recipe) and reports, per
``outside`` development crop (the dev_compare measurements, seed 0), the peak, its iteration and the iterations to
the lr-0.01 curve's peak − 0.5 dB (from dev_compare's cache ``runs/curves`` when present, else run here).

    OMP_NUM_THREADS=1 python pretrain/experiments/random_lr_probe.py "denoise:sigma=25" 0.02,0.04 --out runs/lr.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "evaluate"))

from dev_compare import cached_curve, image_item, outside_images  # noqa: E402

from metadip import api  # noqa: E402
from metadip.evaluation import load_clean, make_problem  # noqa: E402
from metadip.stopping import Converged  # noqa: E402


def curve_at_lr(image: str, operator: str, lr: float, size: int, cap: int) -> list[float]:
    torch.manual_seed(0)
    item = image_item(image)
    x = load_clean(item, size, 3)
    op, y = make_problem(x, operator, 0, item.name)
    result = api.reconstruct(y, op, init="random", iterations=cap, stop=Converged(), seed=0, reference=x, lr=lr)
    return list(result.history["psnr"])


def first_at(curve: list[float], target: float) -> int | None:
    hits = np.nonzero(np.asarray(curve) >= target)[0]
    return int(hits[0]) + 1 if hits.size else None


def probe_parser(what: str) -> argparse.ArgumentParser:
    """The arguments of the outside-crop probes: ``operators`` (";"-separated), ``what`` they vary, --size,
    --cap, --images (crop names), --out (a JSON-lines file, appended to)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("operators")
    parser.add_argument(what)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cap", type=int, default=6000)
    parser.add_argument("--images", default="gh_face,gh_uniform,gh_left,gh_whole")
    parser.add_argument("--out", required=True)
    return parser


def chosen_crops(names: str) -> list[str]:
    """Paths of the ``outside`` crops named in ``names`` (comma-separated), written to a temporary folder."""
    wanted = names.split(",")
    return [p for p in outside_images(Path(tempfile.mkdtemp())) if Path(p).stem in wanted]


def main() -> None:
    args = probe_parser("lrs").parse_args()
    images = chosen_crops(args.images)
    for operator in args.operators.split(";"):
        for image in images:
            base = cached_curve(ROOT / "runs" / "curves", "random", image, operator, 0, args.size, 6000, 3, True)
            peak = max(base)
            row = {
                "op": operator,
                "img": Path(image).stem,
                "lr0.01": [round(peak, 2), int(np.argmax(base)) + 1, first_at(base, peak - 0.5), len(base)],
            }
            for lr in (float(v) for v in args.lrs.split(",")):
                curve = curve_at_lr(image, operator, lr, args.size, args.cap)
                row[f"lr{lr:g}"] = [
                    round(max(curve), 2),
                    int(np.argmax(curve)) + 1,
                    first_at(curve, peak - 0.5),
                    len(curve),
                ]
                print(json.dumps(row), flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
