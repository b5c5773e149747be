"""Probe (issue 16, log entry 57): is a plug-and-play BM3D reconstruction a classical estimate that beats random DIP
on the families where BM3D-in-z cannot help (inpainting, deblurring, super-resolution)?

Entry 53's design (a classical estimate in the conditioned z) kept DIP's peak on denoising because BM3D alone is at
or above random DIP's converged peak there. This probe asks whether the same holds elsewhere for the strongest
classical method that needs no training: half-quadratic splitting with BM3D as the denoiser (PnP-HQS; Zhang et al.,
"Learning deep CNN denoiser prior", CVPR 2017, with BM3D in place of the CNN), K = 24 iterations, the denoiser's σ
geometrically from 40/255 to max(σ_y, 1/255), the data step ``(AᵀA + ρ I) x = Aᵀy + ρ v`` by conjugate gradients
with ``ρ = λ max(σ_y, 0.5/255)² / σ_k²``, started from the clean-oracle Tikhonov image (biharmonic fill for
inpainting). Prints, per ``outside`` development crop (64 px, the dev_compare measurements), the start's and
PnP's PSNR for each λ; compare with random DIP's converged peaks in ``runs/curves`` (dev_compare's cache).

    OMP_NUM_THREADS=1 python pretrain/experiments/pnp_bm3d_probe.py "inpaint:ratio=0.5;superres:factor=4" 0.1,1
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "evaluate"))

from dev_compare import image_item, outside_images  # noqa: E402

from metadip import metrics  # noqa: E402
from metadip.baselines import biharmonic_fill, tikhonov_best  # noqa: E402
from metadip.denoisers import bm3d_denoise  # noqa: E402
from metadip.evaluation import load_clean, make_problem  # noqa: E402

ITERATIONS = 24
SIGMA_START = 40 / 255


def conjugate_gradients(apply, rhs: torch.Tensor, start: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Solve ``apply(x) = rhs`` (symmetric positive definite) from ``start``."""
    x = start.clone()
    residual = rhs - apply(x)
    direction = residual.clone()
    norm = (residual * residual).sum()
    for _ in range(iterations):
        mapped = apply(direction)
        step = norm / (direction * mapped).sum().clamp_min(1e-20)
        x = x + step * direction
        residual = residual - step * mapped
        new_norm = (residual * residual).sum()
        if float(new_norm.sqrt()) < 1e-7:
            break
        direction = residual + (new_norm / norm) * direction
        norm = new_norm
    return x


def pnp_bm3d(y: torch.Tensor, op, start: torch.Tensor, weight: float) -> torch.Tensor:
    """PnP-HQS with BM3D (see the module docstring); 1×C×H×W in [0, 1]."""
    sigma_y = op.sigma / 255
    levels = np.geomspace(SIGMA_START, max(sigma_y, 1 / 255), ITERATIONS)
    back = op.A_adjoint(y).real
    estimate = start.clone()
    for level in levels:
        rho = weight * max(sigma_y, 0.5 / 255) ** 2 / level**2
        normal = lambda u, rho=rho: op.A_adjoint(op.A(u)).real + rho * u  # noqa: E731
        x = conjugate_gradients(normal, back + rho * estimate, estimate)
        denoised = bm3d_denoise(x[0].permute(1, 2, 0).clamp(0, 1).double().numpy(), float(level))
        estimate = torch.from_numpy(denoised).permute(2, 0, 1)[None].float()
    return estimate


def main(operators: list[str], weights: list[float], size: int = 64) -> None:
    folder = Path(tempfile.mkdtemp())
    for operator in operators:
        for image in outside_images(folder):
            item = image_item(image)
            x = load_clean(item, size, 3)
            op, y = make_problem(x, operator, 0, item.name)
            start = biharmonic_fill(y, op) if operator.startswith("inpaint") else tikhonov_best(x, y, op)[0]
            row: dict = {"operator": operator, "image": item.name, "start": round(metrics.psnr(start, x), 2)}
            for weight in weights:
                began = time.perf_counter()
                row[f"pnp_lambda_{weight:g}"] = round(metrics.psnr(pnp_bm3d(y, op, start, weight), x), 2)
                row["seconds"] = round(time.perf_counter() - began, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(";"), [float(w) for w in sys.argv[2].split(",")])
