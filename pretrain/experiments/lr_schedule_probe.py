"""Probe (issue 17, 128 px): is DIP's long 128 px tail the optimiser's step noise — does a decaying online lr
shorten it, for random init and for a meta-learned θ0?

At 128 px random DIP needs ~1,500 iterations to reach its peak − 2 dB and ~2,600 for − 0.5 dB; the phantom inits
start ~700 iterations ahead and then climb as slowly (research log 85–87). If the tail were Adam wandering at a
fixed lr (the EMA of the outputs only averages that), multiplying every lr by ``--factor`` each ``--every``
iterations from ``--start`` on would reach the peak sooner. This probe runs ``evaluate/dev_compare.py`` with that
schedule patched into the online optimiser of every init it runs (``random`` included); the baseline (random init,
read from or written to ``--cache``) keeps the paper's constant lr. Result (docs/RESEARCH_LOG.md 88): slower for
both arms — random init's peak −0.77 / −0.78 dB at 128 px: the tail is a slow ascent, not step noise.

    OMP_NUM_THREADS=1 PYTHONPATH=evaluate python pretrain/experiments/lr_schedule_probe.py \\
        --start 1000 --every 500 --factor 0.5 --init random --images phantom-101 --size 128 --channels 1 \\
        --operators "fourier:ratio=0.25,sigma=5" --seeds 1 --iterations 6000 --baseline-iterations 6000 \\
        --cache runs/curves --out runs/lr-schedule-random-128.json
"""

from __future__ import annotations

import argparse
import sys


def lr_factor(step: int, start: int, every: int, factor: float) -> float:
    """The lr multiplier at optimiser step ``step`` (1-based): 1 before ``start``, then ``factor`` per ``every``."""
    if step <= start:
        return 1.0
    return factor ** ((step - start - 1) // every + 1)


def patch_schedule(start: int, every: int, factor: float) -> dict:
    """Make every optimiser :func:`metadip.dip.make_optimizer` builds scale its base lrs by :func:`lr_factor`
    while the returned switch's ``"on"`` is true."""
    from metadip import dip

    build = dip.make_optimizer
    switch = {"on": True}

    def scheduled(*args, **kwargs):
        optimizer = build(*args, **kwargs)
        if not switch["on"]:
            return optimizer
        base = [group["lr"] for group in optimizer.param_groups]
        step = optimizer.step
        count = 0

        def scheduled_step(*step_args, **step_kwargs):
            nonlocal count
            count += 1
            scale = lr_factor(count, start, every, factor)
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                group["lr"] = lr * scale
            return step(*step_args, **step_kwargs)

        optimizer.step = scheduled_step
        return optimizer

    dip.make_optimizer = scheduled
    return switch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Every other option goes to evaluate/dev_compare.py."
    )
    parser.add_argument("--start", type=int, default=1000, help="iterations at the constant lr")
    parser.add_argument("--every", type=int, default=500, help="iterations between lr cuts")
    parser.add_argument("--factor", type=float, default=0.5, help="lr multiplier per cut")
    args, forwarded = parser.parse_known_args(argv)
    import dev_compare

    switch = patch_schedule(args.start, args.every, args.factor)
    read_cache = dev_compare.cached_curve

    def constant_lr_baseline(*case):
        switch["on"] = False
        try:
            return read_cache(*case)
        finally:
            switch["on"] = True

    dev_compare.cached_curve = constant_lr_baseline
    return dev_compare.main(["--baseline", "random", "--converge", *forwarded])


if __name__ == "__main__":
    sys.exit(main())
