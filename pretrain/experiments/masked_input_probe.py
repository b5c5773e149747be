"""Probe (issue 16, log entry 60): a blind-spot online loop for a measurement-conditioned init, zero-shot.

Why the conditioned inits peak below random DIP on inpainting: z holds an estimate built from the measured pixels,
so the residual network can reproduce every measured pixel by passing it through, and the missing ones get the
estimate's interpolation — a weaker prior than random DIP's. Self2Self (Quan et al., CVPR 2020) and Noise2Self
(Batson & Royer, ICML 2019) remove that shortcut: hide a random share of the measured entries from the input at
every iteration and fit the network on them. Here z is rebuilt at every iteration from the measurement with a fresh
Bernoulli mask (keep share ``--keep``) over the measured entries (``make_conditioned_input``'s ``weight``), the
loss is the data fit on the hidden ones only (``--loss-on hidden``) or on all, and the output is averaged over
iterations (EMA, as the online recipe does). Control: the same loop with the full z (``--keep 1``), which is the
shipped online recipe without its stopping rule. Prints, per ``outside`` crop, the peak PSNR and its iteration;
compare with random DIP's converged peaks (dev_compare's cache).

    OMP_NUM_THREADS=1 python pretrain/experiments/masked_input_probe.py --init universal-slim-long \\
        --operator inpaint:ratio=0.5 --keep 0.5 --iterations 1500

``--tv W`` (log entry 61) adds ``W · TV(f)`` (anisotropic, the mean absolute finite difference) to the loss with the
full z: the zero-shot check before meta-learning a TV weight with the lrs (issue 16, lever 2). ``--lr-halflife N``
(log entry 62) halves every learning rate each N iterations: the check before learning a per-step lr schedule
(lever 5) — the shipped recipes keep their (learned, per-tensor) lrs constant.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "evaluate"))

from dev_compare import image_item, outside_images  # noqa: E402

from metadip import api, metrics  # noqa: E402
from metadip.conditioning import conditioned_channels, make_conditioned_input  # noqa: E402
from metadip.dip import make_optimizer, measurement_loss  # noqa: E402
from metadip.evaluation import load_clean, make_problem  # noqa: E402


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute horizontal and vertical finite difference (anisotropic TV per pixel)."""
    return (image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (image[..., 1:] - image[..., :-1]).abs().mean()


def run(
    init: str,
    image: str,
    operator: str,
    keep: float,
    loss_on: str,
    iterations: int,
    size: int,
    tv: float = 0.0,
    halflife: float = 0.0,
) -> dict:
    item = image_item(image)
    x = load_clean(item, size, 3)
    op, y = make_problem(x, operator, 0, item.name)
    state = api.load_init(init, arch=None, out_channels=3, seed=0, operator=op)
    recipe = state.recipe
    torch.manual_seed(0)
    net, z = api.prepare(state, op, torch.device("cpu"), y)
    noise_channels = int(net.config["in_channels"]) - conditioned_channels(3, 0)
    noise = z[:, conditioned_channels(3, 0) :]
    measured = op.measurement_mask()
    measured = torch.ones_like(y[:, :1]) if measured is None else measured.to(y.dtype)
    optimiser = make_optimizer(
        recipe.optimizer,
        net,
        recipe.lr,
        recipe.lr_per_tensor,
        tensors=list(net.named_parameters()),
        betas=recipe.betas,
        eps=recipe.eps,
    )
    generator = torch.Generator().manual_seed(1)
    average, curve = None, []
    size_hw = tuple(x.shape[-2:])
    base_lrs = [group["lr"] for group in optimiser.param_groups]
    for step in range(iterations):
        if halflife > 0:
            for group, lr in zip(optimiser.param_groups, base_lrs, strict=True):
                group["lr"] = lr * 0.5 ** (step / halflife)
        if keep < 1:
            shown = (torch.rand(measured.shape, generator=generator) < keep).to(y.dtype) * measured
            source = make_conditioned_input(state.input_recipe, op, y, noise_channels, weight=shown)
            source = torch.cat([source[:, : conditioned_channels(3, 0)], noise], 1)
            target = measured - shown if loss_on == "hidden" else measured
        else:
            source, target = z, measured
        if recipe.reg_noise_std > 0:
            source = source + recipe.reg_noise_std * torch.randn(source.shape, generator=generator)
        optimiser.zero_grad(set_to_none=True)
        output = net(source, size=size_hw)
        objective = measurement_loss(op, output, y, target)
        if tv > 0:
            objective = objective + tv * total_variation(output)
        objective.backward()
        optimiser.step()
        with torch.no_grad():
            estimate = output.detach()
            if keep < 1:  # the picture itself: the full z, no hidden entries (what the user gets)
                estimate = net(z, size=size_hw)
            average = estimate if average is None else recipe.ema * average + (1 - recipe.ema) * estimate
            curve.append(metrics.psnr(average.clamp(0, 1), x))
    peak = max(range(len(curve)), key=curve.__getitem__)
    return {
        "image": item.name,
        "peak": round(curve[peak], 2),
        "peak_iteration": peak + 1,
        "at_100": round(curve[min(99, len(curve) - 1)], 2),
        "final": round(curve[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="universal-slim-long")
    parser.add_argument("--operator", default="inpaint:ratio=0.5")
    parser.add_argument("--keep", type=float, default=0.5, help="share of the measured entries shown in z")
    parser.add_argument("--loss-on", choices=("hidden", "all"), default="hidden")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--tv", type=float, default=0.0, help="weight of a TV term in the loss")
    parser.add_argument("--lr-halflife", type=float, default=0.0, help="halve the lrs every N iterations (0: never)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    for image in outside_images(folder):
        row = run(
            args.init,
            image,
            args.operator,
            args.keep,
            args.loss_on,
            args.iterations,
            args.size,
            args.tv,
            args.lr_halflife,
        )
        extra = {"tv": args.tv, "lr_halflife": args.lr_halflife}
        print(json.dumps({"keep": args.keep, "loss_on": args.loss_on, **extra, **row}), flush=True)


if __name__ == "__main__":
    main()
