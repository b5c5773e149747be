"""Measurement-conditioned network inputs.

Classic DIP feeds the generator pure noise z, so every image must be written into the weights by gradient
steps. The ``conditioned`` input recipe instead builds z from the measurement: an image estimate (y itself for
image-space operators — denoising, inpainting, deblurring —, else the normalised back-projection Aᴴy / AᴴA1: a
smooth upsampling for super-resolution, the zero-filled inverse FFT for partial Fourier; unseen pixels filled
with the channel mean), the relative normaliser AᴴA1 (where the operator sees the image, e.g. the inpainting
mask) and ``noise_channels`` channels of the recipe's noise. With a ``residual`` generator the network predicts
a correction of the estimate's logit.
z stays fixed during the fit and the loss is still only ‖A f(z) − y‖²: the prior is the architecture plus the
meta-learned θ0, and early stopping is still the regulariser. A meta-learned θ0 trained with this recipe starts
close to a reconstruction, which is what makes the first few DIP steps count.
"""

from __future__ import annotations

import torch

from metadip.generators.inputs import InputRecipe, make_input

BACKPROJECTION = "backprojection"


def backprojection(
    op, y: torch.Tensor, floor: float = 0.05, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image estimate from y and the relative normaliser AᴴA1 / max(AᴴA1), both real B×C×H×W.

    The estimate is y itself when the measurement lives in image space (denoise, inpaint, deblur), else the
    normalised back-projection Aᴴy / AᴴA1 (super-resolution: a smooth upsampling; Fourier: zero-filled iFFT).

    Where the operator does not see the image (normaliser below ``floor`` of its maximum: inpainting holes, the
    unobserved border of a non-divisible super-resolution) the back-projection is filled with the mean of the
    seen pixels of its channel. ``weight`` (broadcastable to y, 1 = use) hides measurements from the input —
    the entries the hold-out stopping rule keeps out of the loss must not leak into z either.
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
        image = torch.where(seen, image, fill.expand_as(image))
    return image.clamp(0, 1), normaliser.clamp(0, 1)


def conditioned_channels(image_channels: int, noise_channels: int) -> int:
    """Total z channels of the backprojection recipe: back-projection + normaliser + noise."""
    return 2 * image_channels + noise_channels


def make_conditioned_input(
    recipe: InputRecipe,
    op,
    y: torch.Tensor,
    noise_channels: int,
    generator: torch.Generator | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """z = [image estimate, AᴴA1, noise] for ``op``'s image size (1×(2C+noise_channels)×H×W); ``weight`` hides
    measurements (see :func:`backprojection`)."""
    image, normaliser = backprojection(op, y, weight=weight)
    _, height, width = op.image_shape
    noise_recipe = InputRecipe(kind="uniform", channels=noise_channels, scale=recipe.scale, seed=recipe.seed)
    noise = make_input(noise_recipe, (noise_channels, height, width), device=y.device, generator=generator)
    return torch.cat([image[:1], normaliser[:1], noise], dim=1)
