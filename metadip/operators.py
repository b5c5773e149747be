"""Forward operators ``A`` for metadip's inverse problems, their spec strings and measurement artifacts.

Every operator maps a real image batch ``x`` (B×C×H×W, [0, 1]) to a measurement ``y = A x`` and has an exact
adjoint ``A_adjoint`` (``<A x, y> = <x, A_adjoint y>`` for the real inner product). Both are batched,
differentiable and work in any floating dtype; random parameters (masks, motion angles) are drawn once, at
construction, from the ``torch.Generator`` given to :func:`build_operator`.

Design choices
--------------
* ``deblur`` is a circular convolution computed with the FFT (exact adjoint: multiplication by the conjugate
  transfer function). The kernel is periodised onto the H×W torus, so a generated kernel larger than the image
  still gives a valid operator; a kernel file must not be larger than the image.
* ``superres`` filters with a box (average over each factor×factor block) or Gaussian anti-alias kernel and
  decimates, as one strided ``conv2d`` (the Gaussian one with circular boundary); the adjoint is the matching
  ``conv_transpose2d``. When H or W is not a multiple of the factor, the operator sees only the top-left
  ``(H // factor) * factor`` × ``(W // factor) * factor`` region: trailing rows/columns are unobserved and the
  adjoint is zero there. An image smaller than the factor is an error.
* ``fourier`` measures ``mask · FFT(x)`` with the orthonormal 2-D FFT per channel (complex measurements). The
  k-space mask is stored in FFT order (DC at index [0, 0]); its noise convention is described in
  :mod:`metadip.noise`. ``A_adjoint`` returns the real part of ``IFFT(mask · y)``.
* ``inpaint`` and ``fourier`` report their masks through ``measurement_mask()``; :func:`simulate` puts noise
  only on measured entries, so unmeasured entries of ``y`` are exactly zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from metadip.errors import MetadipError
from metadip.fileio import atomic_save_with, atomic_write_json
from metadip.noise import add_noise

ARTIFACT_FORMAT_VERSION = 1
NOISE_KEYS = ("sigma", "poisson")


@dataclass(frozen=True)
class _Rule:
    """A validity check for a numeric spec value and its wording in error messages."""

    ok: Callable[[float], bool]
    text: str


_ANY = _Rule(math.isfinite, "a number")
_POSITIVE = _Rule(lambda v: v > 0, "> 0")
_FRACTION = _Rule(lambda v: 0 < v < 1, "in (0, 1)")
_CENTRE = _Rule(lambda v: 0 <= v < 1, "in [0, 1)")
_COUNT = _Rule(lambda v: v >= 1, "an integer >= 1")
_FACTOR = _Rule(lambda v: v >= 2, "an integer >= 2")
#: The largest Gaussian noise std a spec accepts (0-255 scale): 4× the whole intensity range, far past any
#: meaningful measurement; beyond it a typo (sigma=1e9) would silently yield pure noise.
MAX_SIGMA = 4 * 255.0
_SIGMA = _Rule(lambda v: 0 <= v <= MAX_SIGMA, f"in [0, {MAX_SIGMA:g}] (0-255 scale)")


@dataclass(frozen=True)
class _Key:
    """One spec key: its type (``float``, ``int`` or a tuple of allowed words), default, rule and scope."""

    kind: Any
    default: Any
    help: str
    rule: _Rule = _ANY
    when: tuple[str, tuple[str, ...]] | None = None  # (selector key, selector values this key applies to)


@dataclass(frozen=True)
class OperatorSpec:
    """A parsed ``NAME[:key=value,...]`` spec: the family name and the keys given explicitly (typed)."""

    name: str
    params: dict


class LinearOperator:
    """Base class: a linear forward operator with exact adjoint, noise settings and a canonical spec.

    Subclasses set ``name`` and ``KEYS`` and implement ``A`` and ``A_adjoint``. ``ARRAY`` names the array a
    family can take from a file (``"mask"`` or ``"kernel"``), ``SOURCE`` the spec key whose value ``file``
    says so, and ``ARTIFACT`` the file suffix used by :func:`save_operator_artifacts`.
    """

    name: ClassVar[str]
    KEYS: ClassVar[dict[str, _Key]] = {}
    DEFAULT_SIGMA: ClassVar[float] = 0.0
    POISSON: ClassVar[bool] = True
    ARRAY: ClassVar[str | None] = None
    SOURCE: ClassVar[str | None] = None
    ARTIFACT: ClassVar[str | None] = None
    is_complex: ClassVar[bool] = False

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        sigma: float,
        poisson: float | None = None,
        generator: torch.Generator | None = None,
        **keys: Any,
    ):
        """Record shape, noise and spec keys; ``generator`` is used only by the families that draw."""
        self.image_shape = image_shape
        self.measurement_shape = image_shape
        self.sigma = float(sigma)
        self.poisson = None if poisson is None else float(poisson)
        self._keys = {key: keys[key] for key in self.KEYS if keys.get(key) is not None}

    @classmethod
    def keys(cls) -> dict[str, _Key]:
        """All spec keys of this family: its own, then the noise keys."""
        noise = {
            "sigma": _Key(float, cls.DEFAULT_SIGMA, "Gaussian noise std, 0-255 scale", _SIGMA),
            "poisson": _Key(float, None, "Poisson peak (photons at intensity 1), off if absent", _POSITIVE),
        }
        return {**cls.KEYS, **{k: v for k, v in noise.items() if k == "sigma" or cls.POISSON}}

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the forward operator to a real B×C×H×W batch."""
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint to a measurement batch; returns a real B×C×H×W batch."""
        raise NotImplementedError

    def measurement_mask(self) -> torch.Tensor | None:
        """1×1×H×W mask of the entries of ``y`` that hold a measurement, or None when all of them do."""
        return None

    def to(self, device: str | torch.device) -> LinearOperator:
        """Move the operator's tensors to ``device`` (in place) and return it."""
        for attribute, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, attribute, value.to(device))
        return self

    def spec(self) -> str:
        """Canonical spec: family, every key that applies (a drawn motion angle included) and the noise."""
        items = {**self._keys, "sigma": self.sigma, "poisson": self.poisson}
        return f"{self.name}:" + ",".join(f"{k}={_format(v)}" for k, v in items.items() if v is not None)

    def params(self) -> dict:
        """JSON-serialisable record: spec keys, noise, shapes and summaries of what was drawn."""
        return {
            "name": self.name,
            **self._keys,
            "sigma": self.sigma,
            "poisson": self.poisson,
            "image_shape": list(self.image_shape),
            "measurement_shape": list(self.measurement_shape),
            **self._summary(),
        }

    def _summary(self) -> dict:
        return {}

    def _array(self) -> np.ndarray | None:
        """The drawn/loaded 2-D array that :func:`save_operator_artifacts` writes (mask or kernel)."""
        return None

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[-2:]) != tuple(self.image_shape[1:]):
            height, width = self.image_shape[1:]
            raise MetadipError(
                f"{self.name} operator was built for B×C×{height}×{width} images, got shape {tuple(x.shape)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r}, image_shape={self.image_shape})"


def _format(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=device).cpu()


def _randperm(n: int, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.randperm(n, generator=generator, device=device).cpu()


def _binary_mask(array: np.ndarray | torch.Tensor, hw: tuple[int, int], what: str) -> torch.Tensor:
    """Check a 2-D array (or anything with H·W entries for tensors) and return it as a 1×1×H×W 0/1 mask. The array
    must be binary-valued: 0 and one nonzero value (1, 255, True, ...)."""
    if isinstance(array, np.ndarray):
        mask = torch.from_numpy(array.astype(np.float64))
    else:
        mask = array.detach().cpu()
    if isinstance(array, torch.Tensor) and mask.numel() == hw[0] * hw[1]:
        mask = mask.reshape(hw)
    if mask.dim() != 2 or tuple(mask.shape) != hw:
        raise MetadipError(
            f"{what} has shape {tuple(mask.shape)}, expected {hw[0]}×{hw[1]} to match the image"
        )
    if mask.is_complex() or not torch.isfinite(mask.double()).all():
        raise MetadipError(f"{what} must hold finite real values (nonzero = observed)")
    if not mask.any():
        raise MetadipError(f"{what} observes no pixel (all zero)")
    observed = mask[mask != 0]
    if (observed != observed[0]).any():  # a photograph or a soft mask: "nonzero" would observe almost everything
        values = torch.unique(mask).numel()
        raise MetadipError(
            f"{what} is not binary ({values} distinct values): a mask holds 0 (missing) and one other value such "
            "as 1 or 255 (observed); threshold it first"
        )
    return (mask != 0).float().reshape(1, 1, *hw)


def _kernel_array(array: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """Check a blur kernel (2-D, finite, non-negative, positive sum) and return it normalised to sum 1."""
    kernel = torch.as_tensor(array).detach().cpu()
    if kernel.dim() != 2:
        raise MetadipError(f"{what} must be a 2-D array, got shape {tuple(kernel.shape)}")
    if kernel.is_complex() or kernel.dtype == torch.bool:
        raise MetadipError(f"{what} must hold real numbers, got dtype {kernel.dtype}")
    kernel = kernel.double()
    if not torch.isfinite(kernel).all() or (kernel < 0).any() or kernel.sum() <= 0:
        raise MetadipError(f"{what} must be finite and non-negative with a positive sum")
    return (kernel / kernel.sum()).float()


class Denoise(LinearOperator):
    """Identity: ``y = x + noise``."""

    name = "denoise"
    DEFAULT_SIGMA = 25.0

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y


class Inpaint(LinearOperator):
    """Pixel-wise mask shared across channels: ``y = mask · x``.

    ``holes=pixels`` hides exactly ``round(ratio·H·W)`` random pixels; ``holes=blocks`` tiles the image with
    ``block``×``block`` cells (at least 4) and hides ``round(ratio·cells)`` random cells; at least one pixel or
    cell stays visible. ``holes=file`` uses a user mask (nonzero = observed).
    """

    name = "inpaint"
    KEYS = {
        "ratio": _Key(float, 0.5, "fraction of pixels MISSING", _FRACTION, ("holes", ("pixels", "blocks"))),
        "holes": _Key(("pixels", "blocks", "file"), "pixels", "hide pixels, square blocks, or --mask file"),
        "block": _Key(int, 8, "block side in pixels", _COUNT, ("holes", ("blocks",))),
    }
    ARRAY, SOURCE, ARTIFACT = "mask", "holes", ".mask.png"

    def __init__(self, image_shape, *, holes, ratio=None, block=None, array=None, generator=None, **noise):
        super().__init__(image_shape, holes=holes, ratio=ratio, block=block, **noise)
        hw = image_shape[1:]
        if array is not None:
            self.mask = _binary_mask(array, hw, "inpainting mask")
        elif holes == "pixels":
            pixels = hw[0] * hw[1]
            hidden = _randperm(pixels, generator)[: min(round(ratio * pixels), pixels - 1)]
            self.mask = torch.ones(pixels).index_fill(0, hidden, 0.0).reshape(1, 1, *hw)
        else:
            rows, cols = math.ceil(hw[0] / block), math.ceil(hw[1] / block)
            if rows * cols < 4:
                raise MetadipError(
                    f"block={block} cuts the {hw[0]}×{hw[1]} image into only {rows * cols} cell(s); "
                    f"use block ≤ {max(1, min(hw) // 2)} (or a larger image)"
                )
            hidden = _randperm(rows * cols, generator)[: min(round(ratio * rows * cols), rows * cols - 1)]
            cells = torch.ones(rows * cols).index_fill(0, hidden, 0.0).reshape(rows, cols)
            full = cells.repeat_interleave(block, 0).repeat_interleave(block, 1)
            self.mask = full[: hw[0], : hw[1]].reshape(1, 1, *hw).contiguous()

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x * self.mask.to(x.device, x.dtype)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.mask.to(y.device, y.dtype)

    def measurement_mask(self) -> torch.Tensor:
        return self.mask

    def _summary(self) -> dict:
        return {"observed_fraction": round(float(self.mask.mean()), 6)}

    def _array(self) -> np.ndarray:
        return self.mask[0, 0].cpu().numpy()


class SuperRes(LinearOperator):
    """Anti-aliased downsampling by an integer ``factor``: filter (box or Gaussian) then decimate.

    The Gaussian filter has std ``factor / 2`` pixels (gain about 0.3 at the new Nyquist frequency), is
    centred on each factor×factor block, truncated at 3 std and uses a circular boundary.
    """

    name = "superres"
    KEYS = {
        "factor": _Key(int, 4, "downsampling factor", _FACTOR),
        "filter": _Key(("box", "gauss"), "box", "anti-alias filter before decimation"),
    }

    def __init__(self, image_shape, *, factor, filter, **noise):
        super().__init__(image_shape, factor=factor, filter=filter, **noise)
        channels, height, width = image_shape
        if height < factor or width < factor:
            raise MetadipError(
                f"superres factor {factor} needs an image of at least {factor}×{factor} pixels"
            )
        self.measurement_shape = (channels, height // factor, width // factor)
        if filter == "box":
            taps, self.pad = torch.full((factor,), 1.0 / factor, dtype=torch.float64), 0
        else:
            std = factor / 2
            self.pad = max(0, math.ceil(3 * std - (factor - 1) / 2))
            offsets = torch.arange(factor + 2 * self.pad, dtype=torch.float64) - self.pad - (factor - 1) / 2
            taps = torch.exp(-(offsets**2) / (2 * std**2))
            taps = taps / taps.sum()
        self.weight = torch.outer(taps, taps).float()[None, None]

    def _wrap_index(self, size: int) -> torch.Tensor:
        return (torch.arange(size + 2 * self.pad) - self.pad) % size

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        f = self._keys["factor"]
        (batch, channels), (h, w) = x.shape[:2], self.measurement_shape[1:]
        planes = x[..., : h * f, : w * f].reshape(batch * channels, 1, h * f, w * f)
        if self.pad:
            rows, cols = self._wrap_index(h * f).to(x.device), self._wrap_index(w * f).to(x.device)
            planes = planes.index_select(2, rows).index_select(3, cols)
        y = F.conv2d(planes, self.weight.to(x.device, x.dtype), stride=f)
        return y.reshape(batch, channels, h, w)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        f = self._keys["factor"]
        (batch, channels, h, w), (height, width) = y.shape, self.image_shape[1:]
        planes = F.conv_transpose2d(
            y.reshape(batch * channels, 1, h, w), self.weight.to(y.device, y.dtype), stride=f
        )
        if self.pad:
            rows, cols = self._wrap_index(h * f).to(y.device), self._wrap_index(w * f).to(y.device)
            planes = planes.new_zeros(*planes.shape[:2], h * f, planes.shape[3]).index_add(2, rows, planes)
            planes = planes.new_zeros(*planes.shape[:3], w * f).index_add(3, cols, planes)
        planes = F.pad(planes, (0, width - w * f, 0, height - h * f))
        return planes.reshape(batch, channels, height, width)


class Deblur(LinearOperator):
    """Circular convolution with a blur kernel (same kernel for every channel), computed with the FFT.

    ``kernel=gauss``: isotropic Gaussian of std ``width`` px, truncated at 3 std. ``kernel=motion``: an
    anti-aliased line of ``length`` px at ``angle`` degrees (counter-clockwise from the x axis; when absent,
    drawn uniformly in [0, 180) from the generator and rounded to 0.1°). ``kernel=file``: a user kernel,
    normalised to sum 1.
    """

    name = "deblur"
    KEYS = {
        "kernel": _Key(("gauss", "motion", "file"), "gauss", "Gaussian, motion line or --kernel file"),
        "width": _Key(float, 2.0, "Gaussian std in pixels", _POSITIVE, ("kernel", ("gauss",))),
        "length": _Key(int, 9, "motion length in pixels", _COUNT, ("kernel", ("motion",))),
        "angle": _Key(
            float, None, "motion angle in degrees (drawn if absent)", _ANY, ("kernel", ("motion",))
        ),
    }
    ARRAY, SOURCE, ARTIFACT = "kernel", "kernel", ".kernel.npy"

    def __init__(
        self, image_shape, *, kernel, width=None, length=None, angle=None, array=None, generator=None, **noise
    ):
        if kernel == "motion" and angle is None and array is None:
            angle = round(float(_rand((), generator)) * 180.0, 1) % 180.0
        super().__init__(image_shape, kernel=kernel, width=width, length=length, angle=angle, **noise)
        if array is not None:
            self.kernel = _kernel_array(array, "blur kernel")
            # A user's kernel must fit the image; the recorded copy of a generated one (simulate writes it
            # beside the measurement) may wrap like the generated kernel itself.
            limit = 1 if kernel == "file" else GENERATED_KERNEL_WRAP
            _check_kernel_fits(tuple(self.kernel.shape), image_shape, "blur kernel", limit)
        elif kernel == "gauss":
            side = 2 * math.ceil(3 * width) + 1
            _check_kernel_fits((side, side), image_shape, f"a Gaussian kernel of width {width:g}")
            self.kernel = gaussian_kernel(width)
        else:
            side = length if length % 2 else length + 1
            _check_kernel_fits((side, side), image_shape, f"a motion kernel of length {length}")
            self.kernel = motion_kernel(length, angle)

    def _transfer(self, like: torch.Tensor) -> torch.Tensor:
        """rFFT of the kernel periodised onto the H×W torus with its centre at pixel (0, 0)."""
        height, width = self.image_shape[1:]
        kh, kw = self.kernel.shape
        rows = ((torch.arange(kh) - kh // 2) % height)[:, None]
        cols = ((torch.arange(kw) - kw // 2) % width)[None, :]
        kernel = self.kernel.to(like.device, like.dtype)
        torus = kernel.new_zeros(height, width).index_put_(
            (rows.to(like.device), cols.to(like.device)), kernel, True
        )
        return torch.fft.rfft2(torus)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return torch.fft.irfft2(torch.fft.rfft2(x) * self._transfer(x), s=x.shape[-2:])

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(y) * self._transfer(y).conj(), s=y.shape[-2:])

    def _summary(self) -> dict:
        return {"kernel_shape": list(self.kernel.shape)}

    def _array(self) -> np.ndarray:
        return self.kernel.cpu().numpy()


#: A generated kernel may be up to this many times the image side: it is periodised onto the image's torus
#: (a 19×19 Gaussian on a 16 px training crop is fine); beyond that the blur is a mistake, not a blur.
GENERATED_KERNEL_WRAP = 4


def _check_kernel_fits(
    shape: tuple[int, int], image_shape, what: str, limit: int = GENERATED_KERNEL_WRAP
) -> None:
    """Refuse a kernel more than ``limit`` × the image's height / width (checked before a generated kernel is
    allocated, so an absurd width fails at once instead of exhausting memory)."""
    height, width = image_shape[1:]
    if shape[0] > limit * height or shape[1] > limit * width:
        bound = "larger than" if limit == 1 else f"more than {limit}× the size of"
        raise MetadipError(
            f"{what} is {shape[0]}×{shape[1]} pixels, {bound} the {height}×{width} image; "
            "use a smaller blur or a larger image"
        )


def gaussian_kernel(width: float) -> torch.Tensor:
    """Normalised isotropic Gaussian kernel of std ``width`` px, size ``2·ceil(3·width) + 1``."""
    radius = math.ceil(3 * width)
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2) / (2 * width**2))
    kernel = torch.outer(taps, taps)
    return (kernel / kernel.sum()).float()


def motion_kernel(length: int, angle: float) -> torch.Tensor:
    """Normalised line of ``length`` px at ``angle`` degrees, bilinearly splatted on an odd square grid."""
    size = length if length % 2 else length + 1
    centre = size // 2
    t = torch.linspace(-(length - 1) / 2, (length - 1) / 2, 16 * length, dtype=torch.float64)
    theta = math.radians(angle)
    xs, ys = centre + t * math.cos(theta), centre - t * math.sin(theta)
    kernel = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = xs.floor().long(), ys.floor().long()
    for dy in (0, 1):
        for dx in (0, 1):
            weight = (1 - (xs - x0 - dx).abs()) * (1 - (ys - y0 - dy).abs())
            rows, cols = (y0 + dy).clamp(0, size - 1), (x0 + dx).clamp(0, size - 1)
            kernel.index_put_((rows, cols), weight, accumulate=True)
    return (kernel / kernel.sum()).float()


class Fourier(LinearOperator):
    """Partial Fourier (k-space) sampling: ``y = mask · FFT(x)`` with the orthonormal 2-D FFT per channel.

    ``pattern=lines`` keeps whole k-space rows (phase-encode lines, as in Cartesian MRI): the
    ``max(1, round(center·H))`` rows around DC plus random rows up to ``round(ratio·H)`` in all.
    ``pattern=points`` keeps a central ``round(center·H)×round(center·W)`` block (at least DC) plus random
    points up to ``round(ratio·H·W)``. ``pattern=file`` uses a user k-space mask in FFT order.
    """

    name = "fourier"
    KEYS = {
        "ratio": _Key(
            float, 0.25, "fraction of k-space sampled", _FRACTION, ("pattern", ("lines", "points"))
        ),
        "center": _Key(
            float, 0.08, "fully sampled centre, fraction per axis", _CENTRE, ("pattern", ("lines", "points"))
        ),
        "pattern": _Key(("lines", "points", "file"), "lines", "random rows, random points, or --mask file"),
    }
    POISSON = False
    ARRAY, SOURCE, ARTIFACT = "mask", "pattern", ".kspace_mask.npy"
    is_complex = True

    def __init__(self, image_shape, *, pattern, ratio=None, center=None, array=None, generator=None, **noise):
        super().__init__(image_shape, ratio=ratio, center=center, pattern=pattern, **noise)
        height, width = image_shape[1:]
        if array is not None:
            self.mask = _binary_mask(array, (height, width), "k-space mask")
            return
        if pattern == "lines":
            core = _centred(height, center)
            keep = self._draw(
                torch.zeros(height, dtype=torch.bool).index_fill(0, core, True), ratio, generator
            )
            self.mask = keep[:, None].expand(height, width)
        else:
            core = torch.zeros(height, width, dtype=torch.bool)
            core[_centred(height, center)[:, None], _centred(width, center)[None, :]] = True
            self.mask = self._draw(core.flatten(), ratio, generator).reshape(height, width)
        self.mask = self.mask.float().reshape(1, 1, height, width)

    @staticmethod
    def _draw(keep: torch.Tensor, ratio: float, generator: torch.Generator | None) -> torch.Tensor:
        """Add random entries to the boolean vector ``keep`` until ``round(ratio·len)`` are set."""
        free = torch.nonzero(~keep).flatten()
        extra = max(0, round(ratio * keep.numel()) - int(keep.sum()))
        return keep.index_fill(0, free[_randperm(free.numel(), generator)[:extra]], True)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return torch.fft.fft2(x, norm="ortho") * self.mask.to(x.device, x.dtype)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(y * self.mask.to(y.device, y.real.dtype), norm="ortho").real

    def measurement_mask(self) -> torch.Tensor:
        return self.mask

    def _summary(self) -> dict:
        return {"sampled_fraction": round(float(self.mask.mean()), 6)}

    def _array(self) -> np.ndarray:
        return self.mask[0, 0].cpu().numpy().astype(np.uint8)


def _centred(size: int, fraction: float) -> torch.Tensor:
    """FFT-order indices of the ``max(1, round(fraction·size))`` frequencies closest to DC."""
    count = max(1, round(fraction * size))
    return (torch.arange(count) - count // 2) % size


OPERATORS: dict[str, type[LinearOperator]] = {
    cls.name: cls for cls in (Denoise, Inpaint, SuperRes, Deblur, Fourier)
}


def describe_operators() -> str:
    """Human-readable list of operator families, their keys and defaults (for ``--help``)."""
    lines = ["Operators (NAME[:key=value,...]):"]
    for name, cls in OPERATORS.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
        lines.append(f"  {name}: {summary}")
        for key, spec in cls.keys().items():
            kind = "|".join(spec.kind) if isinstance(spec.kind, tuple) else spec.kind.__name__
            default = "none" if spec.default is None else _format(spec.default)
            when = f"; only with {spec.when[0]}={'|'.join(spec.when[1])}" if spec.when else ""
            lines.append(f"    {key}={kind} (default {default}){when}: {spec.help}")
    return "\n".join(lines)


def _family(name: str) -> type[LinearOperator]:
    cls = OPERATORS.get(name)
    if cls is None:
        raise MetadipError(f"unknown operator {name!r}; valid: {', '.join(OPERATORS)}")
    return cls


def _convert(name: str, key: str, spec: _Key, value: Any) -> Any:
    if isinstance(spec.kind, tuple):
        word = str(value).strip().lower()
        if word not in spec.kind:
            raise MetadipError(f"{name}: {key} must be one of {', '.join(spec.kind)} (got {value!r})")
        return word
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if spec.kind is int:
            if not number.is_integer():
                raise ValueError
            number = int(number)
    except (TypeError, ValueError):
        raise MetadipError(f"{name}: {key} must be {spec.rule.text} (got {value!r})") from None
    if not math.isfinite(number) or not spec.rule.ok(number):
        raise MetadipError(f"{name}: {key} must be {spec.rule.text} (got {value!r})")
    return number


def _validate(name: str, params: Mapping[str, Any]) -> dict:
    """Type-convert and range-check explicit keys; keys absent or None are left to their defaults."""
    keys = _family(name).keys()
    out = {}
    for key, value in params.items():
        if key not in keys:
            raise MetadipError(f"unknown key {key!r} for operator {name}; valid: {', '.join(keys)}")
        if value is not None:
            out[key] = _convert(name, key, keys[key], value)
    for key in out:
        if keys[key].when:
            selector, allowed = keys[key].when
            if out.get(selector, keys[selector].default) not in allowed:
                raise MetadipError(f"{name}: key {key} applies only with {selector}={'|'.join(allowed)}")
    return out


def parse_operator_spec(text: str) -> OperatorSpec:
    """Parse ``NAME[:key=value,...]`` (e.g. ``deblur:kernel=motion,length=9,sigma=5``); values are checked."""
    if not isinstance(text, str) or not text.strip():
        raise MetadipError(
            f"empty operator spec; expected NAME[:key=value,...] with NAME one of {', '.join(OPERATORS)}"
        )
    name, colon, rest = text.strip().partition(":")
    name = name.strip().lower()
    _family(name)
    params: dict[str, str] = {}
    for item in rest.split(",") if colon else ():
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not key or not value:
            raise MetadipError(f"malformed operator spec {text!r}: expected key=value, got {item.strip()!r}")
        if key.lower() in params:
            raise MetadipError(f"malformed operator spec {text!r}: key {key!r} given twice")
        params[key.lower()] = value
    return OperatorSpec(name, _validate(name, params))


def _image_shape(shape: Any) -> tuple[int, int, int]:
    try:
        dims = tuple(int(d) for d in shape)[-3:]
    except (TypeError, ValueError):
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise MetadipError(f"image shape must be (C, H, W) with positive sizes, got {shape!r}")
    return dims


def build_operator(
    spec: str | OperatorSpec,
    image_shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
    kernel: torch.Tensor | np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> LinearOperator:
    """Build the operator for ``image_shape`` (C, H, W) or (B, C, H, W).

    Random parameters are drawn from ``generator`` (same seed → identical operator). ``mask`` (inpaint,
    fourier) or ``kernel`` (deblur) supplies the array instead of drawing/generating it; without an explicit
    ``holes``/``pattern``/``kernel`` key the spec then records ``file``.
    """
    parsed = parse_operator_spec(spec) if isinstance(spec, str) else spec
    if not isinstance(parsed, OperatorSpec):
        raise TypeError(f"spec must be a string or OperatorSpec, got {type(spec).__name__}")
    cls = _family(parsed.name)
    params = dict(parsed.params)
    arrays = {"mask": mask, "kernel": kernel}
    for what, array in arrays.items():
        if array is not None and cls.ARRAY != what:
            raise MetadipError(f"operator {cls.name} takes no {what} file (those that do: {_takers(what)})")
    array = arrays.get(cls.ARRAY)
    implied = array is not None and cls.SOURCE not in params
    if array is not None:
        params.setdefault(cls.SOURCE, "file")
    try:
        params = _validate(cls.name, params)
    except MetadipError as exc:
        if not implied:
            raise
        raise MetadipError(f"{exc} (a {cls.ARRAY} file means {cls.SOURCE}=file)") from None
    keys = cls.keys()
    resolved = {key: params.get(key, k.default) for key, k in keys.items() if _applies(keys, key, params)}
    if cls.SOURCE and resolved[cls.SOURCE] == "file" and array is None:
        raise MetadipError(f"{cls.name}:{cls.SOURCE}=file needs a {cls.ARRAY} file (--{cls.ARRAY})")
    extra = {"array": array} if cls.ARRAY else {}
    return cls(_image_shape(image_shape), generator=generator, **extra, **resolved).to(device)


def _applies(keys: dict[str, _Key], key: str, params: dict) -> bool:
    if keys[key].when is None:
        return True
    selector, allowed = keys[key].when
    return params.get(selector, keys[selector].default) in allowed


def _takers(what: str) -> str:
    return ", ".join(name for name, cls in OPERATORS.items() if cls.ARRAY == what)


def simulate(x: torch.Tensor, op: LinearOperator, generator: torch.Generator | None) -> torch.Tensor:
    """Return ``y = A x + noise`` with the operator's sigma/poisson; unmeasured entries stay exactly zero.
    ``x``: a finite float B×C×H×W image on the [0, 1] scale."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise MetadipError("simulate needs a float image tensor on the [0, 1] scale (e.g. uint8 data / 255)")
    if not torch.isfinite(x).all():
        raise MetadipError("the clean image contains NaN or Inf values")
    y = add_noise(op.A(x), op.sigma, generator, poisson=op.poisson)
    mask = op.measurement_mask()
    return y if mask is None else y * mask.to(y.device, y.real.dtype)


def _read_array(path: str | Path, what: str) -> np.ndarray:
    """Read a .npy or .png file as a 2-D numeric array (PNG colour channels: max over RGB, alpha dropped)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".png"):
        raise MetadipError(f"{what} file {path} must be .png or .npy")
    if not path.is_file():
        raise MetadipError(f"{what} file {path} not found")
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            array = iio.imread(path, plugin="pillow")
    except Exception as exc:  # any reader failure is a bad user file
        raise MetadipError(f"cannot read {what} file {path}: {exc}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        raise MetadipError(f"{what} file {path} holds several arrays; save one array with np.save")
    if array.dtype.kind not in "biuf":
        raise MetadipError(f"{what} file {path} has unsupported dtype {array.dtype}")
    if suffix == ".png" and array.ndim == 3:
        array = array[..., : 3 if array.shape[-1] >= 3 else 1].max(axis=-1)
    if array.ndim != 2:
        raise MetadipError(f"{what} file {path} must hold a 2-D array, got shape {array.shape}")
    return array


def load_mask(path: str | Path, hw: tuple[int, int]) -> torch.Tensor:
    """Load a mask file (.png or .npy, nonzero = observed) that must be H×W; returns a 1×1×H×W 0/1 mask."""
    return _binary_mask(_read_array(path, "mask"), tuple(hw), f"mask file {path}")


def load_kernel(path: str | Path) -> torch.Tensor:
    """Load a blur kernel file (.npy or .png; 2-D, finite, non-negative), normalised to sum 1."""
    return _kernel_array(_read_array(path, "kernel").astype(np.float64), f"kernel file {path}")


def operator_files(measurement_path: str | Path) -> list[Path]:
    """Every file :func:`save_operator_artifacts` may write beside the measurement (whether it exists or not)."""
    suffixes = [".operator.json", *(cls.ARTIFACT for cls in OPERATORS.values() if cls.ARTIFACT)]
    return [_sidecar(measurement_path, suffix) for suffix in dict.fromkeys(suffixes)]


def _sidecar(measurement_path: str | Path, suffix: str) -> Path:
    path = Path(measurement_path)
    return path.with_name(path.stem + suffix)


def save_operator_artifacts(op: LinearOperator, measurement_path: str | Path) -> list[Path]:
    """Write ``Y.operator.json`` beside the measurement ``Y`` (+ ``Y.mask.png``, ``Y.kernel.npy`` or
    ``Y.kspace_mask.npy``); returns the written paths, the JSON last."""
    written, files = [], {}
    array = op._array()
    if array is not None:
        path = _sidecar(measurement_path, op.ARTIFACT)
        if path.suffix == ".png":
            import imageio.v3 as iio

            image = (np.asarray(array) != 0).astype(np.uint8) * 255
            atomic_save_with(path, lambda tmp: iio.imwrite(tmp, image))
        else:
            atomic_save_with(path, lambda tmp: np.save(tmp, array))
        files[op.ARRAY] = path.name
        written.append(path)
    record = {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "measurement": Path(measurement_path).name,  # y.png and y.npy share the stem, not the record
        "spec": op.spec(),
        "params": op.params(),
        "image_shape": list(op.image_shape),
        "measurement_shape": list(op.measurement_shape),
        "files": files,
    }
    sidecar = _sidecar(measurement_path, ".operator.json")
    atomic_write_json(sidecar, record)
    return [*written, sidecar]


def _other_owner(record, sidecar: Path, name: str) -> str | None:
    """The other measurement an operator record was written for, when that file is still beside it (else None:
    the record is ``name``'s, an older record without the field, or the measurement was renamed)."""
    owner = record.get("measurement") if isinstance(record, dict) else None
    if isinstance(owner, str) and owner != name and (sidecar.parent / owner).is_file():
        return owner
    return None


def record_owner(sidecar: Path, name: str) -> str | None:
    """:func:`_other_owner` of the record file ``sidecar`` (None when it is missing or unreadable)."""
    try:
        return _other_owner(json.loads(sidecar.read_text(encoding="utf-8")), sidecar, name)
    except (OSError, ValueError):
        return None


def _read_record(sidecar: Path, measurement_path: str | Path) -> tuple[OperatorSpec, tuple[int, int, int], dict]:
    """The record's spec, image shape and files; refused when it was written for another measurement that
    is still beside it (``y.png`` and ``y.tif`` share ``y.operator.json``). A renamed measurement is fine."""
    name = Path(measurement_path).name
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MetadipError(f"{sidecar} is not a readable metadip operator record ({exc})") from None
    owner = _other_owner(record, sidecar, name)
    if owner is not None:
        raise MetadipError(
            f"{sidecar.name} describes {owner}, not {name} (the two share a file stem); "
            "move one of them to another name or folder"
        )
    try:
        return parse_operator_spec(record["spec"]), _image_shape(record["image_shape"]), dict(record["files"])
    except MetadipError as exc:
        raise MetadipError(f"{sidecar}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise MetadipError(f"{sidecar} is not a readable metadip operator record ({exc})") from None


def load_operator_for_measurement(
    measurement_path: str | Path,
    spec: str | OperatorSpec | None = None,
    mask_path: str | Path | None = None,
    kernel_path: str | Path | None = None,
    measurement_shape: tuple[int, ...] | None = None,
) -> LinearOperator:
    """Rebuild the operator that produced the measurement at ``measurement_path``.

    With ``Y.operator.json`` beside it, the recorded operator (same mask/kernel) is rebuilt; a user ``spec``
    must name the same family and may only change ``sigma``/``poisson``; explicit mask/kernel files replace
    the recorded ones. Without it, ``spec`` and ``measurement_shape`` (C, H, W or B, C, H, W) are required,
    the image shape is the measurement shape (× factor for superres), and families with drawn parameters
    need their file (``--mask`` for inpaint/fourier, ``--kernel`` or ``angle=`` for motion blur).
    """
    sidecar = _sidecar(measurement_path, ".operator.json")
    paths = {"mask": mask_path, "kernel": kernel_path}
    user = parse_operator_spec(spec) if isinstance(spec, str) else spec
    if user is not None:
        user = OperatorSpec(user.name, _validate(user.name, user.params))
    if sidecar.is_file():
        saved, image_shape, files = _read_record(sidecar, measurement_path)
        params = dict(saved.params)
        if user is not None:
            if user.name != saved.name:
                raise MetadipError(
                    f"operator {user.name} does not match {saved.name} recorded in {sidecar.name}"
                )
            for key, value in user.params.items():
                if key not in NOISE_KEYS and params.get(key) != value:
                    raise MetadipError(
                        f"{key}={_format(value)} conflicts with {key}={_format(params.get(key))} recorded in "
                        f"{sidecar.name}; only {', '.join(NOISE_KEYS)} may be overridden"
                    )
            params.update(user.params)
        chosen = OperatorSpec(saved.name, params)
        for what, name in files.items():
            paths[what] = paths.get(what) or sidecar.parent / name
    else:
        if user is None:
            raise MetadipError(
                f"no {sidecar.name} beside {measurement_path}; give the operator spec (--operator)"
            )
        if measurement_shape is None:
            raise MetadipError(f"the shape of {measurement_path} is needed to rebuild its operator")
        channels, height, width = _image_shape(measurement_shape)
        if user.name == "superres":
            factor = user.params.get("factor", SuperRes.KEYS["factor"].default)
            height, width = height * factor, width * factor
        image_shape, chosen = (channels, height, width), user
        cls = _family(user.name)
        motion = (
            user.name == "deblur" and user.params.get("kernel") == "motion" and "angle" not in user.params
        )
        if (cls.ARRAY == "mask" and paths["mask"] is None) or (motion and paths["kernel"] is None):
            fix = "--mask" if cls.ARRAY == "mask" else "--kernel or angle="
            raise MetadipError(
                f"{user.name} needs {fix} to rebuild the operator of {measurement_path} "
                f"(no {sidecar.name} found)"
            )
    mask = load_mask(paths["mask"], image_shape[1:]) if paths["mask"] is not None else None
    kernel = load_kernel(paths["kernel"]) if paths["kernel"] is not None else None
    op = build_operator(chosen, image_shape, mask=mask, kernel=kernel)
    expected = tuple(op.measurement_shape[1:])
    if measurement_shape is not None and tuple(measurement_shape)[-2:] != expected:
        got = tuple(measurement_shape)[-2:]
        raise MetadipError(
            f"{measurement_path} is {got[0]}×{got[1]} but its operator expects {expected[0]}×{expected[1]}"
        )
    return op
