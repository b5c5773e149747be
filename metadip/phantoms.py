"""Procedural MRI-like phantoms: a training source for magnetic-resonance (``fourier``) tasks that never uses the
Shepp–Logan test picture.

:func:`phantom` draws a head-like picture: a bright skull ring (a soft-edged outer ellipse) around a darker
brain ellipse, 3–8 inner ellipses of random size, position, orientation and intensity (ventricles, lesions),
1–4 smooth Gaussian blobs (±0.15, bias-field-like), and a mild smooth texture (low-pass noise, amplitude
0.01–0.04) inside the head; the background is black. Every parameter is drawn from the ``torch.Generator`` in
a fixed order, so a phantom is a pure function of the generator's state. About 5 ms at 64 px and 20 ms at 256 px
on one (busy) CPU thread.

Value ranges (1×C×H×W float32, like every metadip image):

* real (``complex_valued=False``): 1×1×H×W magnitude in [0, 1].
* complex (``complex_valued=True``): 1×2×H×W, channel 0 the real part and channel 1 the imaginary part of
  ``m·exp(iφ)``, where ``m`` is *the same magnitude the real phantom of that generator state draws* and φ a
  smooth random phase (a linear ramp plus a Gaussian bump plus low-pass noise) kept inside [0, π/2]. Both
  channels therefore lie in [0, 1] and the magnitude ``sqrt(re² + im²)`` is ``m``. The restricted phase range
  (real scanners' phase wraps freely) is a deliberate choice: metadip treats a complex image as two real
  channels in [0, 1] — the generators' 2-channel outputs, the PSNR of the meta-learners (clamped to [0, 1])
  and the data range of :mod:`metadip.metrics` all assume it. :class:`metadip.operators.Fourier` transforms
  each channel on its own, so a 2-channel phantom is measured as ``mask·FFT(re)`` and ``mask·FFT(im)``; the
  physical single-coil measurement ``mask·FFT(re + i·im)`` is their linear combination (``y_re + i·y_im``).

:class:`Phantoms` is the ``data.source = "phantoms"`` / ``"phantoms-complex"`` source
(:func:`metadip.images.load_images`): like :class:`metadip.images.DeadLeaves`, the task sampler renders a fresh
phantom at the crop size for every task.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from metadip.errors import MetadipError

PHANTOMS = "phantoms"  # data.source of the real phantoms
PHANTOMS_COMPLEX = "phantoms-complex"  # data.source of the complex phantoms (2 channels: real, imaginary)


def _u(generator: torch.Generator, low: float = 0.0, high: float = 1.0, n: int | None = None) -> torch.Tensor:
    shape = () if n is None else (n,)
    return low + (high - low) * torch.rand(shape, generator=generator)


def _smooth_noise(size: int, generator: torch.Generator, cutoff: float) -> torch.Tensor:
    """A size×size Gaussian low-pass noise field (cut-off ``cutoff`` cycles/pixel), zero mean, max |·| = 1."""
    white = torch.randn(size, size, generator=generator)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.fftfreq(size)[None, :]
    field = torch.fft.ifft2(torch.fft.fft2(white) * torch.exp(-(fx**2 + fy**2) / (2 * cutoff**2))).real
    field = field - field.mean()
    return field / field.abs().max().clamp_min(1e-12)


def _ellipse(xs, ys, cx, cy, a, b, angle, edge) -> torch.Tensor:
    """Soft indicator (0..1) of the ellipse with centre (cx, cy), semi-axes (a, b), rotation ``angle``; the edge
    ramps over about ``edge`` (same units as the axes)."""
    cos, sin = math.cos(angle), math.sin(angle)
    u = ((xs - cx) * cos + (ys - cy) * sin) / a
    v = (-(xs - cx) * sin + (ys - cy) * cos) / b
    radius = torch.sqrt(u * u + v * v)
    return torch.sigmoid((1.0 - radius) * min(a, b) / edge)


def phantom(size: int, generator: torch.Generator, *, complex_valued: bool = False) -> torch.Tensor:
    """A random MRI-like head phantom: 1×1×size×size in [0, 1], or with ``complex_valued`` 1×2×size×size
    (real, imaginary) with a smooth phase in [0, π/2] (both channels in [0, 1]; see the module docstring).

    Deterministic for a given ``generator`` state; the complex phantom's magnitude equals the real phantom
    drawn from the same state (the phase is drawn after it)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise MetadipError(f"phantom size must be an integer >= 8 pixels, got {size!r}")
    ys, xs = _pixel_grid(size)
    edge = 1.0 / size  # about half a pixel in [-1, 1] units: anti-aliased, not blurred

    # head: skull ring around the brain
    cx, cy = float(_u(generator, -0.05, 0.05)), float(_u(generator, -0.05, 0.05))
    a, b = float(_u(generator, 0.68, 0.85)), float(_u(generator, 0.80, 0.94))
    tilt = float(_u(generator, -0.3, 0.3))
    skull = float(_u(generator, 0.04, 0.09))  # ring thickness
    skull_level, brain_level = float(_u(generator, 0.75, 1.0)), float(_u(generator, 0.25, 0.55))
    head = _ellipse(xs, ys, cx, cy, a, b, tilt, edge)
    brain = _ellipse(xs, ys, cx, cy, a - skull, b - skull, tilt, edge)
    image = skull_level * head + (brain_level - skull_level) * brain

    # inner ellipses (replace the local intensity, soft edges)
    count = 3 + int(torch.randint(6, (), generator=generator))
    for _ in range(count):
        radius, theta = math.sqrt(float(_u(generator))), float(_u(generator, 0.0, 2 * math.pi))
        ex = cx + 0.75 * (a - skull) * radius * math.cos(theta)
        ey = cy + 0.75 * (b - skull) * radius * math.sin(theta)
        ea, eb = float(_u(generator, 0.04, 0.30)), float(_u(generator, 0.04, 0.30))
        angle = float(_u(generator, 0.0, math.pi))
        level = float(_u(generator, 0.0, 1.0))
        softness = edge * float(_u(generator, 1.0, 4.0))
        mask = _ellipse(xs, ys, ex, ey, ea, eb, angle, softness) * brain
        image = image * (1 - mask) + level * mask

    # smooth blobs (bias-field-like intensity changes inside the brain)
    blobs = 1 + int(torch.randint(4, (), generator=generator))
    for _ in range(blobs):
        bx, by = cx + float(_u(generator, -0.5, 0.5)) * a, cy + float(_u(generator, -0.5, 0.5)) * b
        width, amplitude = float(_u(generator, 0.08, 0.3)), float(_u(generator, -0.15, 0.15))
        image = image + amplitude * brain * torch.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / (2 * width**2))

    # mild smooth texture inside the head
    texture = float(_u(generator, 0.01, 0.04)) * _smooth_noise(size, generator, cutoff=0.12)
    magnitude = (image + texture * head).clamp(0.0, 1.0)
    if not complex_valued:
        return magnitude.reshape(1, 1, size, size).contiguous()

    return with_smooth_phase(magnitude.reshape(1, 1, size, size), generator)


