"""Evaluation: speedup / peak / stop summaries on synthetic curves, the spectral measures, results.json keys,
resume skipping, and a 2-image × 2-operator tiny-net run end to end through the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metadip import api, evaluation, spectral
from metadip.cli_evaluate import evaluate
from metadip.errors import MetadipError
from metadip.evaluation import statistics

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "kind": "skip",
    "name": "tiny",
    "in_channels": 4,
    "channels_down": [4, 4],
    "channels_up": [4, 4],
    "channels_skip": [2, 2],
}


# ------------------------------------------------------------------------------------------- synthetic curves


def rising(peak: float, at: int, length: int, start: float = 10.0) -> list[float]:
    """A curve rising linearly from ``start`` to ``peak`` at iteration ``at`` then decaying slowly."""
    curve = []
    for i in range(1, length + 1):
        if i <= at:
            curve.append(start + (peak - start) * i / at)
        else:
            curve.append(peak - 0.01 * (i - at))
    return curve


def case(init, psnr, pair="p", ms=10.0, stop_psnr=None, image="img", operator="denoise:sigma=25", seed=0):
    peak = int(np.argmax(psnr))
    return {
        "pair_key": pair,
        "init": init,
        "psnr": psnr,
        "peak_psnr": psnr[peak],
        "peak_iteration": peak + 1,
        "stop_psnr": psnr[-1] if stop_psnr is None else stop_psnr,
        "stop_iteration": len(psnr),
        "ms_per_iteration": ms,
        "image": image,
        "seed": seed,
        "operator": operator,
        "family": "denoise",
        "size": 32,
        "tag": "",
        "baselines": {"tv": 20.0},
    }


def test_pair_statistics_speedup_peak_stop():
    random_curve = rising(30.0, 100, 200)  # target 29.5 first reached at iteration ceil(100*19.5/20) = 98
    meta_curve = rising(31.0, 20, 200)  # 29.5 reached at iteration ceil(20*19.5/21) = 19
    stats = evaluation.pair_statistics(
        case("random", random_curve, stop_psnr=29.0), case("meta", meta_curve, ms=20.0, stop_psnr=29.6)
    )
    assert stats["target_psnr"] == pytest.approx(29.5)
    assert stats["iterations_random"] == 98 and stats["iterations_meta"] == 19
    assert stats["speedup"] == pytest.approx(98 / 19)
    assert stats["wall_clock_ratio"] == pytest.approx(98 * 10.0 / (19 * 20.0))
    assert stats["delta_peak"] == pytest.approx(1.0)
    assert stats["delta_stop"] == pytest.approx(0.6)


def test_wall_clock_counts_each_arms_setup():
    """A run's seconds to a target include its setup (network and z: a classical estimate in z is paid there),
    so an init that needs one iteration still pays its estimate; cases recorded before setup was timed count 0."""
    random_curve = rising(30.0, 100, 200)
    meta_curve = rising(31.0, 20, 200)
    meta = {**case("meta", meta_curve, ms=20.0), "setup_seconds": 1.5}
    stats = evaluation.pair_statistics(case("random", random_curve), meta)
    assert stats["wall_clock_ratio"] == pytest.approx(98 * 0.010 / (1.5 + 19 * 0.020))
    point = stats["frontier"]["0.5"]
    assert point["seconds_meta"] == pytest.approx(1.5 + 19 * 0.020, abs=1e-3)
    assert point["seconds_random"] == pytest.approx(98 * 0.010, abs=1e-3)


def test_reconstruct_reports_its_setup_inside_its_seconds():
    from metadip import api, operators

    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    op = operators.build_operator("denoise:sigma=25", x.shape[1:])
    y = operators.simulate(x, op, torch.Generator().manual_seed(1))
    result = api.reconstruct(y, op, init="random", iterations=3, stop="budget")
    assert 0 < result.setup_seconds < result.seconds


def test_never_reached_counts_as_zero_and_iqr():
    random_curve = rising(30.0, 100, 200)
    cases = []
    # four pairs: meta never reaches the target (speedup 0), and three that do
    for key, meta_at in (("a", None), ("b", 50), ("c", 25), ("d", 17)):
        meta_curve = rising(25.0, 100, 200) if meta_at is None else rising(30.0, meta_at, 200)
        cases += [case("random", random_curve, pair=key), case("meta", meta_curve, pair=key)]
    summary = evaluation.summarize(cases)
    speedups = sorted(
        evaluation.pair_statistics(c, m)["speedup"] for c, m in zip(cases[0::2], cases[1::2], strict=True)
    )
    assert speedups[0] == 0.0 and len(speedups) == 4  # counted, never dropped
    assert summary["n_cases"] == 4 and summary["n_pairs"] == 4
    assert summary["speedup_median"] == pytest.approx(round(float(np.median(speedups)), 4))
    q25, q75 = np.percentile(speedups, [25, 75])
    assert summary["speedup_iqr"] == pytest.approx(round(q75 - q25, 4))
    assert summary["meta_reached_fraction"] == pytest.approx(0.75)
    assert summary["delta_peak_median"] == pytest.approx(0.0)
    assert summary["baselines_median"] == {"tv": 20.0}


def test_random_only_summary_still_counts_iterations_to_its_target():
    summary = evaluation.summarize([case("random", rising(30.0, 100, 200), pair=k) for k in "ab"])
    assert summary["n_pairs"] == 0 and summary["speedup_median"] is None
    assert summary["iterations_to_target_random_median"] == 98  # 29.5 dB first reached at iteration 98


def test_median_iterations_with_never():
    assert statistics._median_with_never([10, 20, None]) == 20
    assert statistics._median_with_never([10, None, None]) is None  # median is "never"
    assert evaluation.median([1.0, None, float("nan"), 3.0]) == 2.0
    assert evaluation.iqr([]) is None


def test_build_summary_groups():
    random_curve = rising(30.0, 100, 150)
    cases = [
        case("random", random_curve, pair="1"),
        case("meta", rising(30.0, 10, 150), pair="1"),
        case("random", random_curve, pair="2", operator="inpaint:ratio=0.5"),
        case("meta", rising(30.0, 50, 150), pair="2", operator="inpaint:ratio=0.5"),
    ]
    for c in cases[2:]:
        c["family"] = "inpaint"
    summary = evaluation.build_summary(cases)
    assert set(summary) >= {"overall", "by_operator", "by_setting", "by_family", "by_size"}
    assert set(summary["by_operator"]) == {"denoise:sigma=25", "inpaint:ratio=0.5"}
    for entry in summary["by_operator"].values():
        assert set(evaluation.SUMMARY_KEYS) <= set(entry)
        assert entry["n_cases"] == 1
    assert summary["by_setting"]["inpaint:ratio=0.5 @ 32px"]["speedup_median"] == pytest.approx(
        evaluation.pair_statistics(cases[2], cases[3])["speedup"], abs=1e-4
    )


# --------------------------------------------------------------------------------------------------- spectral


def test_white_noise_power_spectrum_is_flat():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.1, size=(3, 128, 128))
    freqs, power = spectral.radial_power_spectrum(noise)
    assert len(freqs) == 64 and np.all(np.diff(freqs) > 0) and freqs[-1] == pytest.approx(0.5)
    # orthonormal FFT: expected power = variance in every ring; rings with many coefficients are tight
    assert np.nanmedian(power) == pytest.approx(0.01, rel=0.05)
    assert np.all(np.abs(power[8:] / 0.01 - 1) < 0.25)
    slope = np.polyfit(np.log(freqs[4:]), np.log(power[4:]), 1)[0]
    assert abs(slope) < 0.1


def test_natural_image_spectrum_falls_off():
    from conftest import sample_image

    freqs, power = spectral.radial_power_spectrum(sample_image("camera", 64))
    slope = np.polyfit(np.log(freqs), np.log(power), 1)[0]
    assert slope < -1.0


def test_band_error_zero_for_identical_and_one_for_zero_estimate():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.random((1, 3, 24, 24)).astype(np.float32))
    assert np.allclose(spectral.band_relative_error(image, image, 6), 0.0)
    assert np.allclose(spectral.band_relative_error(torch.zeros_like(image), image, 6), 1.0)
    # an error confined to high frequencies leaves the low bands untouched
    checker = torch.from_numpy(((np.indices((24, 24)).sum(0) % 2 - 0.5) * 0.1).astype(np.float32))
    errors = spectral.band_relative_error(image + checker, image, 6)
    assert np.allclose(errors[:-1], 0.0, atol=1e-6) and errors[-1] > 0


def test_log_spaced_iterations_and_recorder():
    its = spectral.log_spaced_iterations(600)
    assert its[0] == 1 and its[-1] == 600 and its == sorted(set(its)) and 10 <= len(its) <= 30
    assert spectral.log_spaced_iterations(1) == [1]
    reference = torch.rand(1, 3, 16, 16)
    recorder = spectral.SpectralRecorder(reference, 20, n_bands=4)
    for i in range(1, 21):
        recorder(i, reference if i == 20 else torch.zeros_like(reference), {}, None)
    data = recorder.to_dict()
    assert data["iterations"] == spectral.log_spaced_iterations(20)
    assert len(data["band_error"][0]) == 4 and len(data["band_edges"]) == 5
    assert all(v == 0 for v in data["band_error"][-1])
    assert len(data["power"][0]) == len(data["frequencies"]) == 8


# ---------------------------------------------------------------------------------------------- configuration


def test_quick_suite_file_matches_quick_option():
    suite = evaluation.load_suite(ROOT / "evaluate" / "suites" / "quick.toml")
    assert suite == evaluation.quick_config()


@pytest.mark.parametrize("name", ["quick", "default", "size256", "grey"])
def test_suites_parse(name):
    suite = evaluation.load_suite(ROOT / "evaluate" / "suites" / f"{name}.toml")
    assert suite.runs and suite.name == name


def test_config_toml_round_trip(tmp_path):
    config = evaluation.EvalConfig(
        runs=(
            evaluation.RunSpec(
                operators=("denoise:sigma=25", "deblur:kernel=gauss,width=2"),
                images="camera,coffee",
                size=32,
                iterations=7,
                seeds=2,
                tag="seen",
            ),
            evaluation.RunSpec(operators=("fourier:ratio=0.3",), max_images=1),
        ),
        init="random",
        description='a "quoted" text',
    )
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml("header"))
    assert evaluation.load_suite(path) == config


def test_bad_configs():
    with pytest.raises(MetadipError, match="unknown operator|operator"):
        evaluation.RunSpec(operators=("blur:x=1",))
    with pytest.raises(MetadipError, match="unknown key"):
        evaluation.EvalConfig.from_dict({"run": [{"operators": ["denoise"]}], "bogus": 1})
    with pytest.raises(MetadipError, match="stopping rule"):
        evaluation.EvalConfig(runs=(evaluation.RunSpec(operators=("denoise",)),), stop="never")


def test_measurement_is_reproducible(tiny_rgb):
    op1, y1 = evaluation.make_problem(tiny_rgb, "inpaint:ratio=0.5,sigma=10", 3, "astronaut")
    op2, y2 = evaluation.make_problem(tiny_rgb, "inpaint:ratio=0.5,sigma=10", 3, "astronaut")
    _, y3 = evaluation.make_problem(tiny_rgb, "inpaint:ratio=0.5,sigma=10", 4, "astronaut")
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_baselines(tiny_rgb):
    op, y = evaluation.make_problem(tiny_rgb, "denoise:sigma=25", 0, "astronaut")
    base = evaluation.compute_baselines(tiny_rgb, y, op)
    assert base["tv"] > base["measurement"]  # TV with the fixed weight rule beats the noisy image
    op, y = evaluation.make_problem(tiny_rgb, "superres:factor=2", 0, "astronaut")
    assert set(evaluation.compute_baselines(tiny_rgb, y, op)) == {"bicubic", "tikhonov"}
    op, y = evaluation.make_problem(tiny_rgb, "fourier:ratio=0.3", 0, "astronaut")
    view, kind = evaluation.measurement_view(y, op)
    assert kind == "back-projection" and view.shape == tiny_rgb.shape


def test_coverage():
    training = {
        "tasks": {
            "weights": {"denoise": 1.0, "inpaint": 1.0, "fourier": 0.0},
            "denoise_sigma": [10, 50],
            "noise_sigma": [0, 5],
            "inpaint_ratio": [0.3, 0.8],
            "inpaint_holes": ["pixels"],
        }
    }
    assert evaluation.coverage("denoise:sigma=25", training) == "seen"
    assert evaluation.coverage("denoise:sigma=75", training) == "unseen sigma"
    assert evaluation.coverage("inpaint:holes=blocks", training) == "unseen holes"
    assert evaluation.coverage("fourier:ratio=0.3", training) == "unseen family"
    assert evaluation.coverage("denoise:sigma=0,poisson=40", training) == "unseen poisson"
    assert evaluation.coverage("denoise", {}) is None


def test_random_arm_architecture():
    from metadip.generators import build_generator

    conditioned = build_generator("skip-slim", out_channels=3, residual=True, in_channels=38).config
    assert evaluation.random_arch(conditioned) == "skip-slim"  # the DIP paper's network, noise input
    tiny = build_generator(TINY, out_channels=3).config
    assert build_generator(evaluation.random_arch(tiny)).config == tiny


def test_images_refuse_training_images(tmp_path):
    arm = evaluation.Arm(
        label="meta",
        init="x",
        arch=None,
        name="x",
        sha256="s",
        arch_config={},
        inner={},
        training={"train_images": ["coins"], "held_out_images": ["camera"], "image_source": "samples"},
    )
    assert [i.name for i in evaluation.resolve_images("held-out", arm)] == ["camera"]
    with pytest.raises(MetadipError, match="meta-training set"):
        evaluation.resolve_images("coins", arm)
    with pytest.raises(MetadipError, match="neither a folder"):
        evaluation.resolve_images("no-such-image", None)
    assert [i.name for i in evaluation.resolve_images("held-out", None, max_images=2)] == [
        "astronaut",
        "camera",
    ]


# ----------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from metadip.checkpoint import save_checkpoint
    from metadip.generators import InputRecipe, build_generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_generator(TINY, out_channels=3)
    save_checkpoint(
        tmp_path / "tiny",
        net,
        arch_config=net.config,
        input_recipe=InputRecipe(channels=4, seed=3),
        inner={
            "optimizer": "adam",
            "lr": 0.01,
            "reg_noise_std": 1 / 30,
            "ema": 0.99,
            "iterations": 12,
            "stop": "wmv",
        },
        training={
            "algorithm": "maml",
            "steps": 1,
            "image_source": "samples",
            "train_images": ["coins"],
            "held_out_images": ["camera"],
            "tasks": {"weights": {"denoise": 1.0}},
        },
    )
    return tmp_path / "tiny"


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(folder / "wide.png")
    ramp = (np.linspace(0, 1, 36 * 36).reshape(36, 36) * 255).astype(np.uint8)
    Image.fromarray(ramp).save(folder / "grey.jpg")  # grey JPEG: repeated to RGB
    return folder


def _untimed(value):
    """``value`` without wall-clock entries (seconds, ms per iteration, wall-clock ratios), which differ per run."""
    if isinstance(value, dict):
        timed = ("seconds", "ms_per_iteration", "wall_clock")
        return {k: _untimed(v) for k, v in value.items() if not any(t in k for t in timed)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def test_end_to_end_cli_and_resume(tmp_path, tiny_checkpoint, image_folder, monkeypatch):
    out = tmp_path / "eval"
    args = [
        "--images",
        str(image_folder),
        "--operators",
        "denoise:sigma=25",
        "superres:factor=2",
        "--init",
        str(tiny_checkpoint),
        "--size",
        "24",
        "--iterations",
        "12",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--jobs",
        "1",
    ]
    calls = []
    real = api.reconstruct

    def counting(*a, **kw):
        calls.append(kw.get("init"))
        return real(*a, **kw)

    monkeypatch.setattr(api, "reconstruct", counting)
    result = CliRunner().invoke(evaluate, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(calls) == 8  # 2 images × 2 operators × 1 seed × 2 arms
    assert "8 run, 0 already done" in result.output

    data = json.loads((out / "results.json").read_text())
    assert set(data) >= {"cases", "summary", "config"}
    assert len(data["cases"]) == 8
    for entry in data["cases"]:
        assert set(evaluation.CASE_KEYS) <= set(entry)
        assert entry["init"] in ("meta", "random") and len(entry["psnr"]) == len(entry["ssim"]) == 12
        assert entry["image"] in ("wide.png", "grey.jpg")
        assert 1 <= entry["peak_iteration"] <= 12 and entry["peak_psnr"] == pytest.approx(max(entry["psnr"]), abs=1e-3)
        assert math.isfinite(entry["stop_psnr"]) and entry["ms_per_iteration"] > 0
        assert entry["baselines"] and (out / entry["files"]["stop"]).is_file()
    summary = data["summary"]
    assert set(summary["overall"]) >= set(evaluation.SUMMARY_KEYS)
    assert set(summary["by_operator"]) == {"denoise:sigma=25", "superres:factor=2"}
    for entry in summary["by_operator"].values():
        assert set(evaluation.SUMMARY_KEYS) <= set(entry) and entry["n_cases"] == 2
    config = data["config"]
    assert config["init"]["name"] == "tiny" and len(config["init"]["sha256"]) == 64
    assert config["seeds"] == [0] and config["sizes"] == [24] and config["versions"]["torch"]
    assert config["command"].startswith("metadip evaluate")
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 8 and "psnr" not in rows[0] and "baseline_tv" in rows[0]
    for name in ("report.md", "curves.png", "speedup.png", "config.toml"):
        assert (out / name).is_file(), name
    assert len(list(out.glob("grid_*.png"))) == 2 and len(list(out.glob("spectral_*.png"))) == 2
    report = (out / "report.md").read_text()
    assert "median of" in report and "spectral" in report.lower()
    assert config["init"]["meta_steps"] > 0 and "Meta-learned init **tiny**" in report

    # resume: the same command does no DIP work and gives the same cases
    calls.clear()
    result = CliRunner().invoke(evaluate, [*args, "--no-report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert calls == [] and "0 run, 8 already done" in result.output
    again = json.loads((out / "results.json").read_text())
    assert [c["psnr"] for c in again["cases"]] == [c["psnr"] for c in data["cases"]]

    # interrupted: a case that never got stored runs again, and the suite equals the uninterrupted one
    victim = sorted((out / "cases").glob("*_meta_*.json"))[0]
    victim.unlink()
    result = CliRunner().invoke(evaluate, [*args, "--no-report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and "1 run, 7 already done" in result.output
    resumed = json.loads((out / "results.json").read_text())
    assert [c["psnr"] for c in resumed["cases"]] == [c["psnr"] for c in data["cases"]]
    assert _untimed(resumed["summary"]) == _untimed(data["summary"])

    # the report rebuilds from results.json and the stored images alone
    import metadip.report
    from metadip.evaluation.report import build_report

    assert metadip.report.build_report is build_report  # the old import path still works
    (out / "report.md").unlink()
    build_report(out)
    assert (out / "report.md").is_file()


def test_random_only_and_greedy_operators(tmp_path, monkeypatch):
    """--init random runs one arm and says so; --operators takes several words up to the next option."""
    monkeypatch.setattr("metadip.evaluation.arms._auto_init", lambda config=None: (None, False))
    out = tmp_path / "r"
    args = [
        "--init",
        "random",
        "--images",
        "astronaut",
        "--operators",
        "denoise:sigma=25",
        "inpaint:ratio=0.5",
        "--size",
        "24",
        "--iterations",
        "6",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--arch",
        "skip-slim",
        "--no-report",
        "--jobs",
        "1",
    ]
    result = CliRunner().invoke(evaluate, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "random-init arm only" in result.output
    data = json.loads((out / "results.json").read_text())
    assert {c["init"] for c in data["cases"]} == {"random"} and len(data["cases"]) == 2
    assert data["summary"]["overall"]["speedup_median"] is None
    assert data["config"]["options"]["run"][0]["operators"] == ["denoise:sigma=25", "inpaint:ratio=0.5"]


def test_auto_init_of_a_suite_follows_reconstructs_rule(tmp_path, monkeypatch):
    """A suite whose operators all get the same recommended init gets it (what reconstruct would pick); a
    mixed suite gets the universal default and a note saying so."""
    from metadip import checkpoint

    monkeypatch.setattr(checkpoint, "default_checkpoint_dir", lambda: tmp_path / "none")
    monkeypatch.setenv("METADIP_CHECKPOINTS", str(tmp_path))
    for name, families in ((checkpoint.DEFAULT_INIT, ()), ("blur-expert", ("deblur",))):
        init = checkpoint.random_init("skip-slim", seed=1)
        checkpoint.save_checkpoint(
            tmp_path / name,
            init.state_dict,
            arch_config=init.arch_config,
            input_recipe=init.input_recipe,
            inner=init.inner,
            training={"algorithm": "test"},
            recommended_for=families,
        )

    def config_for(*operators, per_operator=True):
        run = evaluation.RunSpec(operators=operators, images="astronaut", size=16, iterations=2, seeds=1, tag="t")
        return evaluation.EvalConfig(runs=(run,), init="auto", arch=None, per_operator_auto=per_operator)

    arms, notes = evaluation.resolve_arms(config_for("deblur:kernel=gauss,width=1", "deblur:kernel=motion,length=5"))
    assert arms[-1].name == "blur-expert" and "'blur-expert'" in notes[0] and "separate suites" not in notes[0]
    # one init for the whole suite: the universal default, and a note saying so
    mixed = config_for("deblur:kernel=gauss,width=1", "denoise:sigma=25", per_operator=False)
    arms, notes = evaluation.resolve_arms(mixed)
    assert arms[-1].name == checkpoint.DEFAULT_INIT and "separate suites" in notes[0]
    # per operator (the default): each problem gets reconstruct's own --init auto choice
    mixed = config_for("deblur:kernel=gauss,width=1", "denoise:sigma=25")
    arms, notes = evaluation.resolve_arms(mixed)
    assert "each operator gets the init" in notes[0]
    picked = {p.operator: [a.name for a in evaluation.problem_arms(p, arms)] for p in evaluation.plan(mixed, arms)}
    assert picked == {
        "deblur:kernel=gauss,width=1": ["random", "blur-expert"],
        "denoise:sigma=25": ["random", checkpoint.DEFAULT_INIT],
    }


@pytest.mark.slow
def test_parallel_jobs_match_sequential(tmp_path, monkeypatch):
    """--jobs 2 (spawned workers) gives the same curves as one process, in the same case order (slow: two
    interpreters import torch)."""
    monkeypatch.setattr("metadip.evaluation.arms._auto_init", lambda config=None: (None, False))
    config = evaluation.EvalConfig(
        runs=(
            evaluation.RunSpec(
                operators=("denoise:sigma=25",), images="astronaut", size=16, iterations=4, seeds=2, tag="t"
            ),
        ),
        init="random",
        arch=None,
    )
    arms, _ = evaluation.resolve_arms(config)
    one, _, _, counts = evaluation.run_cases(
        config, tmp_path / "a", progress=False, arms=arms, device="cpu", jobs=1, threads=1
    )
    assert counts == {"run": 2, "skipped": 0, "jobs": 1, "threads": 1}
    two, _, _, counts = evaluation.run_cases(
        config, tmp_path / "b", progress=False, arms=arms, device="cpu", jobs=2, threads=1
    )
    assert counts == {"run": 2, "skipped": 0, "jobs": 2, "threads": 1}
    assert [c["key"] for c in one] == [c["key"] for c in two]
    assert [c["psnr"] for c in one] == [c["psnr"] for c in two]


def test_parallelism_auto(monkeypatch):
    monkeypatch.setattr("metadip.evaluation.runner._cores", lambda: 2)
    assert evaluation.parallelism(0, None, "cpu", 10) == (2, 1)
    assert evaluation.parallelism(0, None, "cpu", 1) == (1, None)  # one case: no workers
    assert evaluation.parallelism(1, None, "cpu", 10) == (1, None)  # one process, default threads
    assert evaluation.parallelism(3, 2, "cpu", 10) == (3, 2)
    with pytest.raises(MetadipError):
        evaluation.parallelism(-1, None, "cpu", 10)


def _readme_table():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "evaluate" / "readme_table.py")
    readme_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme_table)
    return readme_table


def _suite_results(converge=True, random_curve=None, capped_run=False):
    random_curve = random_curve or rising(30.0, 100, 150)
    cases = [
        {
            **case("random", random_curve, pair="1"),
            "init_name": "random",
            "capped_while_improving": capped_run,
            **({"converged": not capped_run} if converge else {}),
        },
        {**case("meta", rising(30.0, 10, 150), pair="1"), "init_name": "tiny"},
    ]
    cases[0]["baselines"] = {"measurement": 20.0, "tv": 24.5, "bm3d": 27.25}
    return {
        "cases": cases,
        "summary": evaluation.build_summary(cases),
        "config": {
            "init": {"name": "tiny", "sha256": "ab" * 32},
            "date": "today",
            "device": "cpu",
            "images": ["img"],
            "options": {"converge": converge, "init": "auto"},
        },
    }


def test_readme_table_touches_only_its_block(tmp_path, monkeypatch):
    from metadip import checkpoint

    readme_table = _readme_table()
    monkeypatch.setattr(checkpoint, "shipped_init_for_spec", lambda spec, size=64, channels=3: "tiny")
    (tmp_path / "results" / "default").mkdir(parents=True)
    (tmp_path / "results" / "default" / "results.json").write_text(json.dumps(_suite_results()))
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nintro\n\n", "\n\n## Later\ntext\n"
    readme.write_text(before + readme_table.BEGIN + "\nold table\n" + readme_table.END + after)
    assert readme_table.main(["--update", "--results", str(tmp_path / "results"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(before + readme_table.BEGIN) and text.endswith(readme_table.END + after)
    assert "old table" not in text and "denoise:sigma=25 @ 32px" in text and "×9.8" in text
    assert "(results/default/report.md)" in text and "bm3d 27.25" in text and "(tiny)" in text
    full = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "| [default](../results/default/report.md) | denoise:sigma=25 @ 32px |" in full
    readme.write_text("no markers")
    with pytest.raises(SystemExit):
        readme_table.main(["--update", "--results", str(tmp_path / "results"), "--readme", str(readme)])
    assert readme.read_text() == "no markers"


def test_readme_table_headline_only_from_converged_auto_suites_and_marks_capped_rows():
    readme_table = _readme_table()
    budget = _suite_results(converge=False, random_curve=rising(30.0, 150, 150))  # still rising at the end
    assert "No suite has been run" in readme_table.headline({"old": (budget, "o.md")})
    full = readme_table.full_document({"old": (budget, "o.md")})
    assert "denoise:sigma=25 @ 32px ⚠ 1/1" in full and "fixed budget" in full
    converged = _suite_results(capped_run=True)
    text = readme_table.headline({"default": (converged, "d.md")})
    assert "[denoise:sigma=25 @ 32px](d.md) ⚠ 1/1" in text
    assert readme_table.best_classical(converged["summary"]["by_setting"]["denoise:sigma=25 @ 32px"]) == "bm3d 27.25"


def test_operators_option_needs_a_value(tmp_path):
    for args in (["--operators", "--init", "random"], ["--init", "random", "--operators"]):
        result = CliRunner().invoke(evaluate, [*args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and "--operators needs at least one SPEC" in result.output
        assert not (tmp_path / "x").exists()


def test_evaluate_registered_on_main_cli():
    from metadip.cli import main

    if "evaluate" not in main.commands:
        pytest.skip("the lead registers evaluate on the main group")
    result = CliRunner().invoke(main, ["evaluate", "--help"])
    assert result.exit_code == 0 and "--operators" in result.output


def test_frontier_per_delta_iterations_seconds_and_speedup():
    random_curve = rising(30.0, 100, 200)  # linear 10 -> 30 dB over 100 iterations
    meta_curve = rising(29.0, 10, 200)  # 9 -> 29 dB in 10 iterations, peaks 1 dB lower
    stats = evaluation.pair_statistics(case("random", random_curve), case("meta", meta_curve, ms=20.0))
    front = stats["frontier"]
    assert set(front) == {"0.25", "0.5", "1", "2"}
    assert front["0.5"]["speedup"] == pytest.approx(stats["speedup"])
    assert front["0.25"]["iterations_meta"] is None and front["0.25"]["speedup"] == 0.0  # above meta's peak
    assert front["1"]["iterations_meta"] == 10 and front["2"]["iterations_meta"] == 10
    assert front["2"]["iterations_random"] == 90
    assert front["2"]["seconds_random"] == pytest.approx(0.9) and front["2"]["seconds_meta"] == pytest.approx(0.2)
    summary = evaluation.summarize([case("random", random_curve), case("meta", meta_curve, ms=20.0)])
    assert summary["frontier"]["2"]["speedup_median"] == pytest.approx(9.0)
    assert summary["frontier"]["0.25"]["meta_reached_fraction"] == 0.0


def test_still_improving_flags_capped_and_budget_limited_runs():
    assert evaluation.still_improving({"capped_while_improving": True, "psnr": [1.0]})
    assert not evaluation.still_improving({"converged": True, "psnr": rising(30.0, 1000, 1000)})
    assert evaluation.still_improving({"psnr": rising(30.0, 1000, 1000)})  # fixed budget, still rising
    assert not evaluation.still_improving({"psnr": rising(30.0, 100, 1000)})
    # a converged suite's run cut at its cap: flagged only when it gained 0.01 dB within its last 500 iterations
    plateaued = rising(30.0, 3600, 3600) + [30.0] * 2400  # peak at 3600, flat to the 6000 cap
    assert not evaluation.still_improving({"converged": False, "psnr": plateaued})
    assert evaluation.still_improving({"converged": False, "psnr": rising(30.0, 5900, 6000)})


def test_readme_domain_block_lists_converged_named_init_suites(tmp_path):
    readme_table = _readme_table()
    named = _suite_results()
    named["config"]["options"]["init"] = "tiny"
    auto = _suite_results()
    loaded = {"default": (auto, "d.md"), "phantom": (named, "p.md")}
    block = readme_table.domain(loaded)
    assert "| phantom: [denoise:sigma=25 @ 32px](p.md) |" in block and "(tiny)" in block
    assert "d.md" not in block and "phantom" not in readme_table.headline(loaded)
    assert "No domain init" in readme_table.domain({"default": (auto, "d.md")})
    (tmp_path / "results" / "phantom").mkdir(parents=True)
    (tmp_path / "results" / "phantom" / "results.json").write_text(json.dumps(named))
    readme = tmp_path / "README.md"
    markers = readme_table.BEGIN + "\nold\n" + readme_table.END + "\nmiddle\n"
    readme.write_text(markers + readme_table.DOMAIN_BEGIN + "\nold domain\n" + readme_table.DOMAIN_END + "\nend\n")
    assert readme_table.main(["--update", "--results", str(tmp_path / "results"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old domain" not in text and "| phantom: [denoise:sigma=25 @ 32px]" in text and text.endswith("\nend\n")
    assert "\nmiddle\n" in text


def test_readme_headline_draws_a_setting_from_the_suite_of_todays_auto_pick(monkeypatch):
    """A family's init shipped after the auto suite ran: its converged suite on the same pictures and seeds
    replaces that setting's row in the headline table, and is not listed as a domain init."""
    from metadip import checkpoint

    readme_table = _readme_table()
    auto = _suite_results()
    for c in auto["cases"]:
        c["init_name"] = "old" if c["init"] == "meta" else c["init_name"]
    newer = _suite_results()
    newer["config"]["options"]["init"] = "tiny"
    newer["cases"][1]["peak_psnr"] = 31.5
    newer["summary"]["by_setting"]["denoise:sigma=25 @ 32px"]["meta_peak_psnr_median"] = 31.5
    loaded = {"default": (auto, "d.md"), "denoise-new": (newer, "n.md")}
    monkeypatch.setattr(checkpoint, "shipped_init_for_spec", lambda spec, size=64, channels=3: "tiny")
    assert readme_table.auto_pick(newer) and not readme_table.auto_pick(auto)
    text = readme_table.headline(loaded)
    assert "| [denoise:sigma=25 @ 32px](n.md) |" in text and "31.50 (tiny)" in text and "(old)" not in text
    assert "No domain init" in readme_table.domain(loaded)
    # other pictures or seeds: no replacement, and the old row says that auto picks another init now
    newer["cases"][1]["seed"] = 7
    assert "(old; auto picks tiny now, not measured on these pairs)" in readme_table.headline(loaded)
    # auto no longer picks it: a domain init again, and the auto suite's own row stays
    newer["cases"][1]["seed"] = auto["cases"][1]["seed"]
    monkeypatch.setattr(checkpoint, "shipped_init_for_spec", lambda spec, size=64, channels=3: "old")
    assert "(old)" in readme_table.headline(loaded) and "n.md" in readme_table.domain(loaded)


