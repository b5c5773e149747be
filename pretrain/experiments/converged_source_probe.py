"""Probe (issue 17, 128 px): does DIP started from a network that random DIP has already fitted to another picture
of the domain climb the long 128 px tail faster than DIP from random weights?

Every Reptile init so far (K ≤ 400 inner steps) starts ahead at 128 px and then climbs its last 2–3 dB as slowly as
random DIP, which needs ~3,000 iterations to get within 0.5 dB of its peak (research log 85, 86): the meta-step
never sees the tail. This probe puts θ0 at the end of the tail instead: random DIP (the random arm's own weights,
z and recipe) is run for ``--source-iterations`` on ``--sources`` training-distribution phantoms in turn (each
fit continuing from the previous one's weights, Adam restarted), the weights are written as a checkpoint with the
random arm's online recipe, and ``evaluate/dev_compare.py`` runs that checkpoint against random init on the
development pictures, both to convergence. ``--z same`` keeps the z of the fits (the input seed of the development
runs, at the same size); ``--z fresh`` fits with another z, so online DIP meets a z the weights never saw. Result
(docs/RESEARCH_LOG.md 87): one source, 3,000 iterations, dev phantom-101 at 128 px — fresh z ×1.04 / ×0.99 (lines /
points), same z ×0 / ×1.9; three sources of 1,500 iterations ×0 / ×1.0 and ×0 / ×3.0 (points −0.25 dB): no speed
carries from one picture's tail to the next.

    OMP_NUM_THREADS=1 PYTHONPATH=evaluate python pretrain/experiments/converged_source_probe.py \\
        --sources 1 --source-iterations 3000 --z same --save runs/converged-source \\
        --images phantom-101 --size 128 --channels 1 \\
        --operators "fourier:ratio=0.25,sigma=5;fourier:ratio=0.25,pattern=points,sigma=5" --seeds 1 \\
        --iterations 6000 --baseline-iterations 6000 --cache runs/curves --out runs/converged-source-128.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

SOURCE_SEED_BASE = 7_000  # training-distribution phantoms: metadip.phantoms.phantom from seed 7000 + k


def fit_sources(size: int, sources: int, iterations: int, operator: str, z_seed: int):
    """Random init (seed 0: the development runs' weights and online z) holding random DIP's weights after fitting
    ``sources`` training-distribution phantoms in turn (``iterations`` each, Adam restarted per picture, one z drawn
    from input seed ``z_seed``), and one log row per fit."""
    from metadip import api, dip
    from metadip.checkpoint import random_init
    from metadip.evaluation.problems import make_problem
    from metadip.phantoms import phantom

    start = random_init("skip-slim", out_channels=1, seed=0)
    z_recipe = random_init("skip-slim", out_channels=1, seed=z_seed).input_recipe
    state = start.state_dict
    rows = []
    for k in range(sources):
        x = phantom(size, torch.Generator().manual_seed(SOURCE_SEED_BASE + k))
        op, y = make_problem(x, operator, 0, f"source-{k}")
        current = dataclasses.replace(start, state_dict=state, input_recipe=z_recipe)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net, z = api.prepare(current, op, torch.device("cpu"), y)
        began = time.perf_counter()
        result = dip.fit(
            net,
            z,
            y,
            op,
            start.recipe,
            iterations=iterations,
            stop="budget",
            reference=x,
            generator=torch.Generator().manual_seed(k),
            ssim_every=1000,
        )
        curve = result.history["psnr"]
        rows.append(
            {
                "source": k,
                "peak": max(curve),
                "peak_iteration": curve.index(max(curve)) + 1,
                "last": curve[-1],
                "seconds": round(time.perf_counter() - began, 1),
            }
        )
        print(
            f"source {k}: peak {max(curve):.2f} dB @ {rows[-1]['peak_iteration']}, last {curve[-1]:.2f} dB, "
            f"{rows[-1]['seconds']} s",
            flush=True,
        )
        state = {name: value.detach().clone() for name, value in net.state_dict().items()}
    return dataclasses.replace(start, state_dict=state), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Every other option goes to evaluate/dev_compare.py."
    )
    parser.add_argument("--sources", type=int, default=1, help="training phantoms fitted in turn")
    parser.add_argument("--source-iterations", type=int, default=3000)
    parser.add_argument("--source-operator", default="fourier:ratio=0.25,sigma=5")
    parser.add_argument("--source-size", type=int, default=128)
    parser.add_argument("--z", choices=("same", "fresh"), default="same")
    parser.add_argument("--save", type=Path, required=True, help="folder for the checkpoint (reused if there)")
    args, forwarded = parser.parse_known_args(argv)

    from metadip.checkpoint import save_checkpoint

    name = f"converged-source-{args.sources}x{args.source_iterations}-{args.z}-z-{args.source_size}"
    sidecar = args.save / f"{name}.json"
    if not sidecar.exists():
        z_seed = 0 if args.z == "same" else 1
        fitted, rows = fit_sources(args.source_size, args.sources, args.source_iterations, args.source_operator, z_seed)
        args.save.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            args.save / name,
            fitted.state_dict,
            arch_config=fitted.arch_config,
            input_recipe=fitted.input_recipe,
            inner=fitted.recipe,
            training={
                "algorithm": "converged-source",
                "sources": rows,
                "operator": args.source_operator,
                "z": args.z,
                "size": args.source_size,
            },
        )
    import dev_compare

    return dev_compare.main(["--init", str(sidecar), "--baseline", "random", "--converge", *forwarded])


if __name__ == "__main__":
    sys.exit(main())
