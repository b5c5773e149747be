"""Probe (issue 16, lever 1): Subspace-DIP's online stage on a shipped init — not shipped, not a product mode.

Subspace-DIP (arXiv 2302.10279) optimises d coefficients of a basis of weight directions instead of every weight:
θ = θ0 + Σ_i c_i s_i v_i, where v_i are the top principal directions of DIP weight trajectories θ_k − θ0 on
*training* pictures and s_i their standard deviations (so every c_i is O(1) and one Adam lr fits them all).
Few degrees of freedom, all of them directions DIP actually used on other pictures: the hope is a run that
plateaus at the peak instead of fitting the noise.

1. trajectories: DIP from θ0 (the init's own recipe, all weights) on training pictures × operators, a snapshot of
   θ_k − θ0 every ``--snapshot-every`` iterations;
2. basis: SVD of the stacked snapshots (uncentred: the directions away from θ0);
3. online: for each development case, random-init DIP and the subspace run, both until their peak has passed
   (the evaluation's ``Converged`` rule), PSNR curves + Δ peak and speedup to random's peak − δ.

    OMP_NUM_THREADS=1 python pretrain/experiments/subspace_probe.py --init universal-slim-long \\
        --dims 8,32,128 --out runs/subspace

Result (tenth session, docs/RESEARCH_LOG.md 39; ``evaluate/results/dev/outside-subspace-probe.json``): denoise σ 25
on the outside crops −2.4 to −3.8 dB against random init's peak (d = 8, 64). Rejected.

Needs ``evaluate/`` on the path (it reuses ``evaluate/dev_compare.py``'s outside crops).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

ROOT = Path(__file__).resolve().parents[2]
TRAIN_IMAGES = ("rocket", "motorcycle", "immunohistochemistry", "retina")
TRAIN_OPERATORS = ("denoise:sigma=25", "inpaint:ratio=0.5", "superres:factor=4", "deblur:kernel=gauss,width=2,sigma=2")


class SubspaceNet(nn.Module):
    """``base`` with its weights θ0 + Bᵀ(s ⊙ c): only ``c`` is a parameter (what ``dip.fit`` adapts)."""

    def __init__(self, base: nn.Module, basis: torch.Tensor, scales: torch.Tensor):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.names = [n for n, _ in base.named_parameters()]
        self.shapes = [p.shape for _, p in base.named_parameters()]
        self.register_buffer("theta0", torch.cat([p.detach().reshape(-1) for p in base.parameters()]))
        self.register_buffer("basis", basis)
        self.register_buffer("scales", scales)
        self.coefficients = nn.Parameter(torch.zeros(basis.shape[0]))
        self.config = base.config

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield "coefficients", self.coefficients

    def forward(self, z, size=None):
        flat = self.theta0 + (self.coefficients * self.scales) @ self.basis
        params, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            count = shape.numel()
            params[name] = flat[start : start + count].view(shape)
            start += count
        return functional_call(self.base, params, (z,), {"size": size})


def load_case(image: str, operator: str, seed: int, size: int):
    from dev_compare import image_item

    from metadip.evaluation import load_clean, make_problem

    item = image_item(image)
    x = load_clean(item, size, 3)
    op, y = make_problem(x, operator, seed, item.name)
    return x, op, y


def start(init_state, op, y, seed):
    from metadip import api

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return api.prepare(init_state, op, torch.device("cpu"), y)


def trajectories(init_state, images, operators, seeds, iterations, every) -> torch.Tensor:
    from metadip import dip

    rows = []
    for image in images:
        for operator in operators:
            for seed in range(seeds):
                x, op, y = load_case(image, operator, seed, 64)
                net, z = start(init_state, op, y, seed)
                theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

                def snap(iteration, *_, net=net, theta0=theta0):
                    if (iteration + 1) % every == 0:
                        rows.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]) - theta0)

                dip.fit(
                    net,
                    z,
                    y,
                    op,
                    init_state.recipe,
                    iterations=iterations,
                    stop="budget",
                    generator=torch.Generator().manual_seed(seed),
                    callback=snap,
                    reference=x,
                    track_ssim=False,
                )
                print(f"trajectory {image} {operator} seed {seed}: {len(rows)} snapshots", flush=True)
    return torch.stack(rows)


def curve_subspace(init_state, basis, scales, lr, image, operator, seed, size, cap) -> list[float]:
    from metadip import dip
    from metadip.stopping import Converged

    x, op, y = load_case(image, operator, seed, size)
    net, z = start(init_state, op, y, seed)
    wrapped = SubspaceNet(net, basis, scales)
    recipe = dataclasses.replace(init_state.recipe, lr=lr, lr_per_tensor=None, adapt="all", loss="mse")
    result = dip.fit(
        wrapped,
        z,
        y,
        op,
        recipe,
        iterations=cap,
        stop=Converged(),
        reference=x,
        track_ssim=False,
        generator=torch.Generator().manual_seed(seed),
        sigma=getattr(op, "sigma", 0.0) / 255.0 or None,
    )
    return list(result.history["psnr"])


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT / "evaluate"))
    from dev_compare import cached_curve, outside_images

    from metadip import checkpoint, metrics

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", default="universal-slim-long")
    parser.add_argument("--dims", default="8,32,128")
    parser.add_argument("--lrs", default="0.02", help="Adam lr(s) of the coefficients, comma separated")
    parser.add_argument("--train-images", default=",".join(TRAIN_IMAGES))
    parser.add_argument("--train-operators", default=";".join(TRAIN_OPERATORS))
    parser.add_argument("--train-iterations", type=int, default=300)
    parser.add_argument("--snapshot-every", type=int, default=10)
    parser.add_argument("--train-seeds", type=int, default=1)
    parser.add_argument("--operators", default="denoise:sigma=25;superres:factor=4")
    parser.add_argument("--images", default="outside", help="'outside' or comma-separated development pictures")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cap", type=int, default=6000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None, help="random curves folder (dev_compare.py --cache)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    init_state = checkpoint.load_checkpoint(args.init)

    basis_file = args.out / "basis.pt"
    if basis_file.exists():
        saved = torch.load(basis_file, weights_only=True)
        directions, scales = saved["directions"], saved["scales"]
    else:
        images, operators = args.train_images.split(","), args.train_operators.split(";")
        snapshots = trajectories(
            init_state, images, operators, args.train_seeds, args.train_iterations, args.snapshot_every
        )
        _, singular, vh = torch.linalg.svd(snapshots, full_matrices=False)
        directions, scales = vh.contiguous(), singular / snapshots.shape[0] ** 0.5
        torch.save({"directions": directions, "scales": scales}, basis_file)
    energy = (scales**2).cumsum(0) / (scales**2).sum()
    print(
        "energy captured by d directions:",
        {d: round(float(energy[d - 1]), 3) for d in (1, 8, 32, 128) if d <= len(energy)},
        flush=True,
    )

    images = outside_images(Path(tempfile.mkdtemp())) if args.images == "outside" else args.images.split(",")
    operators = [s.strip() for s in args.operators.split(";") if s.strip()]
    cache = args.cache or args.out / "curves"
    rows = []
    for operator in operators:
        for image in images:
            for seed in range(args.seeds):
                random_curve = cached_curve(cache, "random", image, operator, seed, args.size, args.cap, 3, True)
                for d in (int(v) for v in args.dims.split(",")):
                    for lr in (float(v) for v in args.lrs.split(",")):
                        curve = curve_subspace(
                            init_state, directions[:d], scales[:d], lr, image, operator, seed, args.size, args.cap
                        )
                        row = {
                            "operator": operator,
                            "image": Path(image).stem,
                            "seed": seed,
                            "d": d,
                            "lr": lr,
                            "peak": max(curve),
                            "peak_iteration": curve.index(max(curve)) + 1,
                            "random_peak": max(random_curve),
                            "random_peak_iteration": random_curve.index(max(random_curve)) + 1,
                            "delta_peak": max(curve) - max(random_curve),
                            "at_50": curve[min(50, len(curve)) - 1],
                            **{
                                f"speedup_{delta}": metrics.speedup(random_curve, curve, margin_db=delta)
                                for delta in (0.25, 0.5, 1.0, 2.0)
                            },
                        }
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
