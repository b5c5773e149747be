"""What a new user tripped over: a lossy measurement file, a photograph taken for a mask, an absurd noise level.
Each is refused with one ``error: ...`` line (exit 2) through the CLI and a MetadipError through Python."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from metadip import operators
from metadip.cli import main
from metadip.errors import MetadipError
from metadip.imageio import write_measurement


def run(*args) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output.strip().splitlines()


def simulate(*args) -> tuple[int, list[str]]:
    return run("simulate", "sample:astronaut", "--size", "32", "--seed", "0", *args)


@pytest.mark.parametrize("name", ["y.jpg", "y.JPEG"])
def test_simulate_refuses_a_lossy_measurement_file(tmp_path, name):
    code, lines = simulate("--operator", "denoise:sigma=25", "--out", tmp_path / name)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: --out ") and "lossy" in lines[0] and ".png" in lines[0] and ".npy" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the operator record
    with pytest.raises(MetadipError, match="lossy"):
        write_measurement(tmp_path / name, torch.rand(1, 3, 8, 8))


def test_simulate_still_writes_lossless_measurements(tmp_path):
    for name in ("a.png", "b.npy", "c.tif"):
        code, _ = simulate("--operator", "denoise:sigma=25", "--out", tmp_path / name)
        assert code == 0 and (tmp_path / name).is_file()


def test_a_photograph_is_not_a_mask(tmp_path):
    photo = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    photo[0, 0] = 0  # one black pixel: "nonzero = observed" would call it 99.9 % observed
    Image.fromarray(photo).save(tmp_path / "photo.png")
    code, lines = simulate("--operator", "inpaint", "--mask", tmp_path / "photo.png", "--out", tmp_path / "y.png")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: mask file ") and "not binary" in lines[0]
    assert not (tmp_path / "y.png").exists()
    soft = np.linspace(0, 1, 64).reshape(8, 8)
    with pytest.raises(MetadipError, match="not binary"):
        operators.build_operator("inpaint", (3, 8, 8), mask=soft)


@pytest.mark.parametrize(
    ("values", "dtype"), [((0, 255), np.uint8), ((0, 1), np.uint8), ((0.0, 1.0), np.float32), ((0.0, 0.7), np.float64)]
)
def test_binary_masks_of_any_scale_are_accepted(tmp_path, values, dtype):
    mask = np.where(np.arange(64).reshape(8, 8) % 3 == 0, values[0], values[1]).astype(dtype)
    np.save(tmp_path / "m.npy", mask)
    loaded = operators.load_mask(tmp_path / "m.npy", (8, 8))
    assert set(loaded.unique().tolist()) == {0.0, 1.0}
    assert loaded.sum().item() == int((mask != 0).sum())
    full = operators.load_mask(_saved(tmp_path, np.full((8, 8), 255, np.uint8)), (8, 8))
    assert full.all()  # everything observed is still binary


def _saved(tmp_path, array):
    Image.fromarray(array).save(tmp_path / "full.png")
    return tmp_path / "full.png"


@pytest.mark.parametrize("spec", ["denoise:sigma=1e9", "denoise:sigma=1021", "inpaint:sigma=5000", "denoise:sigma=-1"])
def test_absurd_noise_levels_are_refused_by_the_spec_parser(tmp_path, spec):
    with pytest.raises(MetadipError, match=r"sigma must be in \[0, 1020\]"):
        operators.parse_operator_spec(spec)
    code, lines = simulate("--operator", spec, "--out", tmp_path / "y.png")
    assert code == 2 and len(lines) == 1 and "sigma must be in [0, 1020]" in lines[0]


def test_large_but_sane_noise_levels_pass():
    assert operators.parse_operator_spec("denoise:sigma=1020").params["sigma"] == 1020
    assert operators.parse_operator_spec("denoise:sigma=100").params["sigma"] == 100
