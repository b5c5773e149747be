"""Probe (issue 16, log entry 65): is BM3D deblurring (regularised inverse + BM3D hard thresholding, then a
regularised Wiener inverse + BM3D Wiener stage; Dabov et al., "Image restoration by sparse 3D transform-domain
collaborative filtering", SPIE 2008) a classical deblurring estimate at or above random DIP's peak, as BM3D is for
denoising (entry 53)? The ``bm3d`` package's own ``bm3d_deblurring`` fails with its installed ``bm4d``
(NumPy 2 has no ``trapz``; the Wiener stage's pilot has the wrong shape), so the same two stages are written here per
channel, with the package's regularisation constants. Prints, per ``outside`` development crop (64 px, the
dev_compare measurements, seed 0), its PSNR and the Tikhonov estimate's (universal-slim-tikhonov's λ rule);
compare with random DIP's peak in ``runs/curves``.

    OMP_NUM_THREADS=2 python pretrain/experiments/bm3d_deblur_probe.py "deblur:kernel=gauss,width=2,sigma=2"
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from numpy.fft import fft2, ifft2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "evaluate"))

from dev_compare import image_item, outside_images  # noqa: E402

from metadip import metrics  # noqa: E402
from metadip.conditioning import tikhonov_estimate  # noqa: E402
from metadip.evaluation import load_clean, make_problem  # noqa: E402

if not hasattr(np, "trapz"):  # bm4d (under bm3d) still calls np.trapz, removed in NumPy 2
    np.trapz = np.trapezoid
import bm3d  # noqa: E402

ALPHA_RI, ALPHA_RWI = 4e-4, 5e-3  # the bm3d package's constants


def bm3d_deblur(blurred: np.ndarray, sigma: float, psf: np.ndarray) -> np.ndarray:
    """Two-stage BM3D deblurring of one H×W channel with a circular blur ``psf`` and white noise of std σ."""
    height, width = blurred.shape
    psd = np.full((height, width), sigma**2 * height * width)
    torus = np.zeros((height, width))
    torus[: psf.shape[0], : psf.shape[1]] = psf
    torus = np.roll(torus, (-(psf.shape[0] // 2), -(psf.shape[1] // 2)), axis=(0, 1))
    transfer = fft2(torus)
    inverse = np.conj(transfer) / (np.abs(transfer) ** 2 + ALPHA_RI * psd + 1e-12)
    regularised = np.real(ifft2(fft2(blurred) * inverse))
    pilot = np.asarray(
        bm3d.bm3d(regularised, psd * np.abs(inverse) ** 2, stage_arg=bm3d.BM3DStages.HARD_THRESHOLDING)
    ).reshape(height, width)
    spectrum = np.abs(fft2(pilot)) ** 2
    wiener = np.conj(transfer) * spectrum / (spectrum * np.abs(transfer) ** 2 + ALPHA_RWI * psd + 1e-12)
    filtered = np.real(ifft2(fft2(blurred) * wiener))
    return np.asarray(bm3d.bm3d(filtered, psd * np.abs(wiener) ** 2, stage_arg=pilot)).reshape(height, width)


def main(operator: str, size: int = 64) -> None:
    for image in outside_images(Path(tempfile.mkdtemp())):
        item = image_item(image)
        x = load_clean(item, size, 3)
        op, y = make_problem(x, operator, 0, item.name)
        noisy = y[0].permute(1, 2, 0).double().numpy()
        kernel = op.kernel.numpy().astype(np.float64)
        out = np.stack([bm3d_deblur(noisy[..., c], max(op.sigma / 255, 1e-3), kernel) for c in range(3)], -1)
        estimate = torch.from_numpy(np.clip(out, 0, 1)).permute(2, 0, 1)[None].float()
        tikhonov = tikhonov_estimate(op, y, 50.0, 0.003)
        print(
            item.name,
            f"bm3d-deblur {float(metrics.psnr(estimate, x)):.2f}",
            f"tikhonov {float(metrics.psnr(tikhonov, x)):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], *(int(v) for v in sys.argv[2:]))
