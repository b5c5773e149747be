"""Image sources for meta-training: scikit-image's bundled photographs or any folder, a documented train /
held-out split, and random multi-scale crops with flips and 90° rotations drawn from an explicit generator.

Sample images (all ship with scikit-image, no download). Only natural photographs and micrographs are used —
synthetic pictures (checkerboard, colorwheel, logo, phantom, binary blobs, horse silhouette) teach the prior
nothing about images, ``cat`` is the same file as ``chelsea`` (it would leak a held-out picture into training)
and ``clock`` is motion-blurred (a bad target for deblurring tasks).

**Default split** (:data:`DEFAULT_HELD_OUT`): ``astronaut``, ``camera``, ``coffee`` and ``chelsea`` are held
out — they are the classic DIP test pictures and the benchmarks evaluate on them — and never enter
meta-training. The other thirteen (:data:`DEFAULT_TRAIN`) are the training set. A checkpoint records both
lists.

For a folder source every ``.png/.jpg/.jpeg/.tif/.tiff/.bmp`` file below it (recursively, sorted by relative
path) is an image named by its POSIX relative path; ``held_out`` entries match a relative path, a file name or
a stem. Grey images are repeated to three channels for RGB tasks; colour images are converted to luminance
(ITU-R 601, scikit-image's weights) for grey tasks.

The procedural source ``"dead-leaves"`` (:func:`dead_leaves`, :class:`DeadLeaves`) renders a fresh occlusion
picture for every task instead of cropping a photograph; ``tasks.dead_leaves`` mixes it into any source. The
procedural sources ``"phantoms"`` and ``"phantoms-complex"`` (:mod:`metadip.phantoms`) render a fresh MRI-like
head phantom per task (the complex one as 2 channels, real and imaginary: ``tasks.channels = 2``).

``metadip pretrain --images DIR`` checks a folder first (:func:`scan_folder`: every picture readable, one
channel count; :func:`check_picture_sizes`: none smaller than the crop size) and holds out a seeded random subset
(:func:`seeded_held_out`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from metadip.errors import MetadipError
from metadip.imageio import IMAGE_EXTENSIONS, read_image, read_sample, to_channels
from metadip.phantoms import PHANTOMS, PHANTOMS_COMPLEX, Phantoms

#: Natural photographs / micrographs bundled with scikit-image, usable for meta-training and evaluation.
NATURAL_SAMPLES: dict[str, str] = {
    "astronaut": "RGB portrait, 512×512",
    "camera": "grey cameraman, 512×512",
    "coffee": "RGB coffee cup, 400×600",
    "chelsea": "RGB cat, 300×451",
    "rocket": "RGB rocket launch, 427×640",
    "coins": "grey coins, 303×384",
    "moon": "grey lunar surface, 512×512",
    "page": "grey scanned text page, 191×384",
    "text": "grey text on a wall, 172×448",
    "brick": "grey brick texture, 512×512",
    "grass": "grey grass texture, 512×512",
    "gravel": "grey gravel texture, 512×512",
    "retina": "RGB fundus photograph, 1411×1411",
    "hubble_deep_field": "RGB Hubble deep field, 872×1000",
    "immunohistochemistry": "RGB stained tissue micrograph, 512×512",
    "cell": "grey microscopy, 660×550",
    "motorcycle": "RGB motorcycle (left view of skimage's stereo pair), 500×741",
}

#: Held out of meta-training by default (the DIP test pictures; benchmarks evaluate on them).
DEFAULT_HELD_OUT: tuple[str, ...] = ("astronaut", "camera", "coffee", "chelsea")
#: More held-out natural photographs (grey, from PyWavelets' ``pywt.data``), never in any training list; the
#: evaluation suites list them explicitly beside :data:`DEFAULT_HELD_OUT`.
EXTRA_HELD_OUT: tuple[str, ...] = ("ascent", "aero")
#: The default meta-training images: every natural sample that is not held out.
DEFAULT_TRAIN: tuple[str, ...] = tuple(n for n in NATURAL_SAMPLES if n not in DEFAULT_HELD_OUT)

SAMPLES = "samples"  # the source name for the bundled scikit-image pictures
DEAD_LEAVES = "dead-leaves"  # the source name of the procedural dead-leaves pictures (:class:`DeadLeaves`)
#: The procedural sources (one name each; :func:`load_images` gives a generator object, not a tensor).
PROCEDURAL_SOURCES: tuple[str, ...] = (DEAD_LEAVES, PHANTOMS, PHANTOMS_COMPLEX)


def load_sample(name: str, channels: int = 3) -> torch.Tensor:
    """A bundled sample (:data:`NATURAL_SAMPLES`) at native size: 1×channels×H×W float32 in [0, 1]."""
    key = str(name).strip().lower()
    if key not in NATURAL_SAMPLES:
        raise MetadipError(f"unknown sample image {name!r}; valid: {', '.join(NATURAL_SAMPLES)}")
    return to_channels(read_sample(key), channels, key)


def find_image_files(folder: str | os.PathLike) -> list[Path]:
    """Every image file below ``folder`` (recursive), sorted by relative POSIX path."""
    root = Path(folder)
    if not root.exists():
        raise MetadipError(f"image folder not found: {root}")
    if not root.is_dir():
        raise MetadipError(f"image source {root} is not a folder")
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def list_images(source: str | os.PathLike = SAMPLES) -> list[str]:
    """Names of the images in ``source`` (``"samples"``, a procedural source or a folder), in a fixed order. A
    procedural source (``dead-leaves``, ``phantoms``, ``phantoms-complex``) has one name, its own."""
    if str(source) == SAMPLES:
        return list(NATURAL_SAMPLES)
    if str(source) in PROCEDURAL_SOURCES:
        return [str(source)]
    root = Path(source)
    names = [p.relative_to(root).as_posix() for p in find_image_files(root)]
    if not names:
        raise MetadipError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found below {root}")
    return names


def _matches(name: str, pattern: str) -> bool:
    pattern = pattern.strip()
    path = Path(name)
    return name == pattern or path.name == pattern or path.stem == pattern


def split_images(
    names: Sequence[str], held_out: Iterable[str] = DEFAULT_HELD_OUT
) -> tuple[list[str], list[str]]:
    """Deterministic split of ``names`` into (train, held_out), both in the order of ``names``.

    A ``held_out`` entry matches a name, a file name or a stem; an entry that matches nothing is an error (a
    typo would otherwise silently train on the picture it meant to hold out).
    """
    patterns = [str(p) for p in held_out]
    unmatched = [p for p in patterns if not any(_matches(n, p) for n in names)]
    if unmatched:
        raise MetadipError(f"held-out image(s) {', '.join(unmatched)} not found among the source's images")
    held = [n for n in names if any(_matches(n, p) for p in patterns)]
    train = [n for n in names if n not in held]
    return train, held


def seeded_held_out(names: Sequence[str], count: int, generator: torch.Generator) -> list[str]:
    """``count`` names held out of training, chosen by a ``torch.randperm`` of ``names`` (pass them in a fixed
    order, e.g. :func:`list_images`'s sorted relative paths) drawn from ``generator``; returned in the order of
    ``names``. At least one name must be left for training."""
    if count < 0:
        raise MetadipError(f"cannot hold out {count} pictures")
    if count >= len(names):
        raise MetadipError(
            f"{len(names)} picture{'s' if len(names) != 1 else ''} cannot be split into {count} held out and at "
            f"least 1 for training (needs {count + 1} or more)"
        )
    chosen = set(torch.randperm(len(names), generator=generator)[:count].tolist())
    return [name for i, name in enumerate(names) if i in chosen]


@dataclass(frozen=True)
class FolderPicture:
    """One picture of a folder source as :func:`scan_folder` found it (channels and size as read)."""

    name: str
    channels: int
    height: int
    width: int


def scan_folder(folder: str | os.PathLike) -> list[FolderPicture]:
    """Read every picture below ``folder`` once and refuse a folder meta-training cannot use, with one-line
    errors: missing, empty, no image files, an unreadable picture, or grey and colour pictures mixed (metadip
    does not convert them silently: an init is trained for one channel count). See also
    :func:`check_picture_sizes`."""
    root = Path(folder)
    files = find_image_files(root)
    if not files:
        others = sum(1 for p in root.rglob("*") if p.is_file())
        if not others:
            raise MetadipError(f"image folder {root} is empty")
        raise MetadipError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found below {root} ({others} other "
            f"file{'s' if others != 1 else ''})"
        )
    found = []
    for path in files:
        image = read_image(path, max_pixels=None, min_size=1)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        found.append(FolderPicture(path.relative_to(root).as_posix(), int(image.shape[1]), height, width))
    grey = [p.name for p in found if p.channels == 1]
    colour = [p.name for p in found if p.channels != 1]
    if grey and colour:
        raise MetadipError(
            f"{root} mixes grey ({len(grey)}, e.g. {grey[0]}) and colour ({len(colour)}, e.g. {colour[0]}) "
            "pictures; an init is trained for one channel count, so convert them to one kind first"
        )
    return found


def check_picture_sizes(
    folder: str | os.PathLike, pictures: Sequence[FolderPicture], min_side: int, max_side: int | None = None
) -> None:
    """Refuse a picture whose shorter side — after the ``max_side`` downscale :func:`load_images` applies — is
    below ``min_side`` (the crop size): it would be upscaled into blurry crops."""
    for picture in pictures:
        height, width = picture.height, picture.width
        shorter, longer, scaled = min(height, width), max(height, width), ""
        if max_side is not None and longer > max_side:
            shorter = max(1, round(shorter * max_side / longer))
            scaled = f" ({shorter} px on its shorter side once downscaled to {max_side} px)"
        if shorter < min_side:
            raise MetadipError(
                f"{Path(folder) / picture.name} is {width}×{height} px{scaled}, smaller than the {min_side} px "
                "training crops; remove it or choose a smaller crop size (--size)"
            )


def load_image(source: str | os.PathLike, name: str, channels: int = 3) -> torch.Tensor:
    """Load image ``name`` of ``source`` as 1×channels×H×W float32 in [0, 1]."""
    if str(source) == SAMPLES:
        return load_sample(name, channels)
    image = read_image(Path(source) / name, max_pixels=None)
    return to_channels(image, channels, name)


def load_images(
    source: str | os.PathLike, names: Sequence[str], channels: int = 3, max_side: int | None = None
) -> dict[str, torch.Tensor | DeadLeaves | Phantoms]:
    """Load ``names`` as a name → 1×C×H×W dict; with ``max_side`` larger images are downscaled (anti-aliased)
    so their longer side is at most ``max_side`` (keeps memory and crop statistics sane for huge files).

    For the source ``"dead-leaves"`` the value is a :class:`DeadLeaves` generator instead of a tensor (the task
    sampler renders a fresh picture per task; ``channels`` and ``max_side`` do not apply); likewise a
    :class:`metadip.phantoms.Phantoms` for ``"phantoms"`` / ``"phantoms-complex"``."""
    if str(source) in PROCEDURAL_SOURCES:
        unknown = [n for n in names if n != str(source)]
        if unknown:
            raise MetadipError(f"the {source} source has one image, {str(source)!r}; got {', '.join(unknown)}")
        if str(source) == DEAD_LEAVES:
            return {name: DeadLeaves() for name in names}
        return {name: Phantoms(complex_valued=str(source) == PHANTOMS_COMPLEX) for name in names}
    images: dict[str, torch.Tensor | DeadLeaves | Phantoms] = {}
    for name in names:
        image = load_image(source, name, channels)
        if max_side is not None and max(image.shape[-2:]) > max_side:
            scale = max_side / max(image.shape[-2:])
            size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
            image = resize(image, size)
        images[name] = image.contiguous()
    return images


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a 1×C×H×W tensor with anti-aliasing when shrinking, clamped to [0, 1]."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    out = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)
    return out.clamp(0.0, 1.0)


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=generator))


def random_crop(
    image: torch.Tensor, size: int, generator: torch.Generator, scale: tuple[float, float] = (1.0, 4.0)
) -> torch.Tensor:
    """A random square window resized to ``size``×``size``.

    The window side is ``size·s`` with ``s`` log-uniform in ``scale`` (so each octave of zoom is equally
    likely), clamped to the image's shorter side; the window position is uniform. Images smaller than ``size``
    are upscaled first. Draws exactly three numbers from ``generator``."""
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi:
        raise MetadipError(f"crop scale range must satisfy 0 < low <= high, got {scale}")
    height, width = image.shape[-2:]
    if min(height, width) < size:
        factor = size / min(height, width)
        image = resize(image, (max(size, math.ceil(height * factor)), max(size, math.ceil(width * factor))))
        height, width = image.shape[-2:]
    s = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * _uniform(generator))
    side = int(min(max(1, round(size * s)), height, width))
    top = _randint(height - side + 1, generator)
    left = _randint(width - side + 1, generator)
    window = image[..., top : top + side, left : left + side]
    return resize(window, (size, size)).contiguous()


def augment(
    image: torch.Tensor, generator: torch.Generator, *, flips: bool = True, rotations: bool = True
) -> torch.Tensor:
    """Random horizontal flip and random multiple of 90° rotation (square images). Always draws two numbers
    so the stream does not depend on which augmentations are enabled."""
    flip = _randint(2, generator)
    quarter = _randint(4, generator)
    if flips and flip:
        image = image.flip(-1)
    if rotations and quarter:
        image = torch.rot90(image, quarter, dims=(-2, -1))
    return image.contiguous()


def random_patch(
    image: torch.Tensor,
    size: int,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (1.0, 4.0),
    flips: bool = True,
    rotations: bool = True,
    min_std: float = 0.0,
    attempts: int = 10,
) -> torch.Tensor:
    """:func:`random_crop` + :func:`augment`; with ``min_std`` > 0 near-flat crops (e.g. the black border of
    the retina or Hubble pictures) are redrawn up to ``attempts`` times (the last draw is kept)."""
    for _ in range(max(1, attempts)):
        patch = random_crop(image, size, generator, scale)
        if min_std <= 0 or float(patch.std()) >= min_std:
            break
    return augment(patch, generator, flips=flips, rotations=rotations)


# ------------------------------------------------------------------------------------------------------------
# procedural source: dead leaves

_PAIRS_PER_ROUND = 1 << 20  # (shape, pixel) pairs tested per round of dead leaves, roughly


def _leaves_per_round(size: int, sigma_power: float, r_min: float, r_max: float) -> int:
    """Shapes per round: about :data:`_PAIRS_PER_ROUND` bounding-box pixels, 16 to 1024 shapes (a pure function
    of the parameters, so the draws stay deterministic)."""
    r = torch.linspace(r_min, r_max, 4096, dtype=torch.float64)
    density = r ** (-sigma_power)
    box = (2 * r + 1).clamp(max=size) ** 2
    mean_box = float((box * density).sum() / density.sum())
    return int(min(1024, max(16, _PAIRS_PER_ROUND // max(1.0, mean_box))))


def power_law_radii(
    count: int, generator: torch.Generator, sigma_power: float = 3.0, r_min: float = 2.0, r_max: float = 64.0
) -> torch.Tensor:
    """``count`` radii (float64) from p(r) ∝ r^(−sigma_power) on [r_min, r_max], by inverting the CDF.

    sigma_power = 3 is the scale-invariant law of the dead-leaves model (Lee, Mumford & Huang 2001): every
    octave of scale holds the same covered area. Draws exactly ``count`` numbers from ``generator``."""
    if not 0 < r_min <= r_max:
        raise MetadipError(f"dead leaves radii must satisfy 0 < r_min <= r_max, got [{r_min}, {r_max}]")
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    if abs(sigma_power - 1.0) < 1e-9:
        return r_min * (r_max / r_min) ** u
    a = 1.0 - sigma_power
    return (r_min**a + u * (r_max**a - r_min**a)) ** (1.0 / a)


def _pink_noise(channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """A channels×size×size 1/f (amplitude) noise field, zero mean and unit std per channel."""
    white = torch.randn(channels, size, size, generator=generator)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.fftfreq(size)[None, :]
    amplitude = 1.0 / torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / size)
    amplitude[0, 0] = 0.0
    field = torch.fft.ifft2(torch.fft.fft2(white) * amplitude).real
    field = field - field.mean(dim=(-2, -1), keepdim=True)
    return field / field.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def dead_leaves(
    size: int,
    channels: int,
    generator: torch.Generator,
    *,
    sigma_power: float = 3.0,
    r_min: float = 2.0,
    r_max: float | None = None,
    textured: bool = True,
    rectangles: float = 0.0,
    max_shapes: int = 50_000,
) -> torch.Tensor:
    """A dead-leaves picture (Lee, Mumford & Huang 2001; Achddou et al. 2021): 1×channels×size×size float32 in
    [0, 1].

    Occluding shapes are dropped front to back (the first shape to cover a pixel owns it) in rounds of 16–1024
    until every pixel is covered or ``max_shapes`` were drawn (pixels still bare get a background colour).
    Centres are uniform over the image, radii follow p(r) ∝ r^(−sigma_power) on [r_min, r_max] pixels
    (``r_max`` defaults to ``size``), colours are uniform in RGB (uniform grey for ``channels=1``). A fraction
    ``rectangles`` of the shapes are axis-aligned rectangles (half sides r·s and r/s, s log-uniform in
    [e^−0.5, e^0.5]) instead of discs. ``textured`` adds a mild per-shape texture: a linear colour gradient
    (±0.1 per channel across the shape) plus a 1/f noise field at a per-shape strength up to 0.05.

    Deterministic for a given ``generator`` state; the draws do not depend on ``textured`` or ``rectangles``
    (only their use does). About 15–20 ms at 64 px and 0.1–0.15 s at 256 px on one (busy) CPU thread."""
    if channels not in (1, 3):
        raise MetadipError(f"dead leaves channels must be 1 or 3, got {channels}")
    if size < 1:
        raise MetadipError(f"dead leaves size must be a positive number of pixels, got {size}")
    if not 0.0 <= rectangles <= 1.0:
        raise MetadipError(f"dead leaves rectangles must be a fraction in [0, 1], got {rectangles}")
    r_max = float(size) if r_max is None else float(r_max)
    if not 0 < r_min <= r_max:
        raise MetadipError(f"dead leaves radii must satisfy 0 < r_min <= r_max, got [{r_min}, {r_max}]")
    rounds = _leaves_per_round(size, sigma_power, r_min, r_max)
    background = torch.rand(channels, generator=generator)
    noise = _pink_noise(channels, size, generator)
    unowned = size * size  # label of a pixel no shape covers (yet)
    label = torch.full((size * size,), unowned, dtype=torch.long)
    drawn: list[torch.Tensor] = []  # per round: K×(7 + 2·channels) shape parameters
    total = 0
    while total < max_shapes:
        bare = (label == unowned).reshape(size, size)
        if not bool(bare.any()):
            break
        integral = F.pad(bare.to(torch.int32).cumsum(0).cumsum(1), (1, 0, 1, 0))  # integral image
        k = min(rounds, max_shapes - total)
        centre = torch.rand(k, 2, generator=generator) * size
        radius = power_law_radii(k, generator, sigma_power, r_min, r_max).float()
        is_rect = torch.rand(k, generator=generator) < rectangles
        stretch = torch.exp(torch.rand(k, generator=generator) - 0.5)
        angle = torch.rand(k, generator=generator) * (2 * math.pi)
        strength = torch.rand(k, generator=generator) * 0.05
        colour = torch.rand(k, channels, generator=generator)
        slope = (torch.rand(k, channels, generator=generator) - 0.5) * 0.2
        params = torch.cat([centre, radius[:, None], is_rect[:, None].float(), stretch[:, None]], dim=1)
        drawn.append(torch.cat([params, angle[:, None], strength[:, None], colour, slope], dim=1))
        half_x = torch.where(is_rect, radius * stretch, radius)
        half_y = torch.where(is_rect, radius / stretch, radius)
        # every (shape, pixel) pair inside the shape's bounding box, then the frontmost owner of each pixel
        x0 = torch.ceil(centre[:, 0] - half_x - 0.5).clamp(0, size).long()
        x1 = (torch.floor(centre[:, 0] + half_x - 0.5) + 1).clamp(0, size).long()
        y0 = torch.ceil(centre[:, 1] - half_y - 0.5).clamp(0, size).long()
        y1 = (torch.floor(centre[:, 1] + half_y - 0.5) + 1).clamp(0, size).long()
        x1, y1 = torch.maximum(x0, x1), torch.maximum(y0, y1)
        width, height = x1 - x0, y1 - y0
        bare_in_box = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        counts = torch.where(bare_in_box > 0, width * height, 0)  # shapes over covered pixels only: skip
        shape = torch.repeat_interleave(torch.arange(k), counts)
        offset = torch.arange(shape.numel()) - (torch.cumsum(counts, 0) - counts)[shape]
        px = x0[shape] + offset % width[shape]
        py = y0[shape] + offset // width[shape]
        dx = (px.float() + 0.5 - centre[shape, 0]).abs_()
        dy = (py.float() + 0.5 - centre[shape, 1]).abs_()
        inside = torch.where(
            is_rect[shape], (dx <= half_x[shape]) & (dy <= half_y[shape]), dx * dx + dy * dy <= radius[shape] ** 2
        )
        label.scatter_reduce_(0, (py * size + px)[inside], shape[inside] + total, reduce="amin")
        total += k
    label = torch.where(label == unowned, -1, label)
    return _paint(drawn, label, background, noise, size, channels, textured)


def _paint(
    drawn: list[torch.Tensor],
    label: torch.Tensor,
    background: torch.Tensor,
    noise: torch.Tensor,
    size: int,
    channels: int,
    textured: bool,
) -> torch.Tensor:
    """Colour each pixel by the shape that owns it (``label``; −1: the background)."""
    covered = label >= 0
    image = background[:, None].expand(channels, size * size).clone()
    if drawn and bool(covered.any()):
        table = torch.cat(drawn)[label[covered]]
        colour = table[:, 7 : 7 + channels].T
        if textured:
            index = torch.nonzero(covered).flatten()
            ys = (index // size).float() + 0.5
            xs = (index % size).float() + 0.5
            centre_x, centre_y, radius = table[:, 0], table[:, 1], table[:, 2]
            angle, strength = table[:, 5], table[:, 6]
            along = ((xs - centre_x) * torch.cos(angle) + (ys - centre_y) * torch.sin(angle)) / radius
            slope = table[:, 7 + channels :].T
            colour = colour + slope * along.clamp(-1.5, 1.5) + strength * noise.reshape(channels, -1)[:, covered]
        image[:, covered] = colour
    return image.reshape(1, channels, size, size).clamp_(0.0, 1.0).contiguous()


@dataclass(frozen=True)
class DeadLeaves:
    """The ``dead-leaves`` image source: every :meth:`draw` renders a fresh :func:`dead_leaves` picture at the
    crop size (no crop, flip or rotation: the model is already translation, scale and rotation invariant in
    law). :func:`load_images` returns one of these for the source ``"dead-leaves"``, and the task sampler draws
    from it like from a picture."""

    sigma_power: float = 3.0
    r_min: float = 2.0
    r_max: float | None = None
    textured: bool = True
    rectangles: float = 0.0

    def draw(self, size: int, channels: int, generator: torch.Generator) -> torch.Tensor:
        return dead_leaves(
            size,
            channels,
            generator,
            sigma_power=self.sigma_power,
            r_min=self.r_min,
            r_max=self.r_max,
            textured=self.textured,
            rectangles=self.rectangles,
        )
