"""The five operator families — :class:`Denoise`, :class:`Inpaint`, :class:`SuperRes`, :class:`Deblur`,
:class:`Fourier` — their blur kernels, and :data:`OPERATORS` (family name → class)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from metadip.errors import MetadipError
from metadip.operators.base import (
    _ANY,
    _CENTRE,
    _COUNT,
    _FACTOR,
    _FRACTION,
    _POSITIVE,
    LinearOperator,
    _binary_mask,
    _kernel_array,
    _Key,
    _rand,
    _randperm,
)


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
