"""Compare initialisations on a DEVELOPMENT set: training pictures, for choosing between recipes.

`metadip evaluate` refuses the pictures an init was meta-trained on, and rightly so: its numbers are the
reported ones. Choosing between two candidate recipes must not look at those held-out pictures either (that
would tune on the test set), so this script runs the candidates on crops of *training* pictures instead, with
the same operators, measurement seeds and DIP loop as the evaluation. Its numbers are optimistic for every
meta-learned candidate alike (they saw these pictures) and are only good for ranking candidates; never quote
them as results.

    python evaluate/dev_compare.py --init checkpoints/universal-slim.safetensors --init /tmp/ck/new.safetensors \
        --iterations 300 --out evaluate/results/dev-universal-slim-maps.json

Prints, per operator, the median over pictures × seeds of the peak PSNR, the PSNR at iterations 10 / 50 / 100,
and the iteration of the peak, for each candidate; writes the same as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV_IMAGES = ("rocket", "motorcycle", "immunohistochemistry", "retina")
DEV_OPERATORS = (
    "denoise:sigma=25",
    "inpaint:ratio=0.5",
    "superres:factor=4",
    "deblur:kernel=gauss,width=2,sigma=2",
    "fourier:ratio=0.3",
    "deblur:kernel=motion,length=9,sigma=2",
)
MARKS = (10, 50, 100)


def run_case(init: str, image: str, operator: str, seed: int, size: int, iterations: int) -> dict:
    import torch

    from metadip import api
    from metadip.evaluation import ImageItem, load_clean, make_problem

    torch.manual_seed(seed)
    x = load_clean(ImageItem(name=image, kind="sample"), size, 3)
    op, y = make_problem(x, operator, seed, image)
    result = api.reconstruct(y, op, init=init, iterations=iterations, stop="budget", seed=seed, reference=x)
    curve = result.history["psnr"]
    peak = max(range(len(curve)), key=curve.__getitem__)
    return {
        "peak": curve[peak],
        "peak_iteration": peak + 1,
        **{f"at_{m}": curve[min(m, len(curve)) - 1] for m in MARKS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", action="append", required=True, help="init name or path (repeat); 'random' too")
    parser.add_argument("--images", default=",".join(DEV_IMAGES), help="training pictures (comma separated)")
    parser.add_argument("--operators", default=";".join(DEV_OPERATORS), help="operator specs, ';' separated")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None, help="write the medians (and every case) as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from metadip.errors import MetadipError
    from metadip.fileio import atomic_write_json

    images = [s.strip() for s in args.images.split(",") if s.strip()]
    operators = [s.strip() for s in args.operators.split(";") if s.strip()]
    report: dict = {
        "images": images,
        "seeds": args.seeds,
        "size": args.size,
        "iterations": args.iterations,
        "inits": {},
    }
    try:
        for init in args.init:
            per_op = {}
            for operator in operators:
                cases = [
                    run_case(init, image, operator, seed, args.size, args.iterations)
                    for image in images
                    for seed in range(args.seeds)
                ]
                medians = {k: statistics.median(c[k] for c in cases) for k in cases[0]}
                per_op[operator] = {"median": medians, "cases": cases}
                cells = " ".join(f"{k}={v:.2f}" for k, v in medians.items())
                print(f"{Path(init).stem:28s} {operator:40s} {cells}", flush=True)
            report["inits"][init] = per_op
    except MetadipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
