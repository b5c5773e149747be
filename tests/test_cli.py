"""The command line through click's CliRunner (simulate → reconstruct round trips for every operator family,
history JSON, help texts, demo) and once as a real subprocess. DIP runs stay tiny: ≤ 32 px, ≤ 20 iterations,
the slim preset."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from metadip.cli import main
from metadip.imageio import read_image, read_measurement

REPO = Path(__file__).resolve().parents[1]
FAST = ["--iterations", "20", "--stop", "budget", "--arch", "skip-slim", "--no-progress"]
SUMMARY = re.compile(
    r"^iterations=(\d+) stop=(\w+)( psnr=[\d.]+ ssim=[\d.]+)? seconds=[\d.]+ init=([\w.-]+)$", re.M
)


def invoke(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.mark.parametrize(
    ("spec", "name", "artifacts"),
    [
        ("denoise:sigma=25", "y.png", []),
        ("inpaint:ratio=0.5", "y.png", ["y.mask.png"]),
        ("superres:factor=2,sigma=2", "y.png", []),
        ("deblur:kernel=gauss,width=1.5,sigma=2", "y.png", []),
        ("fourier:ratio=0.3", "y.npy", []),
    ],
    ids=["denoise", "inpaint", "superres", "deblur", "fourier"],
)
def test_simulate_reconstruct_round_trip(tmp_path, spec, name, artifacts):
    y = tmp_path / name
    out = ok("simulate", "sample:astronaut", "--size", "32", "--operator", spec, "--seed", "3", "--out", y)
    assert f"wrote {y}" in out.stdout
    sidecar = tmp_path / "y.operator.json"
    assert y.is_file() and sidecar.is_file()
    for artifact in artifacts:
        assert (tmp_path / artifact).is_file()
    measurement = read_measurement(y)
    assert measurement.is_complex() == spec.startswith("fourier")
    expected_hw = (16, 16) if spec.startswith("superres") else (32, 32)
    assert tuple(measurement.shape[-2:]) == expected_hw

    x, history = tmp_path / "x.png", tmp_path / "h.json"
    # no --operator, --mask or --kernel: everything comes from the sidecar files
    result = ok("reconstruct", y, "--out", x, "--history", history, "--reference", "sample:astronaut", *FAST)
    match = SUMMARY.search(result.stdout)
    assert match and match.group(1) == "20" and match.group(2) == "budget" and match.group(3), result.stdout
    image = read_image(x)
    assert image.shape == (1, 3, 32, 32)
    data = json.loads(history.read_text())
    for key in (
        "loss",
        "psnr",
        "ssim",
        "stop_iteration",
        "stop_reason",
        "seconds",
        "init",
        "operator",
        "arch",
    ):
        assert key in data, key
    assert len(data["loss"]) == 20 and len(data["psnr"]) == 20 and len(data["ssim"]) == 20
    assert data["stop_iteration"] == 20 and data["stop_reason"] == "budget"
    # --init auto: the shipped init recommended for the operator (denoise; deblur; pixel inpainting; ×4 superres,
    # not this ×2), else the default; random init for partial Fourier (every photograph init avoids it)
    from metadip.denoisers import bm3d_available

    denoiser = "universal-slim-bm3d" if bm3d_available() else "universal-slim-sure"
    recommended = {
        "denoise": denoiser,
        "deblur": "universal-slim-tikhonov",
        "inpaint": "offset-inpaint",
        "fourier": "random",
    }
    expected_init = recommended.get(spec.split(":")[0], "universal-slim-long")
    assert data["init"] == expected_init and data["arch"] == "skip-slim"
    assert match.group(4) == expected_init  # the summary line names the init auto chose
    assert data["operator"].split(":")[0] == spec.split(":")[0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_reconstruct_without_sidecar_uses_flags(tmp_path):
    y = tmp_path / "y.png"
    ok("simulate", "sample:camera", "--size", "16", "--operator", "inpaint:ratio=0.3", "--out", y)
    (tmp_path / "y.operator.json").unlink()
    mask = tmp_path / "y.mask.png"
    x = tmp_path / "x.png"
    result = ok(
        "reconstruct",
        y,
        "--operator",
        "inpaint",
        "--mask",
        mask,
        "--out",
        x,
        "--iterations",
        "3",
        "--stop",
        "budget",
        "--no-progress",
    )
    assert SUMMARY.search(result.stdout).group(3) is None  # no reference → no psnr/ssim
    assert read_image(x).shape == (1, 1, 16, 16)


def test_reconstruct_history_without_reference_and_noise_override(tmp_path):
    y = tmp_path / "y.png"
    ok("simulate", "sample:camera", "--size", "16", "--operator", "denoise:sigma=25", "--out", y)
    history = tmp_path / "sub" / "h.json"
    ok(
        "reconstruct",
        y,
        "--operator",
        "denoise:sigma=20",
        "--out",
        tmp_path / "x.png",
        "--history",
        history,
        "--iterations",
        "3",
        "--stop",
        "budget",
        "--no-progress",
    )
    data = json.loads(history.read_text())
    assert len(data["loss"]) == 3 and "psnr" not in data
    assert "sigma=20" in data["operator"]


def test_oracle_with_reference(tmp_path):
    y = tmp_path / "y.png"
    ok("simulate", "sample:camera", "--size", "16", "--operator", "denoise:sigma=25", "--out", y)
    result = ok(
        "reconstruct",
        y,
        "--out",
        tmp_path / "x.png",
        "--iterations",
        "5",
        "--stop",
        "oracle",
        "--reference",
        "sample:camera",
        "--no-progress",
    )
    assert SUMMARY.search(result.stdout).group(3)


def test_outputs_checked_before_reconstruction(tmp_path, monkeypatch):
    import metadip.api

    def never(*args, **kwargs):
        raise AssertionError("reconstruction started before the output path was checked")

    monkeypatch.setattr(metadip.api, "reconstruct", never)
    y = tmp_path / "y.png"
    ok("simulate", "sample:camera", "--size", "16", "--operator", "denoise", "--out", y)
    (tmp_path / "file").write_text("x")
    result = invoke("reconstruct", y, "--out", tmp_path / "file" / "x.png")
    assert result.exit_code == 2 and "output directory" in result.stderr


def test_simulate_removes_partial_outputs(tmp_path, monkeypatch):
    import metadip.operators

    def failing(op, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(metadip.operators, "save_operator_artifacts", failing)
    result = invoke(
        "simulate", "sample:camera", "--size", "16", "--operator", "denoise", "--out", tmp_path / "y.png"
    )
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_simulate_png_clipping_note_and_npy_exact(tmp_path):
    result = ok(
        "simulate",
        "sample:camera",
        "--size",
        "16",
        "--operator",
        "denoise:sigma=50",
        "--out",
        tmp_path / "y.png",
    )
    assert "clipped" in result.stderr
    result = ok(
        "simulate",
        "sample:camera",
        "--size",
        "16",
        "--operator",
        "denoise:sigma=50",
        "--out",
        tmp_path / "y_exact.npy",  # not y.npy: y.png's operator record is y.operator.json
    )
    assert "clipped" not in result.stderr
    y = read_measurement(tmp_path / "y_exact.npy")
    assert y.min() < 0 or y.max() > 1  # noise kept exactly


def test_simulate_is_reproducible(tmp_path):
    for name in ("a.npy", "b.npy"):
        ok(
            "simulate",
            "sample:camera",
            "--size",
            "16",
            "--operator",
            "inpaint:ratio=0.5,sigma=10",
            "--seed",
            "7",
            "--out",
            tmp_path / name,
        )
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert (tmp_path / "a.mask.png").read_bytes() == (tmp_path / "b.mask.png").read_bytes()


@pytest.mark.parametrize("command", ["simulate", "reconstruct", "demo"])
def test_help_has_examples(command):
    result = ok(command, "--help")
    assert "Examples:" in result.stdout
    assert f"metadip {command} " in result.stdout or f"metadip {command}\n" in result.stdout


def test_group_help_and_version():
    from metadip import __version__

    assert "metadip demo" in ok("--help").stdout
    assert ok("--version").stdout.strip() == f"metadip {__version__}"


def test_usage_error_is_one_line():
    result = invoke("simulate")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: Missing argument")


def test_demo_tiny(tmp_path):
    out = tmp_path / "demo"
    result = ok("demo", "--size", "16", "--iterations", "3", "--out", out)
    assert (out / "demo.png").is_file() and (out / "demo.json").is_file()
    table = json.loads((out / "demo.json").read_text())
    assert table["iterations_cap"] == 3 and table["seconds_budget"] > 0
    assert [row["operator"].split(":")[0] for row in table["rows"]] == [
        "denoise",
        "inpaint",
        "superres",
        "deblur",
    ]
    for row in table["rows"]:
        random = row["random"]
        assert random["init"] == "random" and random["iterations"] <= 3 and random["psnr"] is not None
        curve = random["curve"]
        assert len(curve["seconds"]) == len(curve["psnr"]) == random["iterations"]
        assert curve["seconds"] == sorted(curve["seconds"]) and curve["seconds"][-1] <= random["seconds"]
        assert row["classical"]["psnr"] == max(v for k, v in row["baselines"].items() if k != "measurement")
    lines = result.stdout.splitlines()
    assert len([ln for ln in lines if ln.startswith(("denoise", "inpaint", "superres", "deblur"))]) == 4
    # three iterations are cut by the budget long before any peak: said plainly, and no speed-up anywhere
    assert "random cut by its budget after 3 iterations" in result.stdout
    assert "No speed-up is claimed against a random run cut by its budget" in result.stdout
    assert "speedup" not in result.stdout.replace("speed-up is claimed", "")
    assert "iters to random PSNR" not in result.stdout


def _save_init(stem: Path, channels: int = 3) -> Path:
    """A random skip-slim init saved as a checkpoint (stands in for a meta-learned one)."""
    from metadip.checkpoint import random_init, save_checkpoint

    init = random_init("skip-slim", out_channels=channels, seed=1)
    _, sidecar = save_checkpoint(
        stem,
        init.state_dict,
        arch_config=init.arch_config,
        input_recipe=init.input_recipe,
        inner=init.inner,
        training={"algorithm": "test", "seed": 1},
    )
    return sidecar


def test_reconstruct_from_checkpoint_path(tmp_path):
    sidecar = _save_init(tmp_path / "mini", channels=1)
    y = tmp_path / "y.png"
    ok("simulate", "sample:camera", "--size", "16", "--operator", "denoise", "--out", y)
    history = tmp_path / "h.json"
    ok(
        "reconstruct",
        y,
        "--init",
        sidecar,
        "--out",
        tmp_path / "x.png",
        "--history",
        history,
        "--iterations",
        "3",
        "--stop",
        "budget",
        "--no-progress",
    )
    assert json.loads(history.read_text())["init"] == "mini"


def test_demo_with_shipped_init(tmp_path, monkeypatch):
    monkeypatch.setenv("METADIP_CHECKPOINTS", str(tmp_path / "ckpt"))
    _save_init(tmp_path / "ckpt" / "meta-test")
    out = tmp_path / "demo"
    result = ok("demo", "--size", "16", "--iterations", "2", "--out", out)
    assert "meta PSNR" in result.stdout and "vs meta-test" in result.stdout
    rows = json.loads((out / "demo.json").read_text())["rows"]
    assert all(row["meta"]["iterations"] <= 2 and row["meta"]["psnr"] is not None for row in rows)
    assert all(row["meta"]["init"] == "meta-test" and len(row["meta"]["curve"]["psnr"]) <= 2 for row in rows)


def test_demo_picks_the_init_recommended_for_each_operator(tmp_path, monkeypatch):
    monkeypatch.setenv("METADIP_CHECKPOINTS", str(tmp_path / "ckpt"))
    _save_init(tmp_path / "ckpt" / "a-generic")
    sidecar = _save_init(tmp_path / "ckpt" / "b-blur")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "recommended_for": ["deblur"]}))
    out = tmp_path / "demo"
    result = ok("demo", "--size", "16", "--iterations", "2", "--out", out)
    assert "deblur → b-blur" in result.stdout and "denoise → a-generic" in result.stdout
    rows = json.loads((out / "demo.json").read_text())["rows"]
    assert [row["meta"]["init"] for row in rows] == ["a-generic", "a-generic", "a-generic", "b-blur"]


def test_tensorboard_logs(tmp_path):
    y = tmp_path / "y.png"
    ok("simulate", "sample:camera", "--size", "16", "--operator", "denoise", "--out", y)
    ok(
        "reconstruct",
        y,
        "--out",
        tmp_path / "x.png",
        "--tensorboard",
        tmp_path / "tb",
        "--iterations",
        "2",
        "--stop",
        "budget",
        "--no-progress",
    )
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_real_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "metadip", *map(str, args)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    helped = run("--help")
    assert helped.returncode == 0 and "reconstruct" in helped.stdout
    simulated = run(
        "simulate", "sample:camera", "--size", "16", "--operator", "denoise:sigma=25", "--out", "y.png"
    )
    assert simulated.returncode == 0, simulated.stderr
    rebuilt = run(
        "reconstruct", "y.png", "--out", "x.png", "--iterations", "3", "--stop", "budget", "--no-progress"
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert SUMMARY.search(rebuilt.stdout) and (tmp_path / "x.png").is_file()
    failed = run("reconstruct", "missing.png", "--out", "x2.png")
    assert failed.returncode == 2 and failed.stderr.strip().count("\n") == 0
    assert failed.stderr.startswith("error: measurement not found") and "Traceback" not in failed.stderr


def test_reconstruct_loads_no_heavy_modules(tmp_path):
    """A reconstruct imports torch and what it needs, nothing more: not torch._dynamo (torch.optim's first use
    imports it: ~2 s; the online loop uses metadip.optim), matplotlib, scipy, scikit-image or TensorBoard. (The
    BM3D denoising inits need the bm3d package, which imports scipy: inpainting here.)"""
    ok("simulate", "sample:camera", "--size", "16", "--operator", "inpaint:ratio=0.5", "--out", tmp_path / "y.png")
    heavy = ("torch._dynamo", "matplotlib", "scipy", "skimage", "tensorboard", "torch.utils.tensorboard")
    code = (
        "import sys\n"
        "from metadip.cli import main\n"
        "main(['reconstruct', 'y.png', '--out', 'x.png', '--iterations', '3', '--no-progress'], "
        "standalone_mode=False)\n"
        f"print('LOADED', [m for m in {heavy!r} if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout, done.stdout


def test_a_bm3d_init_on_another_operator_is_a_one_line_error(tmp_path):
    """universal-slim-bm3d holds BM3D's picture in z, which is for denoising: named for inpainting, one line, exit
    2, no output written."""
    y = tmp_path / "y.png"
    ok("simulate", "sample:astronaut", "--size", "32", "--operator", "inpaint:ratio=0.5", "--out", y)
    out = tmp_path / "x.png"
    result = invoke("reconstruct", y, "--init", "universal-slim-bm3d", "--out", out, *FAST[:4], "--no-progress")
    assert result.exit_code == 2 and "'bm3d' is for denoising" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
