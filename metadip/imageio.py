"""Reading and writing images and measurements, with one-line errors for every bad input.

Images come back as float32 tensors shaped 1×C×H×W in [0, 1] (C = 1 for grey, 3 for colour).
Conversions (never refusals) for the common modes:

* RGBA / grey+alpha: a fully opaque alpha channel is dropped; otherwise the image is composited on
  **white** (the way viewers show transparent PNGs), so transparent areas do not become black holes the
  network must fit.
* 16-bit integers are scaled by 1/65535, 8-bit by 1/255, 1-bit to {0, 1}.
* Palette (``P``) images are expanded to RGB (RGBA first if the palette has transparency); CMYK / YCbCr
  JPEGs are converted to RGB; JPEG EXIF orientation is applied.
* Grey stays one channel.
* Float TIFFs are accepted when every value is finite and in [0, 1]; anything else is an error (we do
  not guess a scale).
* Multi-frame files (animated PNG, multi-page TIFF) use the first frame.

PNG/JPEG/BMP are decoded with Pillow and TIFF with tifffile (the back ends ``skimage.io`` / imageio use),
called directly so the pixel count can be read from the header *before* decoding and so CMYK is not
mistaken for RGBA. Measurements may also be ``.npy`` arrays (real or complex). Every write is atomic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metadip.errors import MetadipError
from metadip.fileio import atomic_save_with, ensure_writable_dir

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MEASUREMENT_EXTENSIONS = (*IMAGE_EXTENSIONS, ".npy")
#: Lossy formats: fine for a reconstruction to look at, never for a measurement we write (DIP fits y exactly).
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
#: Images smaller than this (either side) are refused: DIP's encoder downsamples several times.
MIN_SIZE = 8
#: Measurements may be smaller (a super-resolution measurement is the image divided by the factor).
MIN_MEASUREMENT_SIZE = 2
#: Default pixel limit (2048²). DIP on a larger image needs a GPU and a lot of memory; raise it explicitly.
DEFAULT_MAX_PIXELS = 2048 * 2048

#: scikit-image's bundled sample images usable as ``sample:NAME`` (all ship with scikit-image, no
#: download; ``motorcycle`` is the left view of ``stereo_motorcycle``). Evaluate only on images an init
#: was not trained on.
SAMPLE_IMAGES = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "cell",
    "chelsea",
    "checkerboard",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "motorcycle",
    "page",
    "retina",
    "rocket",
    "shepp_logan_phantom",
    "text",
    "ascent",
    "aero",
)
#: Samples that come from PyWavelets (``pywt.data``; grey natural photographs, 512×512), not scikit-image. They
#: are in no training list: extra held-out pictures for evaluation.
PYWT_SAMPLES = ("ascent", "aero")


# ---------------------------------------------------------------------------------------------------------
# validation helpers


def _check_input_file(path: Path, allowed: tuple[str, ...], what: str) -> None:
    if not path.exists():
        if path.is_symlink():
            raise MetadipError(f"{what} {path} is a broken symbolic link")
        raise MetadipError(f"{what} not found: {path}")
    if path.is_dir():
        raise MetadipError(f"{what} {path} is a directory, not a file")
    suffix = path.suffix.lower()
    if suffix not in allowed:
        shown = suffix or "(none)"
        raise MetadipError(
            f"unsupported {what} extension {shown} for {path}; use one of {', '.join(allowed)}"
        )
    if not os.access(path, os.R_OK):
        raise MetadipError(f"cannot read {what} {path}: permission denied")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MetadipError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise MetadipError(f"{what} {path} is empty (0 bytes)")


def _check_size(path: Path | str, height: int, width: int, *, min_size: int, max_pixels: int | None) -> None:
    if height < min_size or width < min_size:
        raise MetadipError(f"{path} is {width}×{height} pixels; metadip needs at least {min_size}×{min_size}")
    if max_pixels is not None and height * width > max_pixels:
        raise MetadipError(
            f"{path} is {width}×{height} = {height * width:,} pixels, above the limit of {max_pixels:,}; "
            "downscale it or raise the limit with --max-pixels"
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------------
# decoding


def _header_size(path: Path) -> tuple[int, int]:
    """(height, width) read from the header without decoding the pixels."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
                axes = tif.pages[0].axes
            if "Y" in axes and "X" in axes:
                return int(shape[axes.index("Y")]), int(shape[axes.index("X")])
            return int(shape[0]), int(shape[1])
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # our own --max-pixels check replaces Pillow's bomb guard
        with Image.open(path) as image:
            width, height = image.size
        return height, width
    except MetadipError:
        raise
    except Exception as exc:
        raise MetadipError(
            f"{path} is not a readable image (corrupt or not an image file): {_one_line(exc)}"
        ) from None


