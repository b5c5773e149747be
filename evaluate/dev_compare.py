"""Compare initialisations on a DEVELOPMENT set: training pictures, for choosing between recipes.

`metadip evaluate` refuses the pictures an init was meta-trained on, and rightly so: its numbers are the
reported ones. Choosing between two candidate recipes must not look at those held-out pictures either (that
would tune on the test set), so this script runs the candidates on crops of *training* pictures instead, with
the same operators, measurement seeds and DIP loop as the evaluation. Its numbers are optimistic for every
meta-learned candidate alike (they saw these pictures) and are only good for ranking candidates; never quote
them as results.

    python evaluate/dev_compare.py --init universal-slim --init /tmp/ck/new.safetensors \
        --iterations 300 --out evaluate/results/dev-universal-slim-maps.json

Prints, per operator, the median over pictures × seeds of the peak PSNR, the PSNR at iterations 10 / 50 / 100,
and the iteration of the peak, for each candidate; writes the same as JSON with ``--out``. With ``--baseline``
(e.g. ``random``, run for ``--baseline-iterations``) it also reports the evaluation's own criteria per case:
Δ peak against the baseline and the speedup to the baseline's peak − 0.5 dB.

``--images`` also takes image files (any path with a slash) and procedural phantoms ``phantom-K`` (the phantom
suites hold out phantom-1..4; phantom-101 and up are the phantom development set). ``--images outside`` is a
development set that is in neither the training nor the held-out list: four crops (face, uniform, left, whole)
of the photograph ``grace_hopper.jpg`` that matplotlib bundles — no picture an init was trained or tested on.
``--channels 1`` runs grey pictures (luminance), for grey inits and grey random init.
``--lr-scale`` / ``--ema`` / ``--jitter`` / ``--adapt`` try another online recipe for the same weights (a copy of the
checkpoint with an edited sidecar, in a temporary folder; ``--adapt`` sets the adaptation mode, see
``metadip/adaptation.py``). ``--converge`` runs every curve until its PSNR has passed its peak (the evaluation's
rule: no 0.01 dB gain for max(500, half the iterations so far)), ``--iterations`` /
``--baseline-iterations`` being the caps — use it so that Δ and speedups are against random's real peak.
``--cache DIR`` keeps the baseline's curves (one JSON per case) so later comparisons reuse them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
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


#: Crops (top, left, side) of matplotlib's bundled grace_hopper.jpg (600×512): the ``outside`` development set.
OUTSIDE_CROPS = {
    "gh_face": (60, 130, 256),
    "gh_uniform": (330, 100, 256),
    "gh_left": (100, 0, 200),
    "gh_whole": (44, 0, 512),
}


def outside_images(folder: Path) -> list[str]:
    """Write the ``outside`` crops as PNGs into ``folder``; their paths."""
    import matplotlib
    from skimage import io

    photo = io.imread(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    paths = []
    for name, (top, left, side) in OUTSIDE_CROPS.items():
        path = folder / f"{name}.png"
        io.imsave(path, photo[top : top + side, left : left + side], check_contrast=False)
        paths.append(str(path))
    return paths


def image_item(image: str):
    from metadip.evaluation import ImageItem
    from metadip.phantoms import held_out_index

    if "/" in image:
        return ImageItem(name=Path(image).stem, kind="file", path=image)
    if held_out_index(image) is not None:  # a procedural phantom (development: phantom-101 and up)
        return ImageItem(name=image.lower(), kind="phantom")
    return ImageItem(name=image, kind="sample")


def run_curve(
    init: str,
    image: str,
    operator: str,
    seed: int,
    size: int,
    iterations: int,
    channels: int = 3,
    converge: bool = False,
) -> list[float]:
    import torch

    from metadip import api
    from metadip.evaluation import load_clean, make_problem

    torch.manual_seed(seed)
    item = image_item(image)
    x = load_clean(item, size, channels)
    op, y = make_problem(x, operator, seed, item.name)
    from metadip.stopping import Converged

    stop = Converged() if converge else "budget"
    result = api.reconstruct(y, op, init=init, iterations=iterations, stop=stop, seed=seed, reference=x, ssim_every=10)
    return list(result.history["psnr"])


def cached_curve(cache: Path | None, *case) -> list[float]:
    """:func:`run_curve` of ``case`` (its arguments, in order), read from / written to ``cache`` (a folder; None: no
    cache). Only for an init that its name fixes (``random``, a shipped init): the key is the name, not the
    weights."""
    if cache is None:
        return run_curve(*case)
    import json
    import re

    init, image, operator, seed, size, iterations, channels, converge = (*case, 3, False)[:8]
    key = f"{init}|{image_item(image).name}|{operator}|{seed}|{size}|{channels}|{iterations}|{int(converge)}"
    path = cache / (re.sub(r"[^A-Za-z0-9.=-]+", "_", key) + ".json")
    if path.exists():
        return json.loads(path.read_text())
    curve = run_curve(*case)
    cache.mkdir(parents=True, exist_ok=True)
    from metadip.fileio import atomic_write_json

    atomic_write_json(path, curve)
    return curve


def summarise(curve: list[float], baseline: list[float] | None = None) -> dict:
    peak = max(range(len(curve)), key=curve.__getitem__)
    row = {
        "peak": curve[peak],
        "peak_iteration": peak + 1,
        **{f"at_{m}": curve[min(m, len(curve)) - 1] for m in MARKS},
    }
    if baseline is not None:
        from metadip import metrics

        row["delta_peak"] = curve[peak] - max(baseline)
        row["speedup"] = metrics.speedup(baseline, curve)
    return row


def recipe_variant(
    init: str,
    lr_scale: float,
    ema: float | None,
    folder: Path,
    adapt: str | None = None,
    loss: str | None = None,
    jitter: float | None = None,
) -> str:
    """A copy of checkpoint ``init`` whose online recipe has its lr(s) × ``lr_scale``, EMA ``ema``, adaptation
    mode ``adapt``, loss ``loss`` and input jitter ``jitter`` (the std of z's per-iteration noise)."""
    import json
    import shutil

    from metadip.checkpoint import resolve_checkpoint

    sidecar = resolve_checkpoint(init)
    meta = json.loads(sidecar.read_text())
    inner = meta["inner"]
    inner["lr"] = float(inner.get("lr", 0.01)) * lr_scale
    if inner.get("lr_per_tensor"):
        inner["lr_per_tensor"] = {k: v * lr_scale for k, v in inner["lr_per_tensor"].items()}
    if ema is not None:
        inner["ema"] = ema
    if adapt is not None:
        inner["adapt"] = adapt
    if loss is not None:
        inner["loss"] = loss
    if jitter is not None:
        inner["reg_noise_std"] = jitter
    weights = sidecar.with_name(meta.get("weights") or sidecar.stem + ".safetensors")
    shutil.copy(weights, folder / weights.name)
    (folder / sidecar.name).write_text(json.dumps(meta))
    return str(folder / sidecar.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", action="append", required=True, help="init name or path (repeat); 'random' too")
    parser.add_argument("--images", default=",".join(DEV_IMAGES), help="training pictures (comma separated)")
    parser.add_argument("--operators", default=";".join(DEV_OPERATORS), help="operator specs, ';' separated")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1: grey pictures (luminance)")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--baseline", default=None, help="also run this init (e.g. random) and report Δ/speedup")
    parser.add_argument("--baseline-iterations", type=int, default=1000)
    parser.add_argument("--lr-scale", type=float, default=1.0, help="multiply the candidates' online lr(s)")
    parser.add_argument("--ema", type=float, default=None, help="override the candidates' online EMA")
    parser.add_argument("--jitter", type=float, default=None, help="override the candidates' z jitter (std)")
    parser.add_argument(
        "--adapt",
        action="append",
        default=None,
        help="adaptation mode (all|norm|input) for the candidates: once for all, or once per --init, in order",
    )
    parser.add_argument(
        "--loss",
        action="append",
        default=None,
        help="online loss (mse|sure) for the candidates: once for all, or once per --init, in order",
    )
    parser.add_argument("--converge", action="store_true", help="run each curve until its peak has passed (capped)")
    parser.add_argument("--out", type=Path, default=None, help="write the medians (and every case) as JSON")
    parser.add_argument("--cache", type=Path, default=None, help="folder of baseline curves to reuse between runs")
    args = parser.parse_args(argv)

    def per_init(values: list[str] | None, option: str) -> list[str | None]:
        """An option given once (for every candidate) or once per --init, as one value per --init."""
        values = values or [None]
        if len(values) not in (1, len(args.init)):
            parser.error(f"give {option} once, or once per --init")
        return values * len(args.init) if len(values) == 1 else values

    adapts, losses = per_init(args.adapt, "--adapt"), per_init(args.loss, "--loss")
    sys.path.insert(0, str(ROOT))
    from metadip.errors import MetadipError
    from metadip.fileio import atomic_write_json

    scratch = tempfile.TemporaryDirectory()
    images = [s.strip() for s in args.images.split(",") if s.strip()]
    if "outside" in images:
        at = images.index("outside")
        images[at : at + 1] = outside_images(Path(scratch.name))
    operators = [s.strip() for s in args.operators.split(";") if s.strip()]
    report: dict = {
        "images": [image_item(i).name for i in images],
        "seeds": args.seeds,
        "size": args.size,
        "channels": args.channels,
        "iterations": args.iterations,
        "lr_scale": args.lr_scale,
        "ema": args.ema,
        "jitter": args.jitter,
        "adapt": adapts,
        "loss": losses,
        "converge": args.converge,
        "baseline": args.baseline,
        "inits": {},
    }
    cases_of = [(image, seed) for image in images for seed in range(args.seeds)]
    try:
        baselines: dict = {}
        if args.baseline:
            for operator in operators:
                for image, seed in cases_of:
                    curve = cached_curve(
                        args.cache,
                        args.baseline,
                        image,
                        operator,
                        seed,
                        args.size,
                        args.baseline_iterations,
                        args.channels,
                        args.converge,
                    )
                    baselines[operator, image, seed] = curve
            for op in operators:
                rows = [summarise(baselines[op, i, s]) for i, s in cases_of]
                report.setdefault("baseline_cases", {})[op] = [
                    {"image": image_item(i).name, "seed": s, **row} for (i, s), row in zip(cases_of, rows, strict=True)
                ]
                peaks = " ".join(f"{r['peak']:.2f}@{r['peak_iteration']}" for r in rows)
                print(f"{args.baseline:28s} {op:40s} peaks {peaks}", flush=True)
        for number, (init, adapt, loss) in enumerate(zip(args.init, adapts, losses, strict=True)):
            run_init = init
            edited = args.lr_scale != 1.0 or args.ema is not None or args.jitter is not None
            edited = edited or adapt is not None or loss is not None
            if init != "random" and edited:
                folder = Path(scratch.name) / str(number)
                folder.mkdir()
                run_init = recipe_variant(init, args.lr_scale, args.ema, folder, adapt, loss, args.jitter)
            per_op = {}
            for operator in operators:
                cases = [
                    {
                        "image": image_item(image).name,
                        "seed": seed,
                        **summarise(
                            run_curve(
                                run_init,
                                image,
                                operator,
                                seed,
                                args.size,
                                args.iterations,
                                args.channels,
                                args.converge,
                            ),
                            baselines.get((operator, image, seed)),
                        ),
                    }
                    for image, seed in cases_of
                ]
                medians = {k: statistics.median(c[k] for c in cases) for k in cases[0] if k not in ("image", "seed")}
                per_op[operator] = {"median": medians, "cases": cases}
                cells = " ".join(f"{k}={v:.2f}" for k, v in medians.items())
                label = Path(init).stem + (f"[{adapt}]" if adapt else "") + (f"[{loss}]" if loss else "")
                print(f"{label:28s} {operator:40s} {cells}", flush=True)
            key = init + (f"[adapt={adapt}]" if adapt else "") + (f"[loss={loss}]" if loss else "")
            report["inits"][key] = per_op
        scratch.cleanup()
    except MetadipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