def test_readme_headline_never_takes_a_row_from_a_suite_of_another_channel_count(monkeypatch):
    """A grey suite of the grey pick on the same pictures and seeds (offset-inpaint-grey) is no stand-in for the RGB
    auto suite's row, though the setting's label is the same: auto's pick is asked for the suite's own channels."""
    from metadip import checkpoint

    readme_table = _readme_table()
    auto = _suite_results()
    auto["config"]["init"]["arch"] = {"out_channels": 3}
    grey = _suite_results()
    grey["config"]["options"]["init"] = "tiny-grey"
    grey["config"]["init"] = {"name": "tiny-grey", "sha256": "cd" * 32, "arch": {"out_channels": 1}}
    for c in grey["cases"]:
        c["init_name"] = "tiny-grey" if c["init"] == "meta" else c["init_name"]
    loaded = {"default": (auto, "d.md"), "grey-suite": (grey, "g.md")}
    picks = {1: "tiny-grey", 3: "tiny"}
    monkeypatch.setattr(checkpoint, "shipped_init_for_spec", lambda spec, size=64, channels=3: picks[channels])
    assert readme_table.channels_of(grey) == 1 and readme_table.channels_of(auto) == 3
    assert readme_table.auto_pick(grey) and readme_table.replacements(loaded, auto) == {}
    text = readme_table.headline(loaded)
    assert "| [denoise:sigma=25 @ 32px](d.md) |" in text and "g.md" not in text and "(tiny)" in text


