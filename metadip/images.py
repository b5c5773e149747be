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
(ITU-R 601, scikit-image's weights) for grey tasks."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from metadip.errors import MetadipError
from metadip.imageio import read_image, read_sample, to_channels

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

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SAMPLES = "samples"  # the source name for the bundled scikit-image pictures


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
    """Names of the images in ``source`` (``"samples"`` or a folder), in a fixed order."""
    if str(source) == SAMPLES:
        return list(NATURAL_SAMPLES)
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


def load_image(source: str | os.PathLike, name: str, channels: int = 3) -> torch.Tensor:
    """Load image ``name`` of ``source`` as 1×channels×H×W float32 in [0, 1]."""
    if str(source) == SAMPLES:
        return load_sample(name, channels)
    image = read_image(Path(source) / name, max_pixels=None)
    return to_channels(image, channels, name)


def load_images(
    source: str | os.PathLike, names: Sequence[str], channels: int = 3, max_side: int | None = None
) -> dict[str, torch.Tensor]:
    """Load ``names`` as a name → 1×C×H×W dict; with ``max_side`` larger images are downscaled (anti-aliased)
    so their longer side is at most ``max_side`` (keeps memory and crop statistics sane for huge files)."""
    images: dict[str, torch.Tensor] = {}
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
