"""Measurement-conditioned network inputs.

Classic DIP feeds the generator pure noise z, so every image must be written into the weights by gradient
steps. The ``backprojection`` input recipe instead builds z from the measurement: the normalised
back-projection Aᴴy / AᴴA1 (the observed image for denoising and inpainting, a smooth upsampling for
super-resolution, the zero-filled inverse FFT for partial Fourier), the normaliser AᴴA1 itself (where the
operator sees the image, e.g. the inpainting mask) and ``noise_channels`` channels of the recipe's noise.
z stays fixed during the fit and the loss is still only ‖A f(z) − y‖²: the prior is the architecture plus the
meta-learned θ0, and early stopping is still the regulariser. A meta-learned θ0 trained with this recipe starts
close to a reconstruction, which is what makes the first few DIP steps count.
"""

from __future__ import annotations

import torch

from metadip.generators.inputs import InputRecipe, make_input

BACKPROJECTION = "backprojection"


def backprojection(op, y: torch.Tensor, floor: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised back-projection Aᴴy / AᴴA1 (0 where the operator does not see the image) and AᴴA1 itself,
    both real B×C×H×W."""
    channels, height, width = op.image_shape
    ones = torch.ones(1, channels, height, width, device=y.device)
    with torch.no_grad():
        normaliser = op.A_adjoint(op.A(ones)).real
        image = op.A_adjoint(y).real
        seen = normaliser > floor
        image = torch.where(seen, image / normaliser.clamp_min(floor), torch.zeros_like(image))
    return image.clamp(0, 1), normaliser.clamp(0, 1)


def conditioned_channels(image_channels: int, noise_channels: int) -> int:
    """Total z channels of the backprojection recipe: back-projection + normaliser + noise."""
    return 2 * image_channels + noise_channels


def make_conditioned_input(
    recipe: InputRecipe, op, y: torch.Tensor, noise_channels: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = [Aᴴy / AᴴA1, AᴴA1, noise] for ``op``'s image size (1×(2C+noise_channels)×H×W)."""
    image, normaliser = backprojection(op, y)
    _, height, width = op.image_shape
    noise_recipe = InputRecipe(kind="uniform", channels=noise_channels, scale=recipe.scale, seed=recipe.seed)
    noise = make_input(noise_recipe, (noise_channels, height, width), device=y.device, generator=generator)
    return torch.cat([image[:1], normaliser[:1], noise], dim=1)
