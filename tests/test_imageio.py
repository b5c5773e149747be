"""Image / measurement reading and writing: mode conversions, validation, round trips, sample images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metadip import imageio as mio
from metadip.errors import MetadipError

RNG = np.random.default_rng(0)


def _rgb8(h=16, w=16):
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------- mode conversions


def test_rgb_png_roundtrip_exact(tmp_path):
    array = _rgb8()
    Image.fromarray(array).save(tmp_path / "a.png")
    x = mio.read_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert torch.equal((x * 255).round().to(torch.uint8)[0].permute(1, 2, 0), torch.from_numpy(array))
    mio.write_image(tmp_path / "b.png", x)
    assert torch.equal(mio.read_image(tmp_path / "b.png"), x)


def test_grey_stays_one_channel(tmp_path):
    Image.fromarray(_rgb8()[..., 0]).save(tmp_path / "g.png")
    x = mio.read_image(tmp_path / "g.png")
    assert x.shape == (1, 1, 16, 16)
    mio.write_image(tmp_path / "g2.png", x)
    assert Image.open(tmp_path / "g2.png").mode == "L"


def test_opaque_rgba_drops_alpha(tmp_path):
    rgb = _rgb8()
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = mio.read_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 16, 16)
    assert torch.allclose(x[0].permute(1, 2, 0), torch.from_numpy(rgb).float() / 255)


def test_transparent_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)  # black, fully transparent on the left half, opaque on the right
    rgba[:, 8:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = mio.read_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 16, 16)
    assert torch.allclose(x[..., :8], torch.ones(1)) and torch.allclose(x[..., 8:], torch.zeros(1))


def test_grey_alpha_composited(tmp_path):
    la = np.zeros((16, 16, 2), np.uint8)
    la[..., 1] = 0
    Image.fromarray(la, "LA").save(tmp_path / "a.png")
    x = mio.read_image(tmp_path / "a.png")
    assert x.shape == (1, 1, 16, 16) and torch.allclose(x, torch.ones(1))


def test_16bit_grey_scaled_by_65535(tmp_path):
    array = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    Image.fromarray(array).save(tmp_path / "a.png")
    x = mio.read_image(tmp_path / "a.png")
    assert x.shape == (1, 1, 16, 16)
    assert x.min() == 0 and x.max() == 1
    assert torch.allclose(x[0, 0], torch.from_numpy(array.astype(np.float32) / 65535))


def test_16bit_rgb_tiff(tmp_path):
    import tifffile

    array = RNG.integers(0, 65536, size=(16, 16, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", array, photometric="rgb")
    x = mio.read_image(tmp_path / "a.tif")
    assert torch.allclose(x[0].permute(1, 2, 0), torch.from_numpy(array.astype(np.float32) / 65535))


def test_palette_becomes_rgb(tmp_path):
    rgb = _rgb8()
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    x = mio.read_image(tmp_path / "p.png")
    assert x.shape == (1, 3, 16, 16)
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"), dtype=np.float32) / 255
    assert torch.allclose(x[0].permute(1, 2, 0), torch.from_numpy(expected))


def test_one_bit_png(tmp_path):
    Image.fromarray(_rgb8()[..., 0] > 128).save(tmp_path / "b.png")
    x = mio.read_image(tmp_path / "b.png")
    assert x.shape == (1, 1, 16, 16) and set(x.unique().tolist()) <= {0.0, 1.0}


def test_cmyk_jpeg_is_rgb_not_rgba(tmp_path):
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    x = mio.read_image(tmp_path / "c.jpg")
    assert x.shape == (1, 3, 16, 16)
    assert abs(float(x.mean()) - 200 / 255) < 0.03


def test_bmp_and_jpeg(tmp_path):
    Image.fromarray(_rgb8()).save(tmp_path / "a.bmp")
    Image.fromarray(_rgb8()).save(tmp_path / "a.jpg")
    assert mio.read_image(tmp_path / "a.bmp").shape == (1, 3, 16, 16)
    assert mio.read_image(tmp_path / "a.jpg").shape == (1, 3, 16, 16)


def test_float_tiff_in_unit_range_ok_else_error(tmp_path):
    import tifffile

    array = RNG.random((16, 16, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "ok.tif", array, photometric="rgb")
    assert torch.allclose(mio.read_image(tmp_path / "ok.tif")[0].permute(1, 2, 0), torch.from_numpy(array))
    tifffile.imwrite(tmp_path / "bad.tif", array * 300, photometric="rgb")
    with pytest.raises(MetadipError, match=r"\[0, 1\]"):
        mio.read_image(tmp_path / "bad.tif")
    bad = array.copy()
    bad[0, 0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad, photometric="rgb")
    with pytest.raises(MetadipError, match="NaN"):
        mio.read_image(tmp_path / "nan.tif")


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: None, "not found"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not a png"), "not a readable image"),
        (lambda p: Image.fromarray(_rgb8(1, 1)).save(p), "at least 8×8"),
        (lambda p: Image.fromarray(_rgb8(4, 64)).save(p), "at least 8×8"),
    ],
    ids=["missing", "directory", "empty", "garbage", "1x1", "4x64"],
)
def test_read_image_rejects(tmp_path, setup, match):
    path = tmp_path / "x.png"
    setup(path)
    with pytest.raises(MetadipError, match=match):
        mio.read_image(path)


def test_truncated_png(tmp_path):
    Image.fromarray(_rgb8(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MetadipError, match="truncated or corrupt"):
        mio.read_image(tmp_path / "t.png")


def test_unsupported_extension(tmp_path):
    Image.fromarray(_rgb8()).save(tmp_path / "a.gif")
    with pytest.raises(MetadipError, match=r"unsupported image extension \.gif"):
        mio.read_image(tmp_path / "a.gif")


def test_too_many_pixels_checked_from_header(tmp_path, monkeypatch):
    Image.fromarray(_rgb8(64, 64)).save(tmp_path / "a.png")

    def boom(path):  # decoding must not even start
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(mio, "_decode_pillow", boom)
    with pytest.raises(MetadipError, match="--max-pixels"):
        mio.read_image(tmp_path / "a.png", max_pixels=1000)


def test_error_messages_are_one_line(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(MetadipError) as info:
        mio.read_image(tmp_path / "x.png")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- measurements


@pytest.mark.parametrize("shape", [(16, 16), (3, 16, 16), (1, 3, 16, 16), (1, 16, 16)])
def test_read_measurement_npy_shapes(tmp_path, shape):
    np.save(tmp_path / "y.npy", RNG.standard_normal(shape).astype(np.float64))
    y = mio.read_measurement(tmp_path / "y.npy")
    assert y.dim() == 4 and y.shape[-2:] == (16, 16) and y.dtype == torch.float32


def test_read_measurement_complex_roundtrip(tmp_path):
    y = torch.randn(1, 3, 16, 16, dtype=torch.complex64)
    path, lossy = mio.write_measurement(tmp_path / "y.npy", y)
    assert not lossy
    back = mio.read_measurement(path)
    assert back.dtype == torch.complex64 and torch.equal(back, y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_measurement_rejects_non_finite(tmp_path, bad):
    array = np.zeros((3, 16, 16), np.float32)
    array[1, 2, 3] = bad
    np.save(tmp_path / "y.npy", array)
    with pytest.raises(MetadipError, match="NaN or Inf"):
        mio.read_measurement(tmp_path / "y.npy")
    complex_array = np.zeros((16, 16), np.complex64)
    complex_array[0, 0] = complex(0, bad)
    np.save(tmp_path / "c.npy", complex_array)
    with pytest.raises(MetadipError, match="NaN or Inf"):
        mio.read_measurement(tmp_path / "c.npy")


def test_read_measurement_rejects_bad_npy(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(MetadipError, match=r"\.npy"):
        mio.read_measurement(tmp_path / "junk.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MetadipError, match="plain numeric"):
        mio.read_measurement(tmp_path / "obj.npy")
    np.save(tmp_path / "hwc.npy", np.zeros((16, 16, 3), np.float32))
    with pytest.raises(MetadipError, match="C×H×W"):
        mio.read_measurement(tmp_path / "hwc.npy")
    np.save(tmp_path / "5d.npy", np.zeros((1, 1, 3, 16, 16), np.float32))
    with pytest.raises(MetadipError, match="expected H×W"):
        mio.read_measurement(tmp_path / "5d.npy")


def test_read_measurement_png_allows_small(tmp_path):
    Image.fromarray(_rgb8(4, 4)).save(tmp_path / "y.png")
    assert mio.read_measurement(tmp_path / "y.png").shape == (1, 3, 4, 4)


def test_write_measurement_png_clips_and_reports(tmp_path):
    y = torch.linspace(-0.5, 1.5, 3 * 16 * 16).reshape(1, 3, 16, 16)
    path, lossy = mio.write_measurement(tmp_path / "y.png", y)
    assert lossy
    back = mio.read_measurement(path)
    assert back.min() == 0 and back.max() == 1
    inside = (y >= 0) & (y <= 1)
    assert (back - y)[inside].abs().max() <= 0.5 / 255 + 1e-6


def test_write_measurement_complex_needs_npy(tmp_path):
    with pytest.raises(MetadipError, match=r"\.npy"):
        mio.write_measurement(tmp_path / "y.png", torch.zeros(1, 1, 8, 8, dtype=torch.complex64))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- writing


def test_write_image_clips_and_is_atomic(tmp_path, monkeypatch):
    x = torch.linspace(-1, 2, 3 * 8 * 8).reshape(1, 3, 8, 8)
    path = mio.write_image(tmp_path / "sub" / "x.png", x)
    back = mio.read_image(path)
    assert back.min() == 0 and back.max() == 1

    def failing(array, target):
        open(target, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(mio, "_save_pillow", failing)
    with pytest.raises(OSError):
        mio.write_image(tmp_path / "y.png", x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_check_output_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MetadipError, match="output directory"):
        mio.check_output_path(tmp_path / "file" / "out.png")
    with pytest.raises(MetadipError, match="unsupported output extension"):
        mio.check_output_path(tmp_path / "out.txt")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(MetadipError, match="directory"):
        mio.check_output_path(tmp_path / "d.png")
    assert mio.check_output_path(tmp_path / "new" / "out.png").parent.is_dir()


# ---------------------------------------------------------------------------------------- samples / sources


def test_sample_images():
    x = mio.load_sample_image("astronaut", 24)
    assert x.shape == (1, 3, 24, 24) and 0 <= x.min() and x.max() <= 1
    assert mio.load_sample_image("camera", 16).shape == (1, 1, 16, 16)
    assert mio.load_sample_image("logo", 16).shape == (1, 3, 16, 16)  # RGBA sample composited
    assert mio.load_sample_image("chelsea").shape == (1, 3, 300, 300)  # centred square at native size
    with pytest.raises(MetadipError, match="unknown sample image 'nope'; valid: astronaut"):
        mio.load_sample_image("nope")
    with pytest.raises(MetadipError, match="--size"):
        mio.load_sample_image("camera", 4)


def test_parse_and_load_image_source(tmp_path, tiny_rgb_png):
    assert mio.parse_image_source("sample:Camera") == mio.ImageSource("sample", "camera")
    assert mio.parse_image_source(str(tiny_rgb_png)).kind == "path"
    with pytest.raises(MetadipError, match="unknown sample"):
        mio.parse_image_source("sample:unknown")
    assert mio.load_image_source("sample:coffee", size=16).shape == (1, 3, 16, 16)
    assert mio.load_image_source(tiny_rgb_png).shape == (1, 3, 32, 32)
    assert mio.load_image_source(tiny_rgb_png, size=16).shape == (1, 3, 16, 16)


def test_a_complex_picture_is_written_as_its_magnitude(tmp_path):
    """Two channels (real, imaginary) cannot be an image file: the PNG shows the magnitude; .npy keeps both."""
    parts = torch.zeros(1, 2, 16, 16)
    parts[:, 0], parts[:, 1] = 0.3, 0.4  # magnitude 0.5
    read = mio.read_image(mio.write_image(tmp_path / "x.png", parts))
    assert read.shape == (1, 1, 16, 16)
    np.testing.assert_allclose(read.numpy(), 128 / 255, atol=1e-6)
