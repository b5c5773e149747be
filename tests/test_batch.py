"""Batch reconstruction (``metadip reconstruct DIR|GLOB --out OUTDIR``): a folder of 50 tiny measurements with
2 corrupt ones reconstructs the 48 good ones and reports the 2 (exit 2); a re-run does no work; an output
that is not a valid image is redone; files are split across torchrun ranks; discovery skips operator files.
Runs in-process through click's CliRunner, 16 px images, 1–3 iterations."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from metadip.cli import main

FAST = ["--iterations", "1", "--stop", "budget", "--arch", "skip-slim", "--no-progress"]
SUMMARY = re.compile(r"^done=(\d+) skipped=(\d+) failed=(\d+)", re.M)


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def counts(result) -> tuple[int, int, int]:
    match = SUMMARY.search(result.stdout)
    assert match, result.stdout
    return tuple(int(g) for g in match.groups())


def _images(folder, n: int, size: int = 16) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, size=(size, size), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_batch_of_50_with_2_corrupt_then_rerun_does_no_work(tmp_path, monkeypatch):
    ys = tmp_path / "ys"
    _images(ys, 48)
    (ys / "corrupt.png").write_bytes(b"not a png at all")
    good = np.zeros((16, 16), np.float32)
    np.save(ys / "truncated.npy", good)
    data = (ys / "truncated.npy").read_bytes()
    (ys / "truncated.npy").write_bytes(data[: len(data) // 2])
    out = tmp_path / "rec"

    first = invoke("reconstruct", ys, "--out", out, "--operator", "denoise:sigma=25", "--history", *FAST)
    assert first.exit_code == 2, first.output
    assert counts(first) == (48, 0, 2)
    errors = first.stderr.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert any("corrupt.png" in line for line in errors) and any("truncated.npy" in line for line in errors)
    assert sorted(p.name for p in out.glob("*.png")) == [f"img{i:02d}.png" for i in range(48)]
    assert len(list(out.glob("*.json"))) == 48
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert json.loads((out / "img00.json").read_text())["stop_iteration"] == 1
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    import metadip.api

    def never(*args, **kwargs):
        raise AssertionError("a complete item was reconstructed again")

    monkeypatch.setattr(metadip.api, "reconstruct", never)
    (ys / "corrupt.png").unlink()
    (ys / "truncated.npy").unlink()
    second = invoke("reconstruct", ys, "--out", out, "--operator", "denoise:sigma=25", "--history", *FAST)
    assert second.exit_code == 0, second.output
    assert counts(second) == (0, 48, 0)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_invalid_or_incomplete_output_is_redone(tmp_path):
    ys = tmp_path / "ys"
    _images(ys, 3)
    out = tmp_path / "rec"
    assert counts(invoke("reconstruct", ys, "--out", out, "--operator", "denoise", *FAST)) == (3, 0, 0)
    (out / "img01.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # not a valid image: redo
    result = invoke("reconstruct", ys, "--out", out, "--operator", "denoise", "--history", *FAST)
    # --history now asked for: items without their .json are incomplete too
    assert counts(result) == (3, 0, 0)
    assert counts(invoke("reconstruct", ys, "--out", out, "--operator", "denoise", "--history", *FAST)) == (
        0,
        3,
        0,
    )
    assert Image.open(out / "img01.png").size == (16, 16)


def test_glob_and_operator_files_are_not_measurements(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        ok = invoke(
            "simulate", "sample:camera", "--size", "16", "--seed", i, "--operator", "inpaint", "--out", f"ys/y{i}.png"
        )
        assert ok.exit_code == 0, ok.output
    (tmp_path / "ys" / ".hidden.png").write_bytes(b"junk")
    result = invoke("reconstruct", "ys/*", "--out", "rec", *FAST)  # sidecars come from the operator json
    assert result.exit_code == 0, result.output
    assert counts(result) == (2, 0, 0)
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["y0.png", "y1.png"]
    assert "ignored" in result.stdout  # the mask / operator files were passed over, and said so


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["ys", "--out", "ys"], "in the --out folder"),
        (["ys", "--out", "x.png"], "looks like a file name"),
        (["ys", "--out", "rec", "--reference", "sample:camera"], "single measurement"),
        (["ys", "--out", "rec", "--history", "h.json"], "takes no value"),
        (["nothing/*.png", "--out", "rec"], "no measurements found"),
        (["ys", "ys2", "--out", "rec"], "would both be written to"),
        (["ys", "--out", "rec", "--init", "no-such-init"], "no-such-init"),
    ],
    ids=["out-is-input", "out-is-file", "reference", "history-value", "no-match", "same-stem", "bad-init"],
)
def test_batch_setup_errors_are_one_line(tmp_path, monkeypatch, argv, pattern):
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "ys", 2)
    _images(tmp_path / "ys2", 1)
    result = invoke("reconstruct", *argv, "--operator", "denoise", *FAST)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0]), result.stderr
    assert not (tmp_path / "rec").exists()


def test_files_are_sharded_across_torchrun_ranks(tmp_path, monkeypatch):
    ys = tmp_path / "ys"
    _images(ys, 5)
    out = tmp_path / "rec"
    made = []
    for rank in (0, 1):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        before = set(p.name for p in out.glob("*.png")) if out.exists() else set()
        result = invoke("reconstruct", ys, "--out", out, "--operator", "denoise", *FAST)
        assert result.exit_code == 0 and f"(rank {rank} of 2)" in result.stdout, result.output
        made.append({p.name for p in out.glob("*.png")} - before)
    assert made[0] == {"img00.png", "img02.png", "img04.png"} and made[1] == {"img01.png", "img03.png"}
