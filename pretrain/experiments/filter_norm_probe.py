"""Probe (issues 16, 17): does a meta-learned θ0 adapt online as fast as random init once its filter norms are reset?

Every convolution of the skip nets but the head feeds a BatchNorm with batch statistics, so each output filter's
norm leaves f_θ(z) unchanged but sets Adam's effective step (about lr·√n / ‖w‖ per step). Reptile grows these norms
(the shipped phantom inits: median 5.5–7.4× random init's, up to 19×; the MAML inits ~1.5×), so online DIP from θ0
turns its filters several times slower than from random weights (whose norms settle at ~2× within 100 iterations:
`norm_growth_probe.py`). This probe writes a copy of an init whose filters have ``--scale`` × the default init's
norm (:func:`reset_filter_norms`; the output moves by at most ~0.01 on [0, 1] through BatchNorm's ε) and runs
``evaluate/dev_compare.py`` on it against random init, both to convergence. Result (docs/RESEARCH_LOG.md 84): a
tie or worse — θ0 is tuned to its own norms.

    OMP_NUM_THREADS=1 PYTHONPATH=evaluate python pretrain/experiments/filter_norm_probe.py \\
        --init phantom-fourier-reptile-resample-horizon --scale 1 --images phantom-101 --size 128 --channels 1 \\
        --operators "fourier:ratio=0.25,sigma=5;fourier:ratio=0.25,pattern=points,sigma=5" --seeds 1 \\
        --iterations 6000 --baseline-iterations 6000 --cache runs/curves --out runs/norm-128.json
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

DEFAULT_INIT_FILTER_NORM = 1.0 / math.sqrt(3.0)
"""Root-mean-square norm of one output filter under PyTorch's default Conv2d init (U(±1/√fan_in) per weight)."""


def scale_invariant_convs(net: nn.Module) -> list[nn.Conv2d]:
    """The convolutions of ``net`` whose output goes straight into a BatchNorm2d that normalises with batch
    statistics (``track_running_stats=False``), in module order: each output filter of these may be scaled
    freely without changing ``net``'s output."""
    found: list[nn.Conv2d] = []
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.children())
        for conv, norm in zip(children, children[1:], strict=False):
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(norm, nn.BatchNorm2d)
                and not norm.track_running_stats
                and norm.num_features == conv.out_channels
            ):
                found.append(conv)
    return found


def filter_norms(conv: nn.Conv2d) -> torch.Tensor:
    """Norm of each output filter of ``conv``: its weights and bias together (the scale the BatchNorm removes)."""
    squares = conv.weight.detach().flatten(1).pow(2).sum(dim=1)
    if conv.bias is not None:
        squares = squares + conv.bias.detach().pow(2)
    return squares.sqrt()


@torch.no_grad()
def reset_filter_norms(net: nn.Module, norm: float = DEFAULT_INIT_FILTER_NORM) -> int:
    """Scale every output filter of :func:`scale_invariant_convs` (weights and bias) to norm ``norm`` in place;
    ``net``'s output is unchanged. Returns how many convolutions were rescaled."""
    if not math.isfinite(norm) or norm <= 0:
        raise ValueError(f"filter norm must be a positive number, got {norm!r}")
    convs = scale_invariant_convs(net)
    for conv in convs:
        factor = norm / filter_norms(conv).clamp_min(1e-12)
        conv.weight.mul_(factor.view(-1, *([1] * (conv.weight.dim() - 1))))
        if conv.bias is not None:
            conv.bias.mul_(factor)
    return len(convs)


def renormed_variant(init: str, folder: Path, scale: float) -> str:
    """A copy of ``init`` in ``folder`` with every batch-normalised filter at ``scale`` × the default init's norm."""
    from metadip.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(init)
    net = loaded.build()
    reset_filter_norms(net, scale * DEFAULT_INIT_FILTER_NORM)
    name = f"{loaded.name}-norm{scale:g}"
    training = dict(loaded.training, filter_norm=scale * DEFAULT_INIT_FILTER_NORM)
    _, sidecar = save_checkpoint(
        folder / name,
        net,
        arch_config=loaded.arch_config,
        input_recipe=loaded.input_recipe,
        inner=loaded.recipe,
        training=training,
        z=loaded.z,
        z_mode=loaded.z_mode,
        noise_channels=loaded.noise_channels,
    )
    return str(sidecar)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Every other option goes to evaluate/dev_compare.py."
    )
    parser.add_argument("--init", default="phantom-fourier-reptile-resample")
    parser.add_argument("--scale", type=float, default=1.0, help="target filter norm ÷ the default init's")
    args, forwarded = parser.parse_known_args(argv)

    import dev_compare

    with tempfile.TemporaryDirectory() as tmp:
        variant = renormed_variant(args.init, Path(tmp), args.scale)
        return dev_compare.main(["--init", variant, "--baseline", "random", "--converge", *forwarded])


if __name__ == "__main__":
    sys.exit(main())
