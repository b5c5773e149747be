"""The operator contract: :class:`LinearOperator` (``A``, ``A_adjoint``, measurement mask, canonical spec), the
typed spec keys its families declare, the checks a mask or kernel array passes, and :func:`simulate`
(``y = A x + noise``). The families are in :mod:`metadip.operators.families`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from metadip.errors import MetadipError
from metadip.noise import add_noise


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