def test_readme_headline_takes_more_seeds_and_says_when_auto_now_picks_random(monkeypatch):
    """A later suite of today's pick with the same pictures and more seeds replaces the row (most pairs win); a
    setting that auto now leaves to random init is shown as random init, with what the retired init measured."""
    from metadip import checkpoint

    readme_table = _readme_table()
    auto = _suite_results()
    more = _suite_results()
    more["config"]["options"]["init"] = "tiny"
    more["cases"] += [
        {**case("random", rising(30.0, 100, 150), pair="2", seed=1), "init_name": "random", "converged": True},
        {**case("meta", rising(31.0, 10, 150), pair="2", seed=1), "init_name": "tiny"},
    ]
    more["summary"] = evaluation.build_summary(more["cases"])
    loaded = {"default": (auto, "d.md"), "more-seeds": (more, "m.md")}
    monkeypatch.setattr(checkpoint, "shipped_init_for_spec", lambda spec, size=64, channels=3: "tiny")
    text = readme_table.headline(loaded)
    assert "| [denoise:sigma=25 @ 32px](m.md) | 2 |" in text and "a higher iteration cap or more seeds" in text
    monkeypatch.setattr(checkpoint, "shipped_init_for_spec", lambda spec, size=64, channels=3: None)
    text = readme_table.headline({"default": (auto, "d.md")})
    assert "= random (auto picks random init now; tiny measured" in text
    monkeypatch.setattr(checkpoint, "shipped_init_for_spec", lambda spec, size=64, channels=3: "newer")
    text = readme_table.headline({"default": (auto, "d.md")})  # another init is auto's pick, measured nowhere here
    assert "(tiny; auto picks newer now, not measured on these pairs)" in text


