"""Measurement-conditioned network inputs.

Classic DIP feeds the generator pure noise z, so every image must be written into the weights by gradient
steps. The ``conditioned`` input recipe instead builds z from the measurement: an image estimate (y itself for
image-space operators — denoising, inpainting, deblurring —, else the normalised back-projection Aᴴy / AᴴA1: a
smooth upsampling for super-resolution, the zero-filled inverse FFT for partial Fourier; unseen pixels filled
with the channel mean), the relative normaliser AᴴA1 (where the operator sees the image, e.g. the inpainting
mask) and ``noise_channels`` channels of the recipe's noise. With a ``residual`` generator the network predicts
a correction of the estimate's logit.
With ``InputRecipe.lowpass`` = s > 0 the estimate is smoothed by a Gaussian normalised convolution of std s
pixels, G∗(m·e) / G∗m over the seen pixels m (this also fills inpainting holes from their neighbourhood). The
network then sees no pixel-level noise to copy: the fine detail of its output has to be generated, as in
classic DIP, so fitting the noise in y stays slow (spectral bias) while the coarse image is there from the start.
With ``InputRecipe.estimate`` = ``tikhonov`` the estimate is instead the regularised least-squares image
argmin ‖A x − y‖² + λ‖∇x‖², λ = ``tikhonov_floor`` + ``tikhonov_noise``·σ̂² (σ̂ estimated from y;
:func:`tikhonov_estimate`): one rule for every linear operator that smooths in proportion to the noise, and
interpolates, fills holes, deconvolves and suppresses Fourier aliasing where the back-projection cannot.
With ``estimate`` = ``bm3d`` (denoising only) the estimate is BM3D of y at σ̂ (:func:`bm3d_estimate`): a
classical denoiser that on 64-128 px photographs at σ = 25 already matches random-init DIP's peak, so the
network starts from it and DIP refines it.
z stays fixed during the fit and the loss is still only ‖A f(z) − y‖²: the prior is the architecture plus the
meta-learned θ0, and early stopping is still the regulariser. A meta-learned θ0 trained with this recipe starts
close to a reconstruction, which is what makes the first few DIP steps count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from metadip.denoisers import BM3D_MIN_SIZE, bm3d_available, bm3d_denoise, bm3d_denoise_poisson
from metadip.errors import MetadipError
from metadip.generators.inputs import InputRecipe, make_input

BACKPROJECTION = "backprojection"


def backprojection(
    op, y: torch.Tensor, floor: float = 0.05, weight: torch.Tensor | None = None, lowpass: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image estimate from y and the relative normaliser AᴴA1 / max(AᴴA1), both real B×C×H×W.

    The estimate is y itself when the measurement lives in image space (denoise, inpaint, deblur), else the
    normalised back-projection Aᴴy / AᴴA1 (super-resolution: a smooth upsampling; Fourier: zero-filled iFFT).

    Where the operator does not see the image (normaliser below ``floor`` of its maximum: inpainting holes, the
    unobserved border of a non-divisible super-resolution) the back-projection is filled with the mean of the
    seen pixels of its channel. ``weight`` (broadcastable to y, 1 = use) hides measurements from the input —
    the entries the hold-out stopping rule keeps out of the loss must not leak into z either. ``lowpass`` > 0
    replaces the estimate by its Gaussian normalised convolution over the seen pixels (std in pixels).
    """
    channels, height, width = op.image_shape
    ones = torch.ones(1, channels, height, width, device=y.device)
    with torch.no_grad():
        sampled = op.A(ones)
        if weight is not None:
            weight = weight.to(device=y.device, dtype=torch.float32)
            y = y * weight
            sampled = sampled * weight
        raw = op.A_adjoint(sampled).real
        normaliser = raw / raw.amax().clamp_min(1e-12)
        seen = normaliser > floor
        if not y.is_complex() and tuple(y.shape[-3:]) == tuple(op.image_shape):
            image = y.clone()  # image-space measurement (denoise, inpaint, deblur): y itself, not AᴴA-blurred
            if weight is not None:
                seen = seen & (weight.expand_as(image) > 0)
        else:
            image = op.A_adjoint(y).real / raw.clamp_min(1e-12)
        image = torch.where(seen, image, torch.zeros_like(image))
        count = seen.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
        fill = (image * seen).sum(dim=(-2, -1), keepdim=True) / count
        if lowpass > 0:
            image = lowpass_estimate(image, seen, lowpass, fill)
        else:
            image = torch.where(seen, image, fill.expand_as(image))
    return image.clamp(0, 1), normaliser.clamp(0, 1)