def _decode_pillow(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as image:
        image.seek(0)
        image.load()
        if image.format == "JPEG":
            image = ImageOps.exif_transpose(image)
        mode = image.mode
        if mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif mode == "PA":
            image = image.convert("RGBA")
        elif mode == "1":
            return np.asarray(image.convert("L"), dtype=np.uint8) > 0
        elif mode in ("RGBa", "La"):  # premultiplied alpha
            image = image.convert("RGBA" if mode == "RGBa" else "LA")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            image = image.convert("RGB")
        array = np.asarray(image)
        if mode.startswith("I;16"):
            array = array.astype(np.uint16)
    return array


def _decode_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        array = page.asarray()
        axes = page.axes
        if "S" in axes and axes.index("S") < axes.index("Y"):  # planar configuration: S×Y×X
            array = np.moveaxis(array, axes.index("S"), -1)
    return array


def _to_float(array: np.ndarray, path: Path | str) -> np.ndarray:
    """Scale integer/bool/float pixel data to float32 in [0, 1]."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise MetadipError(
                f"{path} holds {array.dtype} values in [{low}, {high}]; expected 8- or 16-bit unsigned data"
            )
        return (array.astype(np.float64) / 65535.0).astype(np.float32)  # e.g. Pillow's 32-bit "I" for 16-bit
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise MetadipError(f"{path} contains NaN or Inf pixel values")
        low, high = float(array.min()), float(array.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise MetadipError(
                f"{path} is a floating-point image with values in [{low:.4g}, {high:.4g}]; "
                "metadip expects [0, 1], rescale it first"
            )
        return np.clip(array, 0.0, 1.0).astype(np.float32)
    raise MetadipError(f"{path} has unsupported pixel type {array.dtype}")


def _composite_alpha(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Drop a fully opaque alpha channel; otherwise composite on white."""
    if np.all(alpha >= 1.0 - 1e-6):
        return rgb
    return rgb * alpha + (1.0 - alpha)


def _to_chw(array: np.ndarray, path: Path | str) -> np.ndarray:
    """H×W / H×W×C float array → C×H×W with C in {1, 3} (alpha handled, see module docstring)."""
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise MetadipError(
            f"{path} has {array.ndim} dimensions {array.shape}; expected a 2-D grey or colour image"
        )
    channels = array.shape[-1]
    if channels == 1:
        out = array[..., :1]
    elif channels == 2:
        out = _composite_alpha(array[..., :1], array[..., 1:2])
    elif channels == 3:
        out = array
    elif channels == 4:
        out = _composite_alpha(array[..., :3], array[..., 3:4])
    else:
        raise MetadipError(f"{path} has {channels} channels; expected grey, grey+alpha, RGB or RGBA")
    return np.ascontiguousarray(np.moveaxis(out, -1, 0), dtype=np.float32)


def array_to_tensor(array: np.ndarray, name: str = "image") -> torch.Tensor:
    """Convert an H×W[×C] array of any supported dtype into a 1×C×H×W float32 tensor in [0, 1]."""
    chw = _to_chw(_to_float(np.asarray(array), name), name)
    return torch.from_numpy(chw).unsqueeze(0).contiguous()


def to_channels(image: torch.Tensor, channels: int, name: str | None = None) -> torch.Tensor:
    """1×C×H×W → 1×channels×H×W: grey→RGB by repetition, RGB→grey by luminance (ITU-R 601, scikit-image's
    weights); other channel counts are an error (naming image ``name`` when given)."""
    have = image.shape[1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return image.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor([0.2125, 0.7154, 0.0721], dtype=image.dtype).view(1, 3, 1, 1)
        return (image * weights).sum(dim=1, keepdim=True)
    if name is not None:
        raise MetadipError(f"image {name!r} has {have} channels; cannot convert to {channels}")
    raise MetadipError(f"cannot convert a {have}-channel image to {channels} channels")


def read_image(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int = MIN_SIZE,
) -> torch.Tensor:
    """Read a PNG/JPEG/TIFF/BMP image as a 1×C×H×W float32 tensor in [0, 1].

    Raises :class:`MetadipError` for a missing, unreadable, empty, corrupt, too small or too large file (the
    pixel count is checked from the header before decoding). ``max_pixels=None`` disables the size limit.
    """
    path = Path(path)
    _check_input_file(path, IMAGE_EXTENSIONS, "image")
    height, width = _header_size(path)
    _check_size(path, height, width, min_size=min_size, max_pixels=max_pixels)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = _decode_tiff(path)
        else:
            array = _decode_pillow(path)
    except MetadipError:
        raise
    except MemoryError:
        raise MetadipError(f"not enough memory to decode {path}; downscale it") from None
    except Exception as exc:
        raise MetadipError(f"{path} is truncated or corrupt: {_one_line(exc)}") from None
    tensor = array_to_tensor(array, str(path))
    _check_size(path, tensor.shape[-2], tensor.shape[-1], min_size=min_size, max_pixels=max_pixels)
    return tensor


# ---------------------------------------------------------------------------------------------------------
# measurements


def _array_to_measurement(array: np.ndarray, path: Path | str) -> torch.Tensor:
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32)
    if np.issubdtype(array.dtype, np.complexfloating):
        array = array.astype(np.complex64)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    else:
        raise MetadipError(f"{path} holds {array.dtype} data; expected a real or complex numeric array")
    if array.ndim == 2:
        array = array[None, None]
    elif array.ndim == 3:
        if array.shape[0] > 4 and array.shape[-1] <= 4:
            raise MetadipError(
                f"{path} has shape {array.shape}, which looks like H×W×C; store measurements as C×H×W "
                "(e.g. np.moveaxis(y, -1, 0))"
            )
        array = array[None]
    elif array.ndim == 4:
        if array.shape[0] != 1:
            raise MetadipError(
                f"{path} has shape {array.shape}; a measurement batch must hold exactly one item"
            )
    else:
        raise MetadipError(f"{path} has shape {array.shape}; expected H×W, C×H×W or 1×C×H×W")
    view = array.view(np.float32) if np.iscomplexobj(array) else array
    if not np.isfinite(view).all():
        raise MetadipError(f"{path} contains NaN or Inf values")
    channels, height, width = array.shape[1:]
    if channels not in (1, 3):
        raise MetadipError(f"{path} has {channels} channels; expected 1 (grey) or 3 (colour)")
    if height < MIN_MEASUREMENT_SIZE or width < MIN_MEASUREMENT_SIZE:
        raise MetadipError(
            f"{path} is {width}×{height}; a measurement needs at least "
            f"{MIN_MEASUREMENT_SIZE}×{MIN_MEASUREMENT_SIZE}"
        )
    return torch.from_numpy(np.ascontiguousarray(array))


def read_measurement(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read a measurement y: an image file (as :func:`read_image`) or a ``.npy`` array, real or
    complex, shaped H×W, C×H×W or 1×C×H×W. Returns a 1×C×H×W tensor (float32 or complex64); NaN/Inf is
    an error."""
    path = Path(path)
    _check_input_file(path, MEASUREMENT_EXTENSIONS, "measurement")
    if path.suffix.lower() != ".npy":
        return read_image(path, max_pixels=max_pixels, min_size=MIN_MEASUREMENT_SIZE)
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise MetadipError(f"{path} is not a plain numeric .npy array ({_one_line(exc)})") from None
    except Exception as exc:
        raise MetadipError(
            f"{path} is not a valid .npy file (truncated or corrupt): {_one_line(exc)}"
        ) from None
    if not isinstance(array, np.ndarray):
        raise MetadipError(f"{path} holds several arrays; save one array with np.save")
    if array.ndim >= 2:
        _check_size(path, array.shape[-2], array.shape[-1], min_size=1, max_pixels=max_pixels)
    return _array_to_measurement(array, path)


# ---------------------------------------------------------------------------------------------------------
# writing


def check_output_path(path: str | os.PathLike, *, allowed: tuple[str, ...] = IMAGE_EXTENSIONS) -> Path:
    """Fail early (before a long computation) if ``path`` cannot be written: wrong extension, a
    directory, or a parent that cannot be created or written. Creates missing parent directories."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in allowed:
        shown = suffix or "(none)"
        raise MetadipError(
            f"unsupported output extension {shown} for {path}; use one of {', '.join(allowed)}"
        )
    if path.is_dir():
        raise MetadipError(f"output {path} is a directory; give a file name")
    ensure_writable_dir(path)
    if path.exists() and not os.access(path, os.W_OK):
        raise MetadipError(f"output {path} exists and is not writable")
    return path


def _to_hwc_uint8(tensor: torch.Tensor) -> np.ndarray:
    image = tensor.detach().to("cpu", torch.float32)
    if image.is_complex():
        raise MetadipError("cannot write a complex tensor as an image; use a .npy path")
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise MetadipError(f"can write one image at a time, got a batch of {image.shape[0]}")
        image = image[0]
    if image.dim() == 2:
        image = image[None]
    if image.dim() == 3 and image.shape[0] == 2:  # a complex picture (real, imaginary): its magnitude
        image = image.square().sum(0, keepdim=True).sqrt()
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise MetadipError(f"cannot write a tensor of shape {tuple(tensor.shape)} as an image")
    image = torch.nan_to_num(image, nan=0.0).clamp(0.0, 1.0)
    array = (image * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def _save_pillow(array: np.ndarray, target: str) -> None:
    from PIL import Image

    image = Image.fromarray(array)
    suffix = Path(target).suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        image.save(target, quality=95)
    elif suffix in (".tif", ".tiff"):
        image.save(target, compression="tiff_deflate")
    else:
        image.save(target)


def write_image(path: str | os.PathLike, tensor: torch.Tensor) -> Path:
    """Write a 1×C×H×W / C×H×W / H×W tensor as an 8-bit image (clipped to [0, 1]); the format follows the
    extension (PNG recommended: lossless). A 2-channel tensor (a complex picture: real, imaginary) is written as its
    magnitude (an .npy output keeps both parts). Atomic: the file appears whole or not at all."""
    path = check_output_path(path)
    array = _to_hwc_uint8(tensor)
    atomic_save_with(path, lambda tmp: _save_pillow(array, tmp))
    return path


def measurement_is_image_like(y: torch.Tensor) -> bool:
    """True if ``y`` is real and can be stored in an image file (1 or 3 channels)."""
    return (not y.is_complex()) and y.dim() in (3, 4) and y.shape[-3] in (1, 3)


def check_measurement_output(path: str | os.PathLike, label: str | None = None) -> Path:
    """``path`` if a measurement may be written there: ``.npy`` (exact) or a lossless image format. A lossy
    one (JPEG) would change the measurement the reconstruction fits, so it is a MetadipError; so is any
    other extension. ``label`` names the path in the message (default: the path itself)."""
    path = Path(path)
    label = label or str(path)
    suffix = path.suffix.lower()
    if suffix in LOSSY_EXTENSIONS:
        raise MetadipError(
            f"{label}: {suffix} is lossy (JPEG) and would change the measurement; use .png (lossless, 8-bit) "
            "or .npy (exact)"
        )
    if suffix not in MEASUREMENT_EXTENSIONS:
        raise MetadipError(
            f"unsupported output extension {path.suffix or '(none)'} for {label}; use .png (or another lossless "
            "image format) or .npy"
        )
    return path


def write_measurement(path: str | os.PathLike, y: torch.Tensor) -> tuple[Path, bool]:
    """Write measurement ``y``: ``.npy`` keeps it exactly (required for complex y); an image extension
    stores it as 8-bit, **clipped to [0, 1] and quantised** (noise that leaves [0, 1] is lost).

    Returns ``(path, lossy)`` where ``lossy`` says whether the stored values differ from ``y`` beyond 8-bit
    rounding (i.e. clipping happened). A lossy format (JPEG) is refused (:func:`check_measurement_output`)."""
    path = check_measurement_output(path)
    if path.suffix.lower() == ".npy":
        check_output_path(path, allowed=(".npy",))
        array = y.detach().cpu()
        if array.dim() == 4 and array.shape[0] == 1:
            array = array[0]
        data = array.numpy().astype(np.complex64 if array.is_complex() else np.float32)
        atomic_save_with(path, lambda tmp: np.save(tmp, data, allow_pickle=False))
        return path, False
    if y.is_complex():
        raise MetadipError(
            f"complex measurements cannot be stored as {path.suffix or 'an image'}; use a .npy path"
        )
    check_output_path(path, allowed=IMAGE_EXTENSIONS)
    if not measurement_is_image_like(y):
        raise MetadipError(
            f"a measurement of shape {tuple(y.shape)} cannot be stored as an image; use a .npy path"
        )
    clipped = bool(((y < 0) | (y > 1)).any())
    write_image(path, y)
    return path, clipped


# ---------------------------------------------------------------------------------------------------------
# sample images and image sources


def center_square(image: torch.Tensor) -> torch.Tensor:
    """Crop the largest centred square from a …×H×W tensor."""
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[..., top : top + side, left : left + side]


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a 1×C×H×W tensor to size×size with anti-aliasing (scikit-image), staying in [0, 1]."""
    from skimage.transform import resize as sk_resize

    if image.shape[-2:] == (size, size):
        return image
    array = image[0].permute(1, 2, 0).numpy().astype(np.float64)
    out = sk_resize(array, (size, size), order=3, anti_aliasing=True, mode="reflect", preserve_range=True)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).unsqueeze(0)


def _check_size_arg(size: int | None) -> None:
    if size is not None and (int(size) != size or size < MIN_SIZE):
        raise MetadipError(f"--size must be an integer of at least {MIN_SIZE}, got {size}")


def load_sample_image(name: str, size: int | None = None) -> torch.Tensor:
    """One of scikit-image's bundled sample images (:data:`SAMPLE_IMAGES`) as 1×C×H×W in [0, 1]: the centred
    square crop, resized with anti-aliasing to ``size``×``size`` when ``size`` is given."""
    _check_size_arg(size)
    key = name.strip().lower()
    if key not in SAMPLE_IMAGES:
        raise MetadipError(f"unknown sample image {name!r}; valid: {', '.join(SAMPLE_IMAGES)}")
    image = center_square(read_sample(key))
    return resize(image, size) if size is not None else image.contiguous()


def read_sample(key: str) -> torch.Tensor:
    """scikit-image's bundled sample ``key`` (a lower-case name the caller has checked) at its native size and
    channel count, as 1×C×H×W float32 in [0, 1]."""
    import skimage.data

    try:
        if key in PYWT_SAMPLES:
            import pywt.data

            array = getattr(pywt.data, key)()
        else:
            array = skimage.data.stereo_motorcycle()[0] if key == "motorcycle" else getattr(skimage.data, key)()
    except Exception as exc:  # pragma: no cover - depends on the scikit-image install
        raise MetadipError(f"scikit-image could not provide sample image {key!r}: {_one_line(exc)}") from None
    return array_to_tensor(array, f"sample:{key}")


@dataclass(frozen=True)
class ImageSource:
    """Where an image comes from: ``kind`` is ``"sample"`` (``value``: its name) or ``"path"``."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"sample:{self.value}" if self.kind == "sample" else self.value


def parse_image_source(text: str | os.PathLike) -> ImageSource:
    """Parse ``sample:NAME`` (a bundled scikit-image sample) or a file path."""
    raw = os.fspath(text)
    if raw.lower().startswith("sample:"):
        name = raw.split(":", 1)[1].strip().lower()
        if name not in SAMPLE_IMAGES:
            raise MetadipError(f"unknown sample image {name!r}; valid: {', '.join(SAMPLE_IMAGES)}")
        return ImageSource("sample", name)
    if not raw.strip():
        raise MetadipError("empty image path")
    return ImageSource("path", raw)


def load_image_source(
    text: str | os.PathLike | ImageSource,
    *,
    size: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Load ``sample:NAME`` or a path. With ``size`` the image is centre-cropped to a square and resized to
    ``size``×``size`` (anti-aliased); without it a file is used as it is and a sample at its native size."""
    _check_size_arg(size)
    source = text if isinstance(text, ImageSource) else parse_image_source(text)
    if source.kind == "sample":
        return load_sample_image(source.value, size)
    image = read_image(source.value, max_pixels=max_pixels)
    if size is not None:
        image = resize(center_square(image), size).contiguous()
    return image
