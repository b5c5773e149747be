"""Network inputs z: how they are drawn (the recipe) and the DIP input-noise jitter.

A meta-learned θ0 is tied to its input: a checkpoint ships the :class:`InputRecipe` (kind, channels, scale,
seed), and :func:`make_input` turns it into the same tensor on any machine and device (the draw always happens
on the CPU with its own ``torch.Generator`` seeded from ``recipe.seed``, then moves to ``device``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

from metadip.errors import MetadipError

INPUT_KINDS = ("uniform", "gaussian", "meshgrid")
#: How a measurement-conditioned z estimates the image (:mod:`metadip.conditioning`).
ESTIMATES = ("backprojection", "tikhonov", "bm3d")
#: Why a recipe may not turn ``operator_maps`` on any more. Sidecars and configs written before it was removed record
#: ``operator_maps = false``: :func:`drop_retired` drops that, so they load unchanged.
OPERATOR_MAPS_RETIRED = (
    "operator maps in z were retired (probe universal-slim-maps; docs/RESEARCH_LOG.md, entries 9 and 12)"
)


@dataclass(frozen=True)
class InputRecipe:
    """How to draw z.

    kind: ``uniform`` — U(0, 1)·scale (the DIP default, scale 0.1); ``gaussian`` — N(0, 1)·scale;
    ``meshgrid`` — 2 channels holding the x and y pixel coordinates in [0, 1] (``channels`` is forced to 2,
    ``scale`` is ignored, ``seed`` is irrelevant).

    lowpass: measurement-conditioned inputs only (:mod:`metadip.conditioning`) — the standard deviation, in
    pixels, of the Gaussian normalised convolution applied to the image estimate placed in z (0 = the raw
    estimate). Ignored by pure-noise inputs.

    estimate: measurement-conditioned inputs only — ``backprojection`` (y itself in image space, else
    Aᴴy / AᴴA1; smoothed by ``lowpass``) or ``tikhonov``: the regularised least-squares image
    argmin ‖A x − y‖² + λ‖∇x‖² with λ = ``tikhonov_floor`` + ``tikhonov_noise``·σ̂², σ̂ the noise level
    estimated from y (:func:`metadip.conditioning.tikhonov_estimate`). One rule for every linear operator: it
    smooths in proportion to the noise, interpolates super-resolution, fills holes, deconvolves blur and
    suppresses Fourier aliasing. ``lowpass`` must then be 0. ``bm3d``: denoising only (y = x + noise) — BM3D of
    y at the noise level σ̂ estimated from y (needs the optional ``bm3d`` package; reproducible to ~1e-6, the
    rounding of its native FFTs, not bit for bit); ``lowpass`` must be 0.
    """

    kind: str = "uniform"
    channels: int = 32
    scale: float = 0.1
    seed: int = 0
    lowpass: float = 0.0
    estimate: str = "backprojection"
    tikhonov_noise: float = 50.0
    tikhonov_floor: float = 0.003

    def __post_init__(self) -> None:
        kind = str(self.kind).lower()
        if kind not in INPUT_KINDS:
            raise MetadipError(f"unknown input kind {self.kind!r}; valid: {', '.join(INPUT_KINDS)}")
        object.__setattr__(self, "kind", kind)
        channels = 2 if kind == "meshgrid" else int(self.channels)
        if channels < 1:
            raise MetadipError(f"input channels must be positive, got {self.channels}")
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "seed", int(self.seed))
        lowpass = float(self.lowpass)
        if not (0.0 <= lowpass <= 16.0):
            raise MetadipError(f"input lowpass must be in [0, 16] pixels, got {self.lowpass}")
        object.__setattr__(self, "lowpass", lowpass)
        estimate = str(self.estimate).lower()
        if estimate == "both":
            raise MetadipError(
                "input estimate 'both' (the Tikhonov image as extra channels) was retired (probe universal-slim-both; "
                "docs/RESEARCH_LOG.md, entry 19)"
            )
        if estimate not in ESTIMATES:
            raise MetadipError(f"unknown input estimate {self.estimate!r}; valid: {', '.join(ESTIMATES)}")
        object.__setattr__(self, "estimate", estimate)
        for name in ("tikhonov_noise", "tikhonov_floor"):
            value = float(getattr(self, name))
            if not (0.0 <= value <= 1e4):
                raise MetadipError(f"input {name} must be in [0, 10000], got {getattr(self, name)}")
            object.__setattr__(self, name, value)
        if estimate in ("tikhonov", "bm3d") and lowpass > 0:
            raise MetadipError(f"input estimate {estimate!r} smooths by itself: set lowpass = 0")
        if estimate == "tikhonov" and self.tikhonov_floor + self.tikhonov_noise == 0:
            raise MetadipError(f"input estimate {estimate!r} needs tikhonov_floor or tikhonov_noise > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputRecipe:
        if not isinstance(data, dict):
            raise MetadipError(f"input recipe must be a mapping, got {type(data).__name__}")
        data = drop_retired(data, "input")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MetadipError(f"unknown input recipe key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**data)


def drop_retired(data: dict[str, Any], where: str) -> dict[str, Any]:
    """An input table ``data`` without the ``operator_maps = false`` older versions recorded; a MetadipError
    naming ``where`` when it turns the retired maps on."""
    if "operator_maps" not in data:
        return data
    if data["operator_maps"] is not False:
        raise MetadipError(f"{where} operator_maps = {data['operator_maps']!r}: {OPERATOR_MAPS_RETIRED}")
    return {k: v for k, v in data.items() if k != "operator_maps"}


def make_input(
    recipe: InputRecipe,
    shape: tuple[int, int, int],
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw z of shape ``1×C×h×w`` (``shape = (C, h, w)``, usually ``net.input_shape(H, W)``).

    With ``generator=None`` a fresh CPU generator seeded with ``recipe.seed`` is used, so the result depends
    only on the recipe and the shape. A given generator is used as is (draws happen on its device).
    """
    if isinstance(recipe, dict):
        recipe = InputRecipe.from_dict(recipe)
    c, h, w = (int(s) for s in shape)
    if c != recipe.channels:
        raise MetadipError(f"input recipe has {recipe.channels} channels but the network expects {c}")
    if h < 1 or w < 1:
        raise MetadipError(f"input size must be positive, got {h}×{w}")
    if recipe.kind == "meshgrid":
        ys = torch.linspace(0.0, 1.0, h) if h > 1 else torch.zeros(1)
        xs = torch.linspace(0.0, 1.0, w) if w > 1 else torch.zeros(1)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx, yy]).unsqueeze(0).to(device=device, dtype=torch.float32)
    if generator is None:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(recipe.seed)
    gen_device = generator.device
    if recipe.kind == "uniform":
        z = torch.rand((1, c, h, w), generator=generator, device=gen_device)
    else:
        z = torch.randn((1, c, h, w), generator=generator, device=gen_device)
    return (z * recipe.scale).to(device)


def jitter(z: Tensor, std: float, generator: torch.Generator | None = None, hidden: int = 0) -> Tensor:
    """DIP input-noise regularisation (``reg_noise_std``): ``z + std·N(0, 1)``, drawn from ``generator``; the
    first ``hidden`` channels (an offset net's estimate and normaliser, which it does not take as input) are
    left as they are — the draw covers all of z either way, so the generator's stream does not depend on it.

    Returns ``z`` itself when ``std == 0`` (no draw, the generator is not advanced).
    """
    if std == 0:
        return z
    device = generator.device if generator is not None else z.device
    noise = torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype).to(z.device)
    noise[:, :hidden] = 0
    if z.dim() == 4 and not z.is_contiguous() and z.is_contiguous(memory_format=torch.channels_last):
        noise = noise.contiguous(memory_format=torch.channels_last)
    return z + std * noise