def _pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return ys, xs


def with_smooth_phase(magnitude: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A 1×1×H×H magnitude in [0, 1] as a complex picture 1×2×H×H (real, imaginary) with a random smooth phase
    in [0, π/2] drawn from ``generator``: a linear ramp plus a Gaussian bump plus low-pass noise around π/4.
    The complex :func:`phantom` is its own magnitude through this; evaluation gives a grey test picture
    (Shepp–Logan) a phase the same way."""
    if magnitude.dim() != 4 or magnitude.shape[:2] != (1, 1) or magnitude.shape[2] != magnitude.shape[3]:
        raise MetadipError(f"a complex picture needs a 1×1×H×H magnitude, got {tuple(magnitude.shape)}")
    size = int(magnitude.shape[-1])
    ys, xs = _pixel_grid(size)
    centre = math.pi / 4 + float(_u(generator, -math.pi / 16, math.pi / 16))
    ramp_x, ramp_y = float(_u(generator, -1.0, 1.0)), float(_u(generator, -1.0, 1.0))
    px, py = float(_u(generator, -0.5, 0.5)), float(_u(generator, -0.5, 0.5))
    bump_width, bump = float(_u(generator, 0.2, 0.6)), float(_u(generator, -1.0, 1.0))
    field = (
        ramp_x * xs
        + ramp_y * ys
        + bump * torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * bump_width**2))
        + 0.5 * _smooth_noise(size, generator, cutoff=0.04)
    )
    field = field / field.abs().max().clamp_min(1e-12)
    spread = float(_u(generator, 0.6, 1.0)) * (math.pi / 4 - abs(centre - math.pi / 4))
    phase = (centre + spread * field).clamp(0.0, math.pi / 2)
    m = magnitude[0, 0].float()
    parts = torch.stack([m * torch.cos(phase), m * torch.sin(phase)])
    return parts.clamp(0.0, 1.0).reshape(1, 2, size, size).contiguous()


#: Evaluation pictures: ``phantom-K`` (K = 1, 2, ...) is held-out phantom K, drawn from a generator seeded in its
#: own namespace (:func:`held_out_phantom`), never from a training task's stream.
HELD_OUT_PREFIX = "phantom-"
_HELD_OUT_NAMESPACE = "metadip held-out phantom"


def held_out_index(name: str) -> int | None:
    """K of an evaluation picture name ``phantom-K`` (K ≥ 1), else None."""
    text = str(name).strip().lower()
    if not text.startswith(HELD_OUT_PREFIX):
        return None
    digits = text[len(HELD_OUT_PREFIX) :]
    return int(digits) if digits.isdigit() and int(digits) >= 1 else None


def _namespace_generator(*parts: object) -> torch.Generator:
    """A generator seeded by a SHA-256 of ``parts``. Not :func:`metadip.tasks.make_generator` (which imports this
    module): this derivation defines the committed phantom suites' pictures, so it stays as it is."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "big"))


def held_out_phantom(index: int, size: int, *, complex_valued: bool = False) -> torch.Tensor:
    """Held-out phantom ``index`` (≥ 1) at ``size`` px: :func:`phantom` from a generator seeded by a hash of
    (this module's held-out namespace, ``index``). Training tasks seed their generators from
    :func:`metadip.tasks.derive_seed` (run seed, stream, step) and draw the operator and crop size before the
    picture, so no training task renders one of these pictures."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 1:
        raise MetadipError(f"held-out phantom index must be an integer >= 1, got {index!r}")
    return phantom(size, _namespace_generator(_HELD_OUT_NAMESPACE, index), complex_valued=complex_valued)


def evaluation_phase(magnitude: torch.Tensor, name: str) -> torch.Tensor:
    """A grey evaluation picture ``name`` (e.g. Shepp–Logan) as a complex one: :func:`with_smooth_phase` from a
    generator seeded by a hash of the name, so every run gives it the same phase."""
    return with_smooth_phase(magnitude, _namespace_generator(_HELD_OUT_NAMESPACE, "phase", name))


@dataclass(frozen=True)
class Phantoms:
    """The ``phantoms`` / ``phantoms-complex`` image source: every :meth:`draw` renders a fresh :func:`phantom`
    at the crop size (no crop, flip or rotation). ``channels``: the real source gives 1 (grey) or 3 (the grey
    phantom repeated, as a grey picture is for RGB tasks); the complex source needs ``tasks.channels = 2``
    (real, imaginary)."""

    complex_valued: bool = False

    @property
    def name(self) -> str:
        return PHANTOMS_COMPLEX if self.complex_valued else PHANTOMS

    def draw(self, size: int, channels: int, generator: torch.Generator) -> torch.Tensor:
        if self.complex_valued:
            if channels != 2:
                raise MetadipError(
                    f"the {PHANTOMS_COMPLEX} source draws 2-channel (real, imaginary) pictures; set tasks.channels "
                    f"= 2 (got {channels})"
                )
            return phantom(size, generator, complex_valued=True)
        if channels not in (1, 3):
            raise MetadipError(f"the {PHANTOMS} source draws grey pictures for tasks.channels 1 or 3, got {channels}")
        image = phantom(size, generator)
        return image.expand(1, channels, size, size).contiguous()