def test_a_cached_arm_is_reused_only_for_the_same_online_recipe():
    """The case key holds the arm's whole online recipe (but not its own budget, which the suite overrides): a
    sidecar edited to another EMA gets new cases instead of the old recipe's numbers."""
    from types import SimpleNamespace

    from metadip.evaluation import arm_key
    from metadip.evaluation.arms import Arm
    from metadip.online import PAPER

    problem = SimpleNamespace(pair_key="pair", iterations=100)

    def arm(recipe):
        return Arm(
            label="meta", init="x", arch=None, name="x", sha256="abc", arch_config={"name": "skip-slim"}, inner=recipe
        )

    paper = PAPER.to_dict()
    same = arm_key(problem, arm(paper), "holdout", 8)
    assert arm_key(problem, arm({**paper, "iterations": 5}), "holdout", 8) == same
    for change in ({"ema": 0.9}, {"lr": 0.02}, {"reg_noise_std": 0.0}, {"loss": "sure"}, {"adapt": "norm"}):
        assert arm_key(problem, arm({**paper, **change}), "holdout", 8) != same, change
    legacy = {k: v for k, v in paper.items() if k not in ("adapt", "loss")}  # an older sidecar
    assert arm_key(problem, arm(legacy), "holdout", 8) == same


def test_report_calls_a_zero_step_init_not_meta_learned():
    """offset-inpaint is PyTorch's init around an estimate (0 meta-steps): its report must not call it meta-learned;
    results written before the field existed (no meta_steps) keep the old wording."""
    from metadip.evaluation.report.markdown import arms_sentence

    config = {"init": {"name": "offset-inpaint", "sha256": "ab" * 32, "card": "c", "meta_steps": 0}}
    assert arms_sentence(config, ["random", "meta"]).startswith("Init (not meta-learned: 0 meta-steps) **offset")
    config["init"]["meta_steps"] = 500
    assert arms_sentence(config, ["random", "meta"]).startswith("Meta-learned init **offset-inpaint**")
    del config["init"]["meta_steps"]
    assert arms_sentence(config, ["random", "meta"]).startswith("Meta-learned init")
    assert arms_sentence(config, ["random"]).startswith("Random init only")
