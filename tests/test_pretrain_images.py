"""``metadip pretrain --images DIR --operator SPEC ...``: the recipe built from the flags (operator ranges onto the
task distribution, the seeded train / held-out split, the init it starts from), a tiny end-to-end run through
click's CliRunner (recipe TOML that re-runs to the same weights, exported init usable by reconstruct, the
held-out table), the wall-clock budget, resume, and one-line errors for folders it cannot use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from metadip.cli import main
from metadip.errors import MetadipError
from metadip.pretrain import PretrainConfig, images_recipe
from metadip.task_ranges import distribution_for_operators
from metadip.tasks import TaskDistribution

TINY_RUN = ["--from", "scratch", "--arch", "tiny", "--size", "16", "--val-tasks", "0", "--no-progress"]
TINY_RUN += ["--device", "cpu"]


def make_folder(root: Path, count: int = 20, size: int = 24, grey: bool = False, seed: int = 0) -> Path:
    """``count`` smooth random pictures (PNG, ``size`` px), in a sub-folder too, so names are relative paths."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = rng.random((4, 4) if grey else (4, 4, 3))
        array = np.kron(coarse, np.ones((size // 4, size // 4) + (() if grey else (1,))))
        path = root / ("sub" if i % 5 == 0 else "") / f"pic{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((array * 255).astype(np.uint8)).save(path)
    return root


def invoke(*args):
    result = CliRunner().invoke(main, ["pretrain", *[str(a) for a in args]])
    assert "Traceback" not in result.output
    return result


# ----------------------------------------------------------------------------------------- operator ranges


def test_range_specs_map_onto_the_task_distribution():
    base = TaskDistribution()
    dist = distribution_for_operators(
        base,
        [
            "denoise:sigma=10..40",
            "fourier:ratio=0.2..0.4,pattern=points",
            "inpaint:ratio=0.3..0.7,holes=pixels|blocks,block=4,sigma=0..5",
            "superres:factor=2..4,filter=gauss",
            "deblur:kernel=gauss|motion,width=1.5,length=3..7,sigma=0..5",
        ],
    )
    assert dist.weights == {"denoise": 1.0, "fourier": 1.0, "inpaint": 1.0, "superres": 1.0, "deblur": 1.0}
    assert dist.denoise_sigma == (10.0, 40.0) and dist.fourier_ratio == (0.2, 0.4)
    assert dist.fourier_pattern == "points" and dist.inpaint_ratio == (0.3, 0.7)
    assert dist.inpaint_holes == ("pixels", "blocks") and dist.inpaint_block == 4
    assert dist.superres_factors == (2, 3, 4) and dist.superres_filters == ("gauss",)
    assert dist.deblur_kernels == ("gauss", "motion") and dist.deblur_width == (1.5, 1.5)  # one value: degenerate
    assert dist.deblur_length == (3, 7) and dist.noise_sigma == (0.0, 5.0)
    only = distribution_for_operators(base, ["fourier"])  # a family without keys keeps base's ranges
    assert only.weights == {"fourier": 1.0} and only.fourier_ratio == base.fourier_ratio
    assert only.middle_spec("fourier") == "fourier:pattern=lines,ratio=0.35,sigma=2.5"
    assert dist.middle_spec("denoise") == "denoise:sigma=25"


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        (["denoise:poisson=10"], "no range for 'poisson'"),
        (["fourier:center=0.1"], "no range for 'center'"),
        (["deblur:angle=30"], "no range for 'angle'"),
        (["inpaint:holes=file"], "holes=file cannot be drawn"),
        (["fourier:pattern=lines|file"], "pattern=file cannot be drawn"),
        (["fourier:pattern=lines..points"], "pattern takes one value or alternatives"),
        (["denoise:sigma=40..10"], "low > high"),
        (["fourier:ratio=0..0.5"], "ratio must be in"),
        (["denoise:sigma=a..b"], "sigma must be"),
        (["denoise", "denoise:sigma=5"], "given twice"),
        (["inpaint:sigma=1", "deblur:sigma=2"], "noise_sigma"),
        (["blur"], "unknown operator"),
        (["denoise:sigma"], "key=value"),
    ],
)
def test_range_specs_the_distribution_cannot_express_are_refused(specs, match):
    with pytest.raises(MetadipError, match=match) as info:
        distribution_for_operators(TaskDistribution(), specs)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------- recipes


def test_recipe_from_the_default_init_and_its_split(tmp_path):
    folder = make_folder(tmp_path / "pics")
    config = images_recipe(folder, ["denoise:sigma=10..40", "inpaint:ratio=0.3..0.7"], size=16)
    # default --from: the init --init auto picks for colour pictures, read from its sidecar (no pretrain/ needed)
    assert config.model.init_from == "universal-slim-long" and config.model.arch == "skip-slim"
    assert config.input.z_mode == "conditioned" and config.inner.steps == 48  # its own training recipe
    assert config.data.source == str(folder.resolve()) and config.tasks.channels == 3
    assert config.tasks.weights == {"denoise": 1.0, "inpaint": 1.0}
    assert config.name == "pics" and not config.export and config.recommended_for == () == config.avoid_for
    assert config.maml.schedule_steps is None  # the schedule follows this run's steps
    held = config.data.held_out
    assert len(held) == 2  # max(1, 10 %) of 20
    again = images_recipe(folder, ["denoise:sigma=10..40", "inpaint:ratio=0.3..0.7"], size=16)
    assert again == config  # the split is a pure function of (sorted names, seed)
    five = images_recipe(folder, ["denoise"], held_out=5, size=16).data.held_out
    assert len(five) == 5 and len(set(five)) == 5


def test_grey_folder_recipes(tmp_path):
    folder = make_folder(tmp_path / "grey", count=4, grey=True)
    default = images_recipe(folder, ["denoise"], size=16)
    assert default.model.init_from == "universal-slim-grey" and default.tasks.channels == 1
    # an RGB measurement-conditioned init fine-tunes on grey pictures (metadip/meta/grey.py converts it)
    converted = images_recipe(folder, ["denoise"], init="universal-slim-long", size=16)
    assert converted.model.options["in_channels"] == 28 and converted.tasks.channels == 1
    scratch = images_recipe(folder, ["denoise"], init="scratch", arch="tiny", size=16)
    assert scratch.model.init_from is None and scratch.model.options["in_channels"] == 28
    assert scratch.inner.steps == 12  # the lineage's from-scratch recipe (universal-slim), not the fine-tune's


def test_recipe_refusals(tmp_path):
    colour = make_folder(tmp_path / "colour", count=3)
    with pytest.raises(MetadipError, match="cannot learn the colour pictures"):
        images_recipe(colour, ["denoise"], init="universal-slim-grey", size=16)
    with pytest.raises(MetadipError, match="--arch applies only with --from scratch"):
        images_recipe(colour, ["denoise"], arch="tiny")
    with pytest.raises(MetadipError, match="--arch 'huge'"):
        images_recipe(colour, ["denoise"], init="scratch", arch="huge")


# -------------------------------------------------------------------------------------------- end to end


def test_cli_images_end_to_end(tmp_path):
    folder = make_folder(tmp_path / "pics")
    out = tmp_path / "run"
    args = ["--images", folder, "--operator", "denoise:sigma=10..40", "--operator", "fourier:ratio=0.2..0.4"]
    result = invoke(*args, *TINY_RUN, "--steps", "2", "--name", "mine", "--out", out, "--table-iterations", "3")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "trained mine: 2 meta-steps" in result.output
    assert "held-out check" in result.output and "denoise:sigma=25" in result.output
    assert "fourier:pattern=lines,ratio=0.3" in result.output

    # the recipe: re-parses, equals the resolved config the loop wrote, maps the ranges
    recipe = PretrainConfig.from_toml(out / "recipe.toml")
    assert recipe == PretrainConfig.from_toml(out / "config.toml")
    assert recipe.tasks.denoise_sigma == (10.0, 40.0) and recipe.tasks.fourier_ratio == (0.2, 0.4)
    assert recipe.model.init_from is None and recipe.tasks.sizes == (16,)

    # the exported init + sidecar: train and held-out lists partition the folder
    sidecar = json.loads((out / "mine.json").read_text())
    assert (out / "mine.safetensors").is_file()
    train, held = sidecar["training"]["train_images"], sidecar["training"]["held_out_images"]
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert not set(train) & set(held) and sorted(train + held) == names and len(held) == 2
    assert held == list(recipe.data.held_out) and sidecar["training"]["image_source"] == str(folder.resolve())

    # reconstruct --init RUN_DIR/NAME.json works
    from metadip import api
    from metadip.operators import build_operator, simulate

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16, generator=gen)
    op = build_operator("denoise:sigma=20", (3, 16, 16), generator=gen)
    rec = api.reconstruct(simulate(x, op, gen), op, init=str(out / "mine.json"), iterations=2, stop="budget")
    assert rec.init == "mine" and rec.image.shape == (1, 3, 16, 16)

    # --config RUN_DIR/recipe.toml re-runs it: the same weights, bit for bit
    again = tmp_path / "again"
    rerun = invoke("--config", out / "recipe.toml", "--out", again, "--no-progress", "--device", "cpu")
    assert rerun.exit_code == 0, (rerun.output, rerun.exception)
    from safetensors.torch import load_file

    first, second = load_file(str(out / "mine.safetensors")), load_file(str(again / "mine.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_cli_images_resume_and_time_budget(tmp_path):
    folder = make_folder(tmp_path / "pics", count=6)
    out = tmp_path / "run"
    base = ["--images", folder, "--operator", "denoise", *TINY_RUN, "--no-table", "--out", out]
    assert invoke(*base, "--steps", "1").exit_code == 0
    again = invoke(*base, "--steps", "1")  # the same --out without --resume: refused, nothing overwritten
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = invoke(*base, "--steps", "2", "--resume")
    assert resumed.exit_code == 0 and "2 meta-steps" in resumed.output
    assert "time_budget" not in json.loads((out / "pics.json").read_text())["training"]

    # a budget that is spent at once: stops on time, exports, and says so in the sidecar
    timed = tmp_path / "timed"
    result = invoke(*base[:-1], timed, "--steps", "50", "--minutes", "0.00001")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "stopped on time" in result.output
    budget = json.loads((timed / "pics.json").read_text())["training"]["time_budget"]
    assert budget["stopped_on_time"] is True and budget["planned_steps"] == 50
    assert budget["stopped_at_step"] == json.loads((timed / "pics.json").read_text())["training"]["steps"] < 50
    assert PretrainConfig.from_toml(timed / "recipe.toml").max_minutes == 0.00001


# ------------------------------------------------------------------------------------------- bad folders


def _bad_folder(tmp_path: Path, case: str) -> tuple[Path, list[str]]:
    folder = tmp_path / case
    folder.mkdir()
    extra: list[str] = []
    if case == "empty":
        pass
    elif case == "no-images":
        (folder / "notes.txt").write_text("not a picture")
    elif case == "too-small":
        make_folder(folder, count=3, size=24)
        Image.fromarray(np.zeros((12, 40, 3), np.uint8)).save(folder / "small.png")
    elif case == "mixed":
        make_folder(folder, count=3)
        make_folder(folder / "grey", count=2, grey=True)
    elif case == "too-few":
        make_folder(folder, count=1)
    elif case == "too-few-held":
        make_folder(folder, count=3)
        extra = ["--held-out", "3"]
    elif case == "unknown-from":
        make_folder(folder, count=3)
        extra = ["--from", "no-such-init"]
    elif case == "missing":
        folder.rmdir()
    return folder, extra


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("empty", "is empty"),
        ("no-images", "no images"),
        ("too-small", "smaller than the 16 px"),
        ("mixed", "mixes grey"),
        ("too-few", "cannot be split"),
        ("too-few-held", "cannot be split"),
        ("unknown-from", "unknown checkpoint 'no-such-init'"),
        ("missing", "not found"),
    ],
)
def test_bad_folders_are_one_line_errors(tmp_path, case, match):
    folder, extra = _bad_folder(tmp_path, case)
    args = ["--images", folder, "--operator", "denoise", "--size", "16", "--out", tmp_path / "run", *extra]
    result = invoke(*args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], lines
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--operator", "denoise"], "either --config"),
        (["--images", "DIR"], "at least one --operator"),
        (["--config", "x.toml", "--operator", "denoise"], "--operator applies only with --images"),
        (["--images", "DIR", "--operator", "denoise:poisson=5"], "no range for 'poisson'"),
    ],
)
def test_flag_misuse_is_a_one_line_error(tmp_path, args, match):
    folder = make_folder(tmp_path / "pics", count=3)
    result = invoke(*[folder if a == "DIR" else a for a in args], "--out", tmp_path / "run")
    assert result.exit_code == 2 and match in result.stderr and len(result.stderr.strip().splitlines()) == 1