def gaussian_kernel1d(sigma: float, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian of std ``sigma`` pixels, radius ⌈3σ⌉ capped so reflection padding fits ``size``."""
    radius = max(1, min(int(math.ceil(3.0 * sigma)), size - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a real B×C×H×W tensor with reflection padding (same size out)."""
    if sigma <= 0:
        return image
    _, channels, height, width = image.shape
    out = image
    for axis, size in ((-1, width), (-2, height)):
        if size < 2:
            continue
        kernel = gaussian_kernel1d(sigma, size).to(device=image.device, dtype=image.dtype)
        radius = (kernel.numel() - 1) // 2
        if axis == -1:
            weight = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
            padded = F.pad(out, (radius, radius, 0, 0), mode="reflect")
        else:
            weight = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
            padded = F.pad(out, (0, 0, radius, radius), mode="reflect")
        out = F.conv2d(padded, weight, groups=channels)
    return out


def lowpass_estimate(image: torch.Tensor, seen: torch.Tensor, sigma: float, fill: torch.Tensor) -> torch.Tensor:
    """Gaussian normalised convolution G∗(seen·image) / G∗seen; where almost nothing is seen nearby, ``fill``
    (the channel mean of the seen pixels, B×C×1×1)."""
    mask = seen.to(image.dtype).expand_as(image)
    numerator = gaussian_blur(image * mask, sigma)
    denominator = gaussian_blur(mask, sigma)
    covered = denominator > 1e-3
    smooth = numerator / denominator.clamp_min(1e-3)
    return torch.where(covered, smooth, fill.expand_as(image))


def conditioned_channels(image_channels: int, noise_channels: int) -> int:
    """Total z channels of a conditioned recipe: image estimate + normaliser (``image_channels`` each) + noise."""
    return 2 * image_channels + noise_channels


def estimate_noise_level(image: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Std of additive white noise in a real B×C×H×W image, per batch item (B×1×1×1): the median absolute
    finest diagonal Haar coefficient / 0.6745 (Donoho's robust estimator), over 2×2 blocks that are fully
    ``seen`` (boolean, broadcastable). Image structure inflates it a little, in training as online alike."""
    batch = image.shape[0]
    height, width = image.shape[-2] // 2 * 2, image.shape[-1] // 2 * 2
    if height == 0 or width == 0:
        return image.new_zeros(batch, 1, 1, 1)
    x = image[..., :height, :width]
    diagonal = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    if seen is None:
        ok = torch.ones_like(diagonal, dtype=torch.bool)
    else:
        m = seen.expand_as(image)[..., :height, :width]
        ok = m[..., 0::2, 0::2] & m[..., 0::2, 1::2] & m[..., 1::2, 0::2] & m[..., 1::2, 1::2]
    levels = []
    for b in range(batch):
        values = diagonal[b][ok[b]].abs()
        levels.append(values.median() / 0.6745 if values.numel() else image.new_zeros(()))
    return torch.stack(levels).view(batch, 1, 1, 1)


def _normal_operator(op, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Aᴴ(w·A x) (real part), with w = ``weight`` or 1."""
    measured = op.A(x)
    if weight is not None:
        measured = measured * weight
    return op.A_adjoint(measured).real


def measurement_noise_level(op, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """B×1×1×1 estimated std of the noise in y (:func:`estimate_noise_level`), from the measurement alone: on y
    itself when it is an image (denoise / inpaint / deblur) or a smaller one (super-resolution), over its
    seen and not hidden entries; on the back-projection for a complex measurement (partial Fourier)."""
    with torch.no_grad():
        if not y.is_complex():
            seen = None
            mask = op.measurement_mask()
            if mask is not None and tuple(mask.shape[-2:]) == tuple(y.shape[-2:]):
                seen = mask.to(y.device) > 0
            if weight is not None:
                visible = weight.to(y.device).expand_as(y) > 0
                seen = visible if seen is None else seen & visible
            return estimate_noise_level(y, seen)
        estimate, _ = backprojection(op, y, weight=weight)
        return estimate_noise_level(estimate)


#: Conjugate-gradient budget and relative tolerance of :func:`tikhonov_estimate` (it converges in tens of
#: iterations at 64-256 px, so the estimate does not depend on the budget).
TIKHONOV_MAX_ITERATIONS = 200
TIKHONOV_TOLERANCE = 1e-6


def _gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along width and height (zero across the last column / row: Neumann boundary)."""
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return dx, dy


def _gradient_adjoint(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """∇ᴴ of :func:`_gradient` (minus the divergence), so ∇ᴴ∇ is the Neumann Laplacian."""
    out = torch.zeros_like(dx)
    out[..., :, :-1] -= dx[..., :, :-1]
    out[..., :, 1:] += dx[..., :, :-1]
    out[..., :-1, :] -= dy[..., :-1, :]
    out[..., 1:, :] += dy[..., :-1, :]
    return out


def tikhonov_estimate(
    op,
    y: torch.Tensor,
    noise_factor: float,
    floor: float,
    weight: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Regularised least-squares image x̂ = argmin ‖w·(A x − y)‖² + λ‖∇x‖², per batch item, real B×C×H×W in [0, 1].

    λ = ``floor`` + ``noise_factor``·σ̂² with σ̂ from :func:`measurement_noise_level`: strong smoothing for noisy
    measurements, near-exact inversion (plus the smallest-gradient fill of what A does not see) for clean
    ones. Solved by conjugate gradients on (AᴴwA + λ∇ᴴ∇) x = Aᴴ(w·y) from ``start`` (default: the
    back-projection). ``weight`` (1 = use) hides measurements as in :func:`backprojection`.
    """
    with torch.no_grad():
        wt = None if weight is None else weight.to(device=y.device, dtype=torch.float32)
        level = measurement_noise_level(op, y, wt)
        lam = floor + noise_factor * level.square()  # B×1×1×1
        if start is None:
            start, _ = backprojection(op, y, weight=wt)
        measured = y if wt is None else y * wt

        def normal(x: torch.Tensor) -> torch.Tensor:
            return _normal_operator(op, x, wt) + lam * _gradient_adjoint(*_gradient(x))

        def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a * b).sum(dim=(-3, -2, -1), keepdim=True)

        rhs = op.A_adjoint(measured).real
        x = start.clone()
        residual = rhs - normal(x)
        direction = residual.clone()
        energy = dot(residual, residual)
        target = (TIKHONOV_TOLERANCE**2) * dot(rhs, rhs).clamp_min(1e-20)
        for _ in range(TIKHONOV_MAX_ITERATIONS):
            if bool((energy <= target).all()):
                break
            mapped = normal(direction)
            step = energy / dot(direction, mapped).clamp_min(1e-20)
            x = x + step * direction
            residual = residual - step * mapped
            new_energy = dot(residual, residual)
            direction = residual + (new_energy / energy.clamp_min(1e-20)) * direction
            energy = new_energy
    return x.clamp(0, 1)


def bm3d_estimate(op, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BM3D of a denoising measurement y (B×C×H×W, B = 1) at the noise level σ̂ estimated from y
    (:func:`measurement_noise_level`); for Poisson noise (the operator's ``poisson`` peak, with its σ as read
    noise) BM3D between the generalised Anscombe transform and its unbiased inverse
    (:func:`metadip.denoisers.bm3d_denoise_poisson`). Entries hidden by ``weight`` are first filled by the
    Gaussian normalised convolution (σ 1 px) of the visible ones, so they do not leak into z. One-line errors for
    another operator, a picture under 16 px or a missing ``bm3d`` package."""
    if getattr(op, "name", None) != "denoise":
        raise MetadipError(
            f"input estimate 'bm3d' is for denoising (y = x + noise), not {getattr(op, 'name', op)!r}; "
            "use an init with another estimate"
        )
    if not bm3d_available():
        raise MetadipError("input estimate 'bm3d' needs the bm3d package: pip install 'metadip[baselines]'")
    if min(y.shape[-2:]) < BM3D_MIN_SIZE:
        raise MetadipError(f"input estimate 'bm3d' needs pictures of at least {BM3D_MIN_SIZE} px")
    with torch.no_grad():
        image = y[:1].float()
        if weight is not None:
            smooth, _ = backprojection(op, y, weight=weight, lowpass=1.0)
            visible = weight.to(device=y.device, dtype=torch.float32).expand_as(y)[:1]
            image = visible * image + (1 - visible) * smooth[:1]
        noisy = image[0].permute(1, 2, 0).cpu().double().numpy()
        peak = getattr(op, "poisson", None)
        if peak:  # Poisson(–Gaussian) noise: BM3D between the Anscombe transform and its unbiased inverse
            denoised = bm3d_denoise_poisson(noisy, float(peak), float(getattr(op, "sigma", 0.0)) / 255.0)
        else:
            sigma = float(measurement_noise_level(op, y, weight).flatten()[0])
            denoised = bm3d_denoise(noisy, max(sigma, 1e-3))
        assert denoised is not None  # size and package checked above
        out = torch.from_numpy(denoised).permute(2, 0, 1).unsqueeze(0)
    return out.to(device=y.device, dtype=y.dtype)


def make_conditioned_input(
    recipe: InputRecipe,
    op,
    y: torch.Tensor,
    noise_channels: int,
    generator: torch.Generator | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """z = [image estimate, AᴴA1, noise] for ``op``'s image size (1×:func:`conditioned_channels`×H×W); the
    estimate is the (low-passed) back-projection or, with ``estimate = "tikhonov"`` / ``"bm3d"``, the Tikhonov
    image / BM3D of y;
    ``weight`` hides measurements (see :func:`backprojection`)."""
    image, normaliser = backprojection(op, y, weight=weight, lowpass=recipe.lowpass)
    _, height, width = op.image_shape
    parts = [image[:1], normaliser[:1]]
    if recipe.estimate == "tikhonov":  # lowpass is 0 then: the solve starts from the raw back-projection
        parts[0] = tikhonov_estimate(
            op, y, recipe.tikhonov_noise, recipe.tikhonov_floor, weight=weight, start=image
        )[:1]
    elif recipe.estimate == "bm3d":
        parts[0] = bm3d_estimate(op, y, weight=weight)
    noise_recipe = InputRecipe(kind="uniform", channels=noise_channels, scale=recipe.scale, seed=recipe.seed)
    parts.append(make_input(noise_recipe, (noise_channels, height, width), device=y.device, generator=generator))
    return torch.cat(parts, dim=1)
