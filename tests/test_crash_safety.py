"""Crash safety and determinism through the real command line.

* ``metadip pretrain`` killed with SIGKILL part-way (a real subprocess, a real kill) and continued with
  ``--resume`` ends with the same θ0, bit for bit on the CPU, as an uninterrupted run.
* ``metadip reconstruct`` twice with the same seed writes byte-identical PNGs (CPU).
* A reconstruction that diverges (loss NaN) prints a one-line warning and still writes the best iterate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from metadip.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "pretrain" / "experiments" / "tiny-test.toml"
STEPS = 24  # ~0.1 s each on one core: the run is still far from done when the kill lands


def _env() -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


def _pretrain_argv(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "metadip",
        "pretrain",
        "--config",
        str(config),
        "--out",
        str(out),
        "--steps",
        str(STEPS),
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]


def _log_steps(out: Path) -> list[int]:
    path = out / "log.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):  # a line cut by the kill
            pass
    return steps


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    from safetensors.torch import load_file

    # the tiny recipe with a state checkpoint after every meta-step and no validation (weights are compared)
    text = TINY.read_text()
    assert "ckpt_every = 2" in text and "val_tasks = 2" in text
    config = tmp_path / "crash.toml"
    config.write_text(text.replace("ckpt_every = 2", "ckpt_every = 1").replace("val_tasks = 2", "val_tasks = 0"))

    full = subprocess.run(
        _pretrain_argv(config, tmp_path / "full"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 0, full.stderr

    out = tmp_path / "killed"
    victim = subprocess.Popen(
        _pretrain_argv(config, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    try:
        # kill once a periodic checkpoint exists and a few meta-steps are logged: mid-step or mid-write
        while not ((out / "state.pt").is_file() and len(_log_steps(out)) >= 3):
            if victim.poll() is not None:
                pytest.fail(f"pretrain ended before it could be killed: {victim.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no state.pt after 240 s")
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        victim.stderr.close()

    saved = torch.load(out / "state.pt", weights_only=True)
    assert 1 <= saved["step"] < STEPS, saved["step"]
    assert not (out / "tiny-test.safetensors").exists()  # the run really was unfinished

    resumed = subprocess.run(
        _pretrain_argv(config, out, "--resume"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"trained tiny-test: {STEPS} meta-steps" in resumed.stdout

    a = load_file(str(tmp_path / "full" / "tiny-test.safetensors"))
    b = load_file(str(out / "tiny-test.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise: same tasks, same order, same arithmetic
    assert _log_steps(out) == _log_steps(tmp_path / "full") == list(range(1, STEPS + 1))


def _simulate(tmp_path: Path) -> Path:
    y = tmp_path / "y.png"
    result = CliRunner().invoke(
        main,
        ["simulate", "sample:astronaut", "--size", "24", "--operator", "inpaint:ratio=0.5,sigma=10", "--out", str(y)],
    )
    assert result.exit_code == 0, result.output
    return y


def test_same_seed_gives_identical_png_bytes(tmp_path):
    y = _simulate(tmp_path)
    outputs = []
    for name, seed in (("a.png", 3), ("b.png", 3), ("c.png", 4)):
        out = tmp_path / name
        result = CliRunner().invoke(
            main,
            ["reconstruct", str(y), "--out", str(out), "--iterations", "8", "--seed", str(seed), "--no-progress"],
        )
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]  # default stopping rule (holdout: a random split) included
    assert outputs[0] != outputs[2]  # and the seed does matter


def test_divergence_warns_and_writes_best_iterate(tmp_path, monkeypatch):
    import metadip.dip

    y = _simulate(tmp_path)
    real = metadip.dip.measurement_loss
    calls = {"n": 0}

    def poisoned(op, output, y, weight=None):
        calls["n"] += 1
        loss = real(op, output, y, weight)
        return loss * float("nan") if calls["n"] > 4 else loss  # NaN from the 5th iteration on

    monkeypatch.setattr(metadip.dip, "measurement_loss", poisoned)
    out, history = tmp_path / "x.png", tmp_path / "x.json"
    result = CliRunner().invoke(
        main,
        [
            "reconstruct",
            str(y),
            "--out",
            str(out),
            "--history",
            "--iterations",
            "50",
            "--stop",
            "budget",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "stop=diverged" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "diverged at iteration 4" in warnings[0] and "best iterate" in warnings[0]
    from metadip.imageio import read_image

    image = read_image(out)
    assert image.shape == (1, 3, 24, 24) and torch.isfinite(image).all() and image.std() > 0
    data = json.loads(history.read_text())
    assert data["stop_reason"] == "diverged" and data["stop_iteration"] == 4 and len(data["loss"]) == 4


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    """Temporary files are 0600; the renamed result must get what open() would give (0666 & ~umask)."""
    import os

    from metadip import fileio
    from metadip.fileio import atomic_save_with, atomic_write_text

    old = os.umask(0o022)
    fileio._default_mode.cache_clear()  # the umask is read once per process
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_save_with(tmp_path / "b.txt", lambda name: open(name, "w").close())
    finally:
        os.umask(old)
        fileio._default_mode.cache_clear()
    for name in ("a.txt", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
