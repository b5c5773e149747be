"""Every bad input gives exit code 2, one ``error: ...`` line naming the problem, no traceback, and no file
left behind. One table; each row builds its inputs in a fresh temporary folder and runs the CLI in-process.

Conversions (RGBA, 16-bit, palette, grey) are not errors; they are covered in ``test_imageio.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from metadip.cli import main

SIM = ["simulate", "sample:camera", "--size", "16", "--seed", "0"]
CK = "ck/universal-slim-long.json"  # the copy _edited_checkpoint writes


def _png(path: Path, h: int = 16, w: int = 16, channels: int = 3) -> Path:
    rng = np.random.default_rng(0)
    shape = (h, w, channels) if channels > 1 else (h, w)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)
    return path


def _measurement(tmp: Path, spec: str = "denoise:sigma=25", name: str = "y.png", size: int = 16) -> Path:
    """Write a simulated measurement with its operator artifacts (no CLI involved)."""
    from metadip import operators
    from metadip.imageio import load_sample_image, write_measurement

    x = load_sample_image("camera", size)
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator(spec, tuple(x.shape[1:]), generator=generator)
    y = operators.simulate(x, op, generator)
    write_measurement(tmp / name, y)
    operators.save_operator_artifacts(op, tmp / name)
    return tmp / name


def _npy(tmp: Path, name: str, array) -> Path:
    np.save(tmp / name, np.asarray(array), allow_pickle=False)
    return tmp / name


def _rec(y: str, *extra: str) -> list[str]:
    return ["reconstruct", y, "--out", "x.png", "--history", "h.json", "--iterations", "5", *extra]


def _truncated(tmp: Path) -> Path:
    data = _png(tmp / "full.png", 64, 64).read_bytes()
    (tmp / "full.png").unlink()
    (tmp / "t.png").write_bytes(data[: len(data) // 2])
    return tmp / "t.png"


def _sidecar_corrupt(tmp: Path) -> None:
    y = _measurement(tmp)
    y.with_name("y.operator.json").write_text("{not json")


def _measurement_resized(tmp: Path) -> None:
    _measurement(tmp)
    _png(tmp / "y.png", 12, 12, channels=1)  # replace y by a smaller image; the sidecar still says 16×16


def _measurement_recoloured(tmp: Path) -> None:
    _measurement(tmp, "denoise:sigma=25")  # camera is grey: the sidecar records 1 channel
    _png(tmp / "y.png", 16, 16, channels=3)


def _inpaint_without_sidecar(tmp: Path) -> None:
    _measurement(tmp, "inpaint:ratio=0.5")
    (tmp / "y.operator.json").unlink()
    (tmp / "y.mask.png").unlink()
    _png(tmp / "mask.png", 8, 8, channels=1)


def _deblur_without_sidecar(tmp: Path, kernel) -> None:
    _measurement(tmp, "deblur:kernel=gauss,width=1.5,sigma=2")
    (tmp / "y.operator.json").unlink()
    _npy(tmp, "k.npy", kernel)


def _kernel_nan():
    k = np.ones((3, 3))
    k[1, 1] = np.nan
    return k


def _npy_measurement(bad: float):
    def setup(tmp: Path) -> None:
        array = np.zeros((1, 16, 16), np.float32)
        array[0, 3, 4] = bad
        _npy(tmp, "y.npy", array)

    return setup


def _edited_checkpoint(**changes):
    """A copy of the shipped default init (sidecar + weights) in tmp/ck with sidecar fields replaced."""

    def setup(tmp: Path) -> None:
        import json
        import shutil

        from metadip.checkpoint import DEFAULT_INIT, checkpoint_dirs

        _measurement(tmp)
        source = next(d for d in checkpoint_dirs() if (d / f"{DEFAULT_INIT}.json").is_file())
        (tmp / "ck").mkdir()
        shutil.copy(source / f"{DEFAULT_INIT}.safetensors", tmp / "ck")
        meta = json.loads((source / f"{DEFAULT_INIT}.json").read_text(encoding="utf-8"))
        (tmp / "ck" / f"{DEFAULT_INIT}.json").write_text(json.dumps(meta | changes), encoding="utf-8")

    return setup


def _npz_kernel(tmp: Path) -> None:
    """A deblurring measurement without its record, and an .npz archive saved under the name k.npy."""
    _deblur_without_sidecar(tmp, np.ones((3, 3)))
    np.savez(tmp / "k.npz", a=np.ones((3, 3)), b=np.ones(2))
    os.replace(tmp / "k.npz", tmp / "k.npy")


def _two_measurements_one_stem(tmp: Path) -> None:
    """y.png has its operator record; y.npy (same stem) is another file the record does not describe."""
    _measurement(tmp)
    _npy(tmp, "y.npy", np.full((1, 16, 16), 0.5, np.float32))


def _unwritable(tmp: Path) -> None:
    (tmp / "blocker").write_text("a regular file, not a folder")


# (id, setup(tmp) or None, argv, regex the error line must match)
CASES = [
    ("missing-image", None, [*SIM[:1], "nope.png", "--operator", "denoise", "--out", "y.png"], "not found"),
    (
        "broken-symlink",
        lambda t: os.symlink(t / "gone.png", t / "link.png"),
        ["simulate", "link.png", "--operator", "denoise", "--out", "y.png"],
        "broken symbolic link",
    ),
    (
        "corrupt-image",
        lambda t: (t / "bad.png").write_bytes(b"definitely not a PNG"),
        ["simulate", "bad.png", "--operator", "denoise", "--out", "y.png"],
        "not a readable image",
    ),
    (
        "truncated-image",
        _truncated,
        ["simulate", "t.png", "--operator", "denoise", "--out", "y.png"],
        "truncated or corrupt",
    ),
    (
        "empty-image",
        lambda t: (t / "e.png").write_bytes(b""),
        ["simulate", "e.png", "--operator", "denoise", "--out", "y.png"],
        "empty",
    ),
    (
        "directory-as-image",
        lambda t: (t / "d.png").mkdir(),
        ["simulate", "d.png", "--operator", "denoise", "--out", "y.png"],
        "is a directory",
    ),
    (
        "wrong-extension",
        lambda t: (t / "a.gif").write_bytes(b"GIF89a"),
        ["simulate", "a.gif", "--operator", "denoise", "--out", "y.png"],
        r"unsupported image extension \.gif",
    ),
    (
        "1x1-image",
        lambda t: _png(t / "one.png", 1, 1),
        ["simulate", "one.png", "--operator", "denoise", "--out", "y.png"],
        "1×1 pixels; metadip needs at least 8×8",
    ),
    (
        "too-many-pixels",
        lambda t: _png(t / "big.png", 64, 64),
        ["simulate", "big.png", "--operator", "denoise", "--out", "y.png", "--max-pixels", "1000"],
        "--max-pixels",
    ),
    (
        "unknown-sample",
        None,
        ["simulate", "sample:nope", "--operator", "denoise", "--out", "y.png"],
        "unknown sample",
    ),
    (
        "unknown-operator",
        None,
        [*SIM, "--operator", "blurr:sigma=2", "--out", "y.png"],
        "unknown operator 'blurr'",
    ),
    ("unknown-key", None, [*SIM, "--operator", "denoise:sigmaa=2", "--out", "y.png"], "unknown key 'sigmaa'"),
    (
        "negative-sigma",
        None,
        [*SIM, "--operator", "denoise:sigma=-5", "--out", "y.png"],
        r"sigma must be in \[0, 1020\]",
    ),
    (
        "ratio-above-1",
        None,
        [*SIM, "--operator", "inpaint:ratio=1.5", "--out", "y.png"],
        r"ratio must be in \(0, 1\)",
    ),
    (
        "ratio-zero",
        None,
        [*SIM, "--operator", "inpaint:ratio=0", "--out", "y.png"],
        r"ratio must be in \(0, 1\)",
    ),
    (
        "factor-2.5",
        None,
        [*SIM, "--operator", "superres:factor=2.5", "--out", "y.png"],
        "factor must be an integer",
    ),
    (
        "image-too-small-for-factor",
        None,
        ["simulate", "sample:camera", "--size", "8", "--operator", "superres:factor=16", "--out", "y.png"],
        "needs an image of at least 16×16",
    ),
    (
        "measurement-would-be-1px",
        None,
        ["simulate", "sample:camera", "--size", "8", "--operator", "superres:factor=8", "--out", "y.png"],
        "1x1 measurement",
    ),
    ("size-too-small", None, [*SIM[:2], "--size", "4", "--operator", "denoise", "--out", "y.png"], "--size"),
    (
        "fourier-to-png",
        None,
        [*SIM, "--operator", "fourier:ratio=0.3", "--out", "y.png"],
        r"complex; write them to a \.npy file",
    ),
    (
        "bad-output-extension",
        None,
        [*SIM, "--operator", "denoise", "--out", "y.txt"],
        "unsupported output extension",
    ),
    (
        "output-under-a-file",
        _unwritable,
        [*SIM, "--operator", "denoise", "--out", "blocker/y.png"],
        "cannot create output directory",
    ),
    (
        "mask-wrong-size",
        _inpaint_without_sidecar,
        _rec("y.png", "--operator", "inpaint", "--mask", "mask.png"),
        "expected 16×16",
    ),
    (
        "kernel-nan",
        lambda t: _deblur_without_sidecar(t, _kernel_nan()),
        _rec("y.png", "--operator", "deblur", "--kernel", "k.npy"),
        "finite and non-negative",
    ),
    (
        "kernel-negative",
        lambda t: _deblur_without_sidecar(t, -np.ones((3, 3))),
        _rec("y.png", "--operator", "deblur", "--kernel", "k.npy"),
        "finite and non-negative",
    ),
    (
        "kernel-3d",
        lambda t: _deblur_without_sidecar(t, np.ones((3, 3, 3))),
        _rec("y.png", "--operator", "deblur", "--kernel", "k.npy"),
        "2-D array",
    ),
    ("measurement-nan", _npy_measurement(np.nan), _rec("y.npy", "--operator", "denoise"), "NaN or Inf"),
    ("measurement-inf", _npy_measurement(np.inf), _rec("y.npy", "--operator", "denoise"), "NaN or Inf"),
    (
        "measurement-object-npy",
        lambda t: np.save(t / "y.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
        _rec("y.npy", "--operator", "denoise"),
        "plain numeric",
    ),
    ("missing-measurement", None, _rec("nope.png", "--operator", "denoise"), "not found"),
    (
        "no-operator-no-sidecar",
        lambda t: _png(t / "y.png"),
        _rec("y.png"),
        r"give the operator spec \(--operator\)",
    ),
    ("corrupt-sidecar", _sidecar_corrupt, _rec("y.png"), "not a readable metadip operator record"),
    ("measurement-size-mismatch", _measurement_resized, _rec("y.png"), "expects 16×16"),
    (
        "measurement-channel-mismatch",
        _measurement_recoloured,
        _rec("y.png"),
        r"3 channel\(s\) but its operator expects 1",
    ),
    ("operator-conflicts-sidecar", _measurement, _rec("y.png", "--operator", "inpaint"), "does not match"),
    (
        "reference-wrong-size",
        lambda t: (_measurement(t), _png(t / "ref.png", 24, 24, channels=1)),
        _rec("y.png", "--reference", "ref.png"),
        "--reference ref.png is 24x24",
    ),
    (
        "oracle-without-reference",
        _measurement,
        _rec("y.png", "--stop", "oracle"),
        "--stop oracle needs --reference",
    ),
    ("iterations-zero", _measurement, [*_rec("y.png"), "--iterations", "0"], "--iterations"),
    ("negative-lr", _measurement, _rec("y.png", "--lr", "-1"), "--lr"),
    ("unknown-stop", _measurement, _rec("y.png", "--stop", "sometime"), "--stop"),
    ("unknown-option", _measurement, _rec("y.png", "--frobnicate"), "No such option"),
    (
        "unwritable-out",
        lambda t: (_measurement(t), _unwritable(t)),
        [*_rec("y.png"), "--out", "blocker/x.png"],
        "cannot create output directory",
    ),
    (
        "unwritable-history",
        lambda t: (_measurement(t), _unwritable(t)),
        [*_rec("y.png"), "--history", "blocker/h.json"],
        "cannot create output directory",
    ),
    ("out-overwrites-measurement", _measurement, [*_rec("y.png"), "--out", "y.png"], "would overwrite"),
    (
        "out-overwrites-mask",
        lambda t: _measurement(t, "inpaint:ratio=0.5"),
        [*_rec("y.png"), "--out", "y.mask.png"],
        "would overwrite the measurement's operator file y.mask.png",
    ),
    (
        "history-overwrites-record",
        _measurement,
        [*_rec("y.png"), "--history", "y.operator.json"],
        "would overwrite the measurement's operator file y.operator.json",
    ),
    (
        "out-overwrites-reference",
        lambda t: (_measurement(t), _png(t / "clean.png", channels=1)),
        [*_rec("y.png"), "--reference", "clean.png", "--out", "clean.png"],
        "would overwrite the --reference image",
    ),
    (
        "reference-other-channels",
        lambda t: (_measurement(t), _png(t / "clean.png", channels=3)),
        _rec("y.png", "--reference", "clean.png"),
        "is RGB but the reconstruction is grey",
    ),
    ("record-of-another-measurement", _two_measurements_one_stem, _rec("y.npy"), "describes y.png, not y.npy"),
    (
        "simulate-out-overwrites-clean",
        lambda t: _png(t / "clean.png"),
        ["simulate", "clean.png", "--operator", "denoise", "--out", "clean.png"],
        "would overwrite the clean image",
    ),
    (
        "simulate-replaces-record-of-another-measurement",
        _measurement,
        [*SIM, "--operator", "denoise", "--out", "y.npy"],
        "the operator record of y.png",
    ),
    ("simulate-huge-gaussian", None, [*SIM, "--operator", "deblur:width=100000", "--out", "y.png"], "width 100000"),
    ("simulate-huge-motion", None, [*SIM, "--operator", "deblur:kernel=motion,length=999", "--out", "y.png"], "999"),
    ("simulate-block-too-big", None, [*SIM, "--operator", "inpaint:holes=blocks,block=64", "--out", "y.png"], "block"),
    (
        "kernel-npz-named-npy",
        _npz_kernel,
        _rec("y.png", "--operator", "deblur:kernel=file", "--kernel", "k.npy"),
        "several arrays",
    ),
    (
        "npy-measurement-on-the-8-bit-scale",
        lambda t: _npy(t, "y.npy", np.full((1, 16, 16), 200, np.uint8)),
        _rec("y.npy", "--operator", "denoise:sigma=5"),
        "divide by 255",
    ),
    ("lr-nan", _measurement, _rec("y.png", "--lr", "nan"), "--lr"),
    ("lr-inf", _measurement, _rec("y.png", "--lr", "inf"), "--lr"),
    ("seed-too-large", _measurement, _rec("y.png", "--seed", str(2**70)), "--seed"),
    ("seed-negative", _measurement, _rec("y.png", "--seed", "-1"), "--seed"),
    (
        "simulate-seed-too-large",
        None,
        [*SIM[:-2], "--seed", str(2**70), "--operator", "denoise", "--out", "y.png"],
        "--seed",
    ),
    (
        "checkpoint-inner-null",
        _edited_checkpoint(inner=None),
        _rec("y.png", "--init", "ck/universal-slim-long.json"),
        "'inner' must be an object",
    ),
    (
        "checkpoint-noise-channels-text",
        _edited_checkpoint(noise_channels="x"),
        _rec("y.png", "--init", CK),
        "noise_channels must be a non-negative integer",
    ),
    (
        "checkpoint-z-mode-unknown",
        _edited_checkpoint(z_mode="bogus"),
        _rec("y.png", "--init", "ck/universal-slim-long.json"),
        "z_mode 'bogus'",
    ),
    ("history-wrong-extension", _measurement, [*_rec("y.png"), "--history", "h.txt"], r"\.json"),
    ("unknown-device", _measurement, _rec("y.png", "--device", "tpu"), "unknown device 'tpu'"),
    ("unknown-init", _measurement, _rec("y.png", "--init", "no-such-checkpoint"), "no-such-checkpoint"),
    ("unknown-arch", _measurement, _rec("y.png", "--arch", "no-such-arch"), "no-such-arch"),
]

if not torch.cuda.is_available():
    CASES.append(("cuda-without-gpu", _measurement, _rec("y.png", "--device", "cuda"), "no CUDA GPU"))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.mark.parametrize(("setup", "argv", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, monkeypatch, setup, argv, pattern):
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        setup(tmp_path)
    before = _files(tmp_path)
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert __import__("re").search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output
    assert _files(tmp_path) == before, "a file was left behind"


def test_table_is_large_enough():
    assert len(CASES) >= 20
