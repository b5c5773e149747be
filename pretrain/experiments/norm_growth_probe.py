"""Probe (issues 16, 17): how far do the filter norms grow during online DIP, and is the long tail that growth?

Every skip-net convolution but the head feeds a BatchNorm with batch statistics, so Adam's effective step on a
filter shrinks as its norm grows (`filter_norm_probe.py`). This probe runs online DIP (any init, its own
recipe) on one development problem and prints the median filter norm (÷ the default init's) along the run; with
``--project C`` it scales every such filter back to C × the default init's norm after each step (spherical
Adam: the effective step stays what it was at that norm), to see whether the iterations to the peak fall.

    OMP_NUM_THREADS=1 PYTHONPATH=evaluate python pretrain/experiments/norm_growth_probe.py --init random \\
        --image phantom-101 --operator "fourier:ratio=0.25,sigma=5" --size 64 --project 0 --project 10
"""

from __future__ import annotations

import argparse
import sys


def run(init: str, image: str, operator: str, size: int, channels: int, project: float, iterations: int) -> dict:
    import dev_compare
    import torch
    from filter_norm_probe import DEFAULT_INIT_FILTER_NORM, filter_norms, reset_filter_norms, scale_invariant_convs

    from metadip import api, dip
    from metadip.evaluation import load_clean, make_problem
    from metadip.stopping import Converged

    norms: dict[int, float] = {}
    plain_fit = dip.fit

    def fit(net, *args, **kwargs):
        convs = scale_invariant_convs(net)
        given = kwargs.get("callback")

        def watch(iteration, estimate, row, current):
            if project > 0:
                reset_filter_norms(net, project * DEFAULT_INIT_FILTER_NORM)
            if iteration in (1, 10, 100, 300, 1000, 2000, 3000, 5000) or iteration % 1000 == 0:
                ratio = torch.cat([filter_norms(c) for c in convs]) / DEFAULT_INIT_FILTER_NORM
                norms[iteration] = float(ratio.median())
            if given is not None:
                given(iteration, estimate, row, current)

        kwargs["callback"] = watch
        return plain_fit(net, *args, **kwargs)

    dip.fit = fit
    try:
        torch.manual_seed(0)
        item = dev_compare.image_item(image)
        x = load_clean(item, size, channels)
        op, y = make_problem(x, operator, 0, item.name)
        result = api.reconstruct(
            y, op, init=init, iterations=iterations, stop=Converged(), seed=0, reference=x, ssim_every=10
        )
    finally:
        dip.fit = plain_fit
    curve = list(result.history["psnr"])
    return {"curve": curve, "norms": norms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", default="random")
    parser.add_argument("--image", default="phantom-101")
    parser.add_argument("--operator", default="fourier:ratio=0.25,sigma=5")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--project", type=float, action="append", help="filter norm to hold (× default); 0: none")
    args = parser.parse_args(argv)
    for project in args.project or [0.0]:
        out = run(args.init, args.image, args.operator, args.size, args.channels, project, args.iterations)
        curve = out["curve"]
        peak = max(curve)
        first = {d: next(i + 1 for i, v in enumerate(curve) if v >= peak - d) for d in (2.0, 1.0, 0.5)}
        print(
            f"project={project:g} peak={peak:.2f}@{curve.index(peak) + 1} within 2/1/0.5 dB at {first} "
            f"at_100={curve[99]:.2f} norms={ {k: round(v, 2) for k, v in sorted(out['norms'].items())} }",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
