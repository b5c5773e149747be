"""Probe (issue 16, log entry 67): random DIP around a classical estimate — keep the random arm's network, noise z
and recipe, and only add a fixed classical estimate in the output's logit space:

    x(θ) = sigmoid(logit(estimate) + g_θ(z)),   g = skip-slim without its sigmoid, head zeroed so x(θ0) = estimate.

Every shipped photograph init puts the estimate in z (the conditioned design) and peaks below random DIP; random DIP
with noise z keeps its peak but starts from nothing. If the network's prior shapes the *correction* of a classical
image as it shapes the image, this arm starts at the estimate and climbs to random DIP's peak sooner; if it then
also keeps the peak, a Reptile θ0 for g (entry 43's recipe, which needs a fixed z) is the next step: a correction of a
classical picture varies less across photographs than the picture (entry 47's failure). Zero-shot check on the
``outside`` development crops (64 px, the dev_compare measurements, seed 0); random DIP's curves come from
dev_compare's cache ``runs/curves``. Prints per crop: the estimate's PSNR, both arms' peaks and peak iterations,
iterations to random's peak − 0.5 / − 1 dB.

    OMP_NUM_THREADS=1 python pretrain/experiments/offset_dip_probe.py "inpaint:ratio=0.5" lowpass --out runs/o.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "evaluate"))
sys.path.insert(0, str(ROOT / "pretrain" / "experiments"))

from dev_compare import cached_curve, image_item  # noqa: E402
from random_lr_probe import chosen_crops, first_at, probe_parser  # noqa: E402

from metadip import checkpoint, dip, metrics  # noqa: E402
from metadip.api import prepare  # noqa: E402
from metadip.conditioning import backprojection, tikhonov_estimate  # noqa: E402
from metadip.evaluation import load_clean, make_problem  # noqa: E402
from metadip.generators import build_generator  # noqa: E402
from metadip.stopping import Converged  # noqa: E402

EPS = 1e-3


class OffsetNet(nn.Module):
    """``sigmoid(logit(estimate) + net(z))`` for a net without its sigmoid."""

    def __init__(self, net: nn.Module, estimate: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("base", torch.logit(estimate.clamp(EPS, 1 - EPS)))

    def forward(self, z: torch.Tensor, size=None) -> torch.Tensor:
        return torch.sigmoid(self.base + self.net(z, size=size))


def estimate_of(kind: str, op, y: torch.Tensor) -> torch.Tensor:
    if kind == "tikhonov":
        raw, _ = backprojection(op, y)
        return tikhonov_estimate(op, y, 50.0, 0.003, start=raw)
    if kind.startswith("lowpass"):
        width = float(kind.split(":")[1]) if ":" in kind else 1.0
        return backprojection(op, y, lowpass=width)[0]
    raise SystemExit(f"unknown estimate {kind!r}")


def offset_curve(image: str, operator: str, kind: str, size: int, cap: int, zero_head: bool):
    torch.manual_seed(0)
    item = image_item(image)
    x = load_clean(item, size, 3)
    op, y = make_problem(x, operator, 0, item.name)
    state = checkpoint.random_init("skip-slim", out_channels=3, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net, z = prepare(state, op, torch.device("cpu"), y)
    bare = build_generator({**state.arch_config, "need_sigmoid": False}, out_channels=3)
    bare.load_state_dict(net.state_dict())
    if zero_head:
        for module in bare.head.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.zeros_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    estimate = estimate_of(kind, op, y)
    wrapped = OffsetNet(bare, estimate)
    result = dip.fit(
        wrapped,
        z,
        y,
        op,
        state.recipe,
        iterations=cap,
        stop=Converged(),
        reference=x,
        sigma=getattr(op, "sigma", 0.0) / 255.0 or None,
        generator=torch.Generator().manual_seed(0),
        track_ssim=False,
    )
    return float(metrics.psnr(estimate, x)), list(result.history["psnr"])


def main() -> None:
    parser = probe_parser("estimate")
    parser.add_argument("--random-head", action="store_true", help="keep PyTorch's head init (x(θ0) ≠ estimate)")
    args = parser.parse_args()
    images = chosen_crops(args.images)
    for operator in args.operators.split(";"):
        for image in images:
            base = cached_curve(ROOT / "runs" / "curves", "random", image, operator, 0, args.size, 6000, 3, True)
            peak = max(base)
            start, curve = offset_curve(image, operator, args.estimate, args.size, args.cap, not args.random_head)
            row = {"op": operator, "img": Path(image).stem, "estimate": args.estimate, "estimate_psnr": round(start, 2)}
            for name, c in (("random", base), ("offset", curve)):
                row[name] = {
                    "peak": round(max(c), 2),
                    "at": int(np.argmax(c)) + 1,
                    "n": len(c),
                    "to-0.5": first_at(c, peak - 0.5),
                    "to-1": first_at(c, peak - 1),
                    "to-2": first_at(c, peak - 2),
                    "@50": round(c[min(49, len(c) - 1)], 2),
                    "@200": round(c[min(199, len(c) - 1)], 2),
                }
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
