"""Probe (issue 17): does a fixed-z Reptile init keep its head start with another z — at another picture size?

``phantom-fourier-reptile`` stores the one noise z it was meta-trained with (64 px), so it refuses 128 px
pictures. (At the training size the init's own input seed redraws exactly the stored z: pass ``--z-seed`` to
draw another.) This probe writes a copy of an init whose sidecar says ``z_mode = "resample"`` and whose weights hold
no z: online DIP then draws a fresh z of the picture's size from the init's input recipe (as random init does)
and starts from θ0. It then runs ``evaluate/dev_compare.py`` on the phantom development set (phantom-101 and up)
against random init, both to convergence. If θ0 keeps DIP's peak with a fresh z, one init serves every size.

    OMP_NUM_THREADS=1 PYTHONPATH=evaluate python pretrain/experiments/fresh_z_probe.py \\
        --init phantom-fourier-reptile --size 128 --cache runs/curves --out runs/fresh-z-128.json

``phantom-fourier-reptile`` is retired (seventeenth session): re-export it first with
``pretrain/experiments/phantom-fourier-reptile.toml`` into ``METADIP_CHECKPOINTS``, or pass another fixed-z init
(e.g. ``phantom-fourier-complex-reptile``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path


def resample_variant(init: str, folder: Path, z_seed: int | None = None) -> str:
    """A copy of fixed-z checkpoint ``init`` in ``folder`` that draws its z per picture (z_mode ``resample``),
    from input seed ``z_seed`` (None: the init's own, which redraws the stored z at the training size)."""
    from safetensors.torch import load_file, save_file

    from metadip.checkpoint import Z_KEY, resolve_checkpoint

    sidecar = resolve_checkpoint(init)
    meta = json.loads(sidecar.read_text())
    weights = sidecar.with_name(meta.get("weights") or sidecar.stem + ".safetensors")
    tensors = load_file(str(weights))
    if tensors.pop(Z_KEY, None) is None:
        raise SystemExit(f"{init}: stores no fixed z; nothing to probe")
    name = meta["name"] + "-fresh-z"
    out = folder / f"{name}.safetensors"
    save_file(tensors, str(out))
    meta.update(
        name=name,
        weights=out.name,
        z_mode="resample",
        sha256=hashlib.sha256(out.read_bytes()).hexdigest(),
    )
    meta.pop("fixed_z_shape", None)
    if z_seed is not None:
        meta["input"]["seed"] = z_seed
    (folder / f"{name}.json").write_text(json.dumps(meta))
    return str(folder / f"{name}.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", default="phantom-fourier-reptile")
    parser.add_argument("--images", default="phantom-101,phantom-102")
    parser.add_argument("--operators", default="fourier:ratio=0.25,sigma=5;fourier:ratio=0.25,pattern=points,sigma=5")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--z-seed", type=int, default=None, help="input seed of the fresh z (default: the init's)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--baseline-iterations", type=int, default=6000)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import dev_compare

    with tempfile.TemporaryDirectory() as tmp:
        variant = resample_variant(args.init, Path(tmp), args.z_seed)
        forwarded = [
            "--init", variant, "--images", args.images, "--operators", args.operators,
            "--size", str(args.size), "--channels", str(args.channels), "--seeds", str(args.seeds),
            "--iterations", str(args.iterations), "--baseline", "random",
            "--baseline-iterations", str(args.baseline_iterations), "--converge",
        ]  # fmt: skip
        if args.cache is not None:
            forwarded += ["--cache", str(args.cache)]
        if args.out is not None:
            forwarded += ["--out", str(args.out)]
        return dev_compare.main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
