"""Meta-training runs: config validation, determinism, resume == uninterrupted, 2 gloo processes == 1 process,
and the ``pretrain`` / ``checkpoints`` commands through click's CliRunner."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from metadip.checkpoint import default_checkpoint_dir, load_checkpoint
from metadip.errors import MetadipError
from metadip.pretrain import PretrainConfig, lr_scale, run_pretrain
from metadip.pretrain.config import validate_config

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "pretrain" / "experiments" / "tiny-test.toml"


def tiny_config(**changes) -> PretrainConfig:
    config = PretrainConfig.from_toml(TINY)
    return dataclasses.replace(config, **changes)


def quiet(config: PretrainConfig, **log) -> PretrainConfig:
    """No validation / logging overhead (the tests compare weights)."""
    return dataclasses.replace(config, log=dataclasses.replace(config.log, val_tasks=0, **log))


def weights(out: Path, name: str = "tiny-test") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / f"{name}.safetensors"))


def assert_same(a: dict, b: dict, exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- config
# config


RECIPES = sorted((ROOT / "pretrain").glob("*.toml")) + sorted((ROOT / "pretrain" / "experiments").glob("*.toml"))


def test_recipes_are_where_they_belong():
    """pretrain/ holds the recipe of each shipped init and nothing else; probes and the test recipe live in
    pretrain/experiments/."""
    shipped = {p.stem for p in default_checkpoint_dir().glob("*.json")}
    assert {p.stem for p in (ROOT / "pretrain").glob("*.toml")} == shipped
    experiments = {p.stem for p in (ROOT / "pretrain" / "experiments").glob("*.toml")}
    assert "tiny-test" in experiments and not experiments & shipped


@pytest.mark.parametrize("path", RECIPES, ids=[p.relative_to(ROOT / "pretrain").as_posix() for p in RECIPES])
def test_recipes_parse_and_round_trip(tmp_path, path):
    """Every recipe, shipped or probe, parses, is named after its file and survives a TOML round trip."""
    config = PretrainConfig.from_toml(path)
    assert config.name == path.stem
    copy = tmp_path / path.name
    copy.write_text(config.to_toml())
    assert PretrainConfig.from_toml(copy) == config


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('name = "x"\nbogus = 1\n', "bogus"),
        ('name = "x"\nsteps = "ten"\n', "steps"),
        ('name = "x"\n[inner]\nlr = "fast"\n', "inner.lr"),
        ('name = "x"\n[inner]\nwarp = 9\n', "warp"),
        ('name = "x"\nalgorithm = "sgd"\n', "algorithm"),
        ('name = "x"\n[maml]\nloss_steps = "some"\n', "loss_steps"),
        ('name = "x"\n[tasks]\nweights = { denoise = "1" }\n', "weights"),
        ('name = "x"\n[input]\nz_mode = "learned"\n', "z_mode"),
        ('name = "x"\n[input]\nestimate = "wiener"\n', "unknown input estimate"),
        ('name = "x"\n[input]\nestimate = "tikhonov"\nlowpass = 1.0\n', "lowpass = 0"),
        ('name = "x"\n[input]\nlowpass = -1.0\n', "lowpass"),
        ('name = "x"\nrecommended_for = ["blur"]\n', "unknown operator 'blur'"),
        ('name = "x"\nrecommended_for = ["fourier:ratio=0.3"]\n', "no weight in \\[tasks\\]"),
        ('name = "x"\navoid_for = "inpaint"\n', "avoid_for"),
        ('name = "x"\nalgorithm = "reptile"\n[reptile]\nz_lr = 0.01\n', "z_lr .*z_mode = 'fixed'"),
        ('name = "x"\nalgorithm = "maml"\n[input]\nz_mode = "fixed"\n[reptile]\nz_lr = 0.01\n', "z_lr"),
        ('name = "x"\n[reptile]\nz_lr = -1.0\n', "z_lr must be >= 0"),
        ('name = "x"\navoid_for = ["inpaint:holes=round"]\n', "avoid_for: .*holes"),
        ("steps = 3\n", "name"),
        ('name = "x"\nsteps = \n', "TOML"),
    ],
)
def test_bad_config_is_rejected(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(MetadipError, match=match):
        PretrainConfig.from_toml(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(MetadipError, match="not found"):
        PretrainConfig.from_toml(tmp_path / "nope.toml")


def test_lr_schedule():
    config = tiny_config().resolved()
    assert lr_scale(config.maml, 0) == pytest.approx(1.0)
    assert lr_scale(config.maml, config.steps) == pytest.approx(config.maml.min_lr_ratio)
    warm = dataclasses.replace(config.maml, warmup_steps=4, schedule="constant")
    assert [lr_scale(warm, s) for s in (0, 3, 10)] == [0.25, 1.0, 1.0]


# --------------------------------------------------------------------------------------------------- training
# training


def test_same_seed_gives_bitwise_same_theta0(tmp_path):
    config = quiet(tiny_config(steps=2))
    first = run_pretrain(config, tmp_path / "a", device="cpu", progress=False)
    run_pretrain(config, tmp_path / "b", device="cpu", progress=False)
    assert first.finished and first.checkpoint == tmp_path / "a" / "tiny-test.json"
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    other = run_pretrain(dataclasses.replace(config, seed=1), tmp_path / "c", device="cpu", progress=False)
    assert other.finished
    assert any(not torch.equal(weights(tmp_path / "a")[k], weights(tmp_path / "c")[k]) for k in weights(tmp_path / "a"))


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_resume_equals_uninterrupted(tmp_path, algorithm):
    config = quiet(tiny_config(steps=4, algorithm=algorithm), ckpt_every=1)
    if algorithm == "maml":
        config = dataclasses.replace(config, maml=dataclasses.replace(config.maml, learn_inner_lr=True))
    run_pretrain(config, tmp_path / "full", device="cpu", progress=False)
    partial = run_pretrain(config, tmp_path / "split", device="cpu", progress=False, stop_after=2)
    assert not partial.finished and partial.checkpoint is None and partial.step == 2
    resumed = run_pretrain(config, tmp_path / "split", device="cpu", progress=False, resume=True)
    assert resumed.finished and resumed.step == 4
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "split"))
    full = torch.load(tmp_path / "full" / "state.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "state.pt", weights_only=True)
    assert full["step"] == split["step"] == 4
    if algorithm == "maml":
        for key in full["learner"]["log_lr"]:
            assert torch.equal(full["learner"]["log_lr"][key], split["learner"]["log_lr"][key])
        exp_full = full["learner"]["optimizer"]["state"]
        exp_split = split["learner"]["optimizer"]["state"]
        for i in exp_full:
            assert torch.equal(exp_full[i]["exp_avg_sq"], exp_split[i]["exp_avg_sq"])
    lines = (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "full" / "log.jsonl").read_text().splitlines())


def test_resume_guards(tmp_path):
    config = quiet(tiny_config(steps=2))
    with pytest.raises(MetadipError, match="no training state"):
        run_pretrain(config, tmp_path / "r", device="cpu", progress=False, resume=True)
    run_pretrain(config, tmp_path / "r", device="cpu", progress=False, stop_after=1)
    with pytest.raises(MetadipError, match="already holds"):
        run_pretrain(config, tmp_path / "r", device="cpu", progress=False)
    with pytest.raises(MetadipError, match="differs"):
        run_pretrain(dataclasses.replace(config, seed=3), tmp_path / "r", device="cpu", progress=False, resume=True)
    # a longer run may continue a finished one
    longer = run_pretrain(
        dataclasses.replace(config, steps=3), tmp_path / "r", device="cpu", progress=False, resume=True
    )
    assert longer.step == 3 and longer.finished
    # the --init auto hints may change on resume (they change nothing in training) and reach the sidecar
    hinted = run_pretrain(
        dataclasses.replace(config, steps=3, avoid_for=("fourier",)), tmp_path / "r", device="cpu", progress=False,
        resume=True,
    )
    assert load_checkpoint(hinted.checkpoint).avoid_for == ("fourier",)


def test_fixed_z_is_stored_in_the_checkpoint(tmp_path):
    config = quiet(tiny_config(steps=1))
    config = dataclasses.replace(config, input=dataclasses.replace(config.input, z_mode="fixed"))
    result = run_pretrain(config, tmp_path / "f", device="cpu", progress=False)
    init = load_checkpoint(result.checkpoint)
    assert init.z_mode == "fixed" and init.z is not None and tuple(init.z.shape) == (1, 4, 16, 16)


def test_learned_fixed_z_is_exported_and_resumes_bitwise(tmp_path):
    config = quiet(tiny_config(steps=3, algorithm="reptile"), ckpt_every=1)
    config = dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, z_mode="fixed"),
        reptile=dataclasses.replace(config.reptile, z_lr=0.01),
    )
    still = dataclasses.replace(config, reptile=dataclasses.replace(config.reptile, z_lr=0.0))
    learned = load_checkpoint(run_pretrain(config, tmp_path / "full", device="cpu", progress=False).checkpoint)
    frozen = load_checkpoint(run_pretrain(still, tmp_path / "frozen", device="cpu", progress=False).checkpoint)
    assert learned.z is not None and frozen.z is not None
    moved = float((learned.z - frozen.z).pow(2).mean().sqrt())
    assert 0 < moved <= 3 * 0.01 + 1e-6  # three steps of at most z_lr (unit-RMS direction, ε/ε_start ≤ 1)
    run_pretrain(config, tmp_path / "split", device="cpu", progress=False, stop_after=1)
    resumed = run_pretrain(config, tmp_path / "split", device="cpu", progress=False, resume=True)
    resumed = load_checkpoint(resumed.checkpoint)
    assert torch.equal(resumed.z, learned.z)
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "split"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, config: PretrainConfig, out: str) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
        }
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from metadip import distributed
    from metadip.generators import InputRecipe, build_generator
    from metadip.images import load_images
    from metadip.meta import MAML, InputPolicy
    from metadip.tasks import TaskSampler

    try:
        # 1) the all-reduced MAML meta-gradient (second order, Meta-SGD) of a sharded batch equals this
        #    process's own full-batch meta-gradient
        info = distributed.init_distributed(torch.device("cpu"))
        assert info.world_size == world and info.rank == rank
        torch.manual_seed(0)
        net = build_generator(
            {
                "kind": "skip",
                "in_channels": 4,
                "channels_down": [4, 4],
                "channels_up": [4, 4],
                "channels_skip": [2, 2],
            },
            out_channels=3,
        )
        learner = MAML(net, config.inner, InputPolicy(InputRecipe(channels=4), "resample"), learn_inner_lr=True)
        sampler = TaskSampler(config.tasks, load_images("samples", ["coins", "brick"], 3, 128), seed=0)
        indices = list(range(3))
        full, full_metrics = learner.meta_gradient([sampler(k) for k in indices])
        mine, metrics = learner.meta_gradient([sampler(k) for k in distributed.shard(indices, info)], normalize=3)
        distributed.all_reduce_sum_(mine, info)
        metrics = distributed.all_reduce_metrics(metrics, torch.device("cpu"), info)
        for a, b in zip(full, mine, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
        assert metrics["outer_loss"] == pytest.approx(full_metrics["outer_loss"], rel=1e-6)
        # 2) a whole Reptile run (plain interpolation, no adaptive optimiser to amplify float noise)
        run_pretrain(config, out, device="cpu", progress=False)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path):
    """2 CPU processes over gloo: the same meta-gradient as 1 process, and the same θ0 (float tolerance) after
    a Reptile run with an odd global meta-batch (ranks get 2 and 1 tasks)."""
    import torch.multiprocessing as mp

    config = quiet(tiny_config(steps=2, meta_batch=3, algorithm="reptile"))
    single = run_pretrain(config, tmp_path / "one", device="cpu", progress=False)
    mp.spawn(_worker, args=(2, _free_port(), config, str(tmp_path / "two")), nprocs=2, join=True)
    assert single.finished
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    nets = [load_checkpoint(tmp_path / d / "tiny-test").build() for d in ("one", "two")]
    z = torch.rand(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    outputs = [net(z) for net in nets]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    # Parameters the output does not depend on (conv biases in front of a BatchNorm, BN shifts in front of a
    # conv + BN) get only float noise as gradient, which the inner Adam rescales to O(lr) steps, so they
    # differ with the summation order. Compare every other parameter.
    (outputs[0] * torch.randn(outputs[0].shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    size = {n: float(p.grad.abs().max()) for n, p in nets[0].named_parameters()}
    live = {n for n in size if size[n] > 1e-5 * max(size.values())}
    assert len(live) > len(one) // 2
    assert_same({k: one[k] for k in live}, {k: two[k] for k in live}, exact=False)
    assert load_checkpoint(tmp_path / "two" / "tiny-test").training["world_size"] == 2


# -------------------------------------------------------------------------------------------------------- CLI
# CLI


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_pretrain_yields_a_loadable_checkpoint(tmp_path, monkeypatch):
    from metadip.cli_pretrain import checkpoints, pretrain

    monkeypatch.setenv("METADIP_CHECKPOINTS", str(tmp_path / "shipped"))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        pretrain,
        [
            "--config",
            str(TINY),
            "--out",
            str(out),
            "--steps",
            "2",
            "--no-progress",
            "--export",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "trained tiny-test: 2 meta-steps" in result.output
    assert (out / "config.toml").is_file() and (out / "log.jsonl").is_file()
    init = load_checkpoint("tiny-test")  # found by name in $METADIP_CHECKPOINTS
    assert init.training["steps"] == 2 and init.training["held_out_images"] == [
        "astronaut",
        "camera",
        "coffee",
        "chelsea",
    ]
    assert "astronaut" not in init.training["train_images"]
    assert init.inner["iterations"] == 200 and init.inner["optimizer"] == "adam"
    assert init.recommended_for == ("deblur",)  # from the recipe's recommended_for, via the sidecar
    assert PretrainConfig.from_toml(out / "config.toml").steps == 2

    listing = CliRunner().invoke(checkpoints, [])
    assert listing.exit_code == 0 and "tiny-test" in listing.output
    assert "--init auto (RGB, default parameters): denoise:sigma=25 → tiny-test" in listing.output
    assert "deblur:kernel=gauss,width=2,sigma=0 → tiny-test" in listing.output

    # the Python API reconstructs from it by path
    from metadip import api
    from metadip.operators import build_operator, simulate

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16, generator=gen)
    op = build_operator("denoise:sigma=10", (3, 16, 16), generator=gen)
    rec = api.reconstruct(
        simulate(x, op, gen), op, init=str(out / "tiny-test"), iterations=2, stop="budget", device="cpu"
    )
    assert rec.image.shape == (1, 3, 16, 16) and rec.init == "tiny-test"


def test_cli_pretrain_bad_config_is_a_metadip_error(tmp_path):
    from metadip.cli_pretrain import pretrain

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nmeta_batch = 0\n')
    result = CliRunner().invoke(pretrain, ["--config", str(bad), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, MetadipError) and "meta_batch" in str(result.exception)


def conditioned_tiny_config() -> PretrainConfig:
    """The tiny recipe, one step, with a measurement-conditioned z (low-passed estimate, 3 noise channels) and the
    residual skip net that reads it."""
    from metadip.conditioning import conditioned_channels

    config = quiet(tiny_config(steps=1))
    options = {**config.model.options, "in_channels": conditioned_channels(3, 3), "residual": True}
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, options=options),
        input=dataclasses.replace(config.input, z_mode="conditioned", noise_channels=3, lowpass=1.0),
    )


def test_conditioned_init_trains_exports_its_online_recipe_and_reconstructs(tmp_path):
    """The conditioned recipe end to end: a 1-step run writes a checkpoint whose input recipe rebuilds the same
    input channels online and whose online recipe (``inner``) has the keys sidecars have always held, in their
    order; ``reconstruct`` runs from it; a network of the wrong input width is refused."""
    from metadip import api, operators
    from metadip.conditioning import conditioned_channels
    from metadip.online import DipRecipe

    config = conditioned_tiny_config()
    result = run_pretrain(config, tmp_path / "c", device="cpu", progress=False)
    init = load_checkpoint(result.checkpoint)
    assert init.z_mode == "conditioned" and init.input_recipe.lowpass == 1.0
    inner = json.loads(result.checkpoint.read_text())["inner"]
    assert list(inner) == [
        "optimizer", "lr", "reg_noise_std", "ema", "iterations", "stop", "stop_options", "meta_inner_steps", "adapt",
        "loss", "betas", "eps",
    ]
    assert isinstance(init.recipe, DipRecipe) and init.recipe.to_dict() == inner == init.inner
    assert init.recipe.betas == (config.inner.beta1, config.inner.beta2) and init.recipe.eps == config.inner.eps
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    op = operators.build_operator("denoise:sigma=25", x.shape[1:])
    y = operators.simulate(x, op, torch.Generator().manual_seed(1))
    out = api.reconstruct(y, op, init=result.checkpoint, iterations=3, stop="holdout", device="cpu")
    assert out.image.shape == (1, 3, 16, 16) and torch.isfinite(out.image).all()
    wide = {**config.model.options, "in_channels": conditioned_channels(3, 3) + 5}
    wrong = dataclasses.replace(config, model=dataclasses.replace(config.model, options=wide))
    with pytest.raises(MetadipError, match="input channels"):
        run_pretrain(wrong, tmp_path / "w", device="cpu", progress=False)


def test_an_offset_recipe_trains_with_reptile_and_an_untrained_one_lists_no_pictures(tmp_path):
    """``model.options.offset``: Reptile trains it (the network's input is the noise channels only) and its
    checkpoint reconstructs; a 0-step run exports PyTorch's init, which starts at z's estimate and saw no picture."""
    from metadip import api, operators
    from metadip.conditioning import conditioned_channels

    config = conditioned_tiny_config()
    options = {**config.model.options, "residual": False, "offset": True}
    config = dataclasses.replace(
        config, algorithm="reptile", model=dataclasses.replace(config.model, options=options)
    )
    trained = load_checkpoint(run_pretrain(config, tmp_path / "one", device="cpu", progress=False).checkpoint)
    assert trained.arch_config["offset"] is True and trained.arch_config["in_channels"] == conditioned_channels(3, 3)
    assert trained.training["steps"] == 1 and trained.training["train_images"]
    untrained = run_pretrain(dataclasses.replace(config, steps=0), tmp_path / "zero", device="cpu", progress=False)
    init = load_checkpoint(untrained.checkpoint)
    assert init.training["steps"] == 0 and init.training["train_images"] == []
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    op = operators.build_operator("inpaint:ratio=0.5", x.shape[1:], generator=torch.Generator().manual_seed(1))
    y = operators.simulate(x, op, torch.Generator().manual_seed(1))
    for checkpoint_path in (untrained.checkpoint, tmp_path / "one" / f"{config.name}.json"):
        out = api.reconstruct(y, op, init=checkpoint_path, iterations=3, stop="budget", device="cpu")
        assert out.image.shape == x.shape and torch.isfinite(out.image).all()


def test_a_conditioned_init_starts_a_recipe_with_another_estimate_and_bm3d_runs_online(tmp_path):
    """``model.init_from`` may change only the image estimate of a conditioned z (same layout); the sidecar names
    the source's estimate. With ``estimate = "bm3d"`` (denoising tasks) the init trains and reconstructs; SURE
    with it is refused (it would rerun BM3D at every iteration), and so is an estimate change plus another
    recipe change."""
    pytest.importorskip("bm3d")
    from metadip import api, operators

    config = conditioned_tiny_config()
    config = dataclasses.replace(
        config, tasks=dataclasses.replace(config.tasks, weights={"denoise": 1.0}), recommended_for=("denoise",)
    )
    source = run_pretrain(config, tmp_path / "source", device="cpu", progress=False).checkpoint
    bm3d = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, init_from=str(source)),
        input=dataclasses.replace(config.input, estimate="bm3d", lowpass=0.0),
    )
    init = load_checkpoint(run_pretrain(bm3d, tmp_path / "bm3d", device="cpu", progress=False).checkpoint)
    assert init.input_recipe.estimate == "bm3d"
    assert init.training["init_from"]["estimate_from"] == {
        "estimate": "backprojection", "lowpass": 1.0, "tikhonov_noise": 50.0, "tikhonov_floor": 0.003,
    }
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    op = operators.build_operator("denoise:sigma=25", x.shape[1:])
    y = operators.simulate(x, op, torch.Generator().manual_seed(1))
    out = api.reconstruct(y, op, init=tmp_path / "bm3d" / "tiny-test.json", iterations=3, stop="holdout")
    assert out.image.shape == (1, 3, 16, 16) and torch.isfinite(out.image).all()
    with pytest.raises(MetadipError, match="rerun BM3D"):
        validate_config(dataclasses.replace(bm3d, inner=dataclasses.replace(bm3d.inner, loss="sure")))
    with pytest.raises(MetadipError, match="input recipe"):
        other = dataclasses.replace(bm3d, input=dataclasses.replace(bm3d.input, scale=0.2))
        run_pretrain(other, tmp_path / "other", device="cpu", progress=False)


def test_configs_recorded_before_operator_maps_were_retired_still_parse():
    """A recorded config (state.pt, a sidecar's ``training.config``) with ``operator_maps = false`` parses to the
    same config; one with maps on is refused with why."""
    recorded = tiny_config().to_dict()
    assert PretrainConfig.from_dict({**recorded, "input": {**recorded["input"], "operator_maps": False}}) == (
        PretrainConfig.from_dict(recorded)
    )
    with pytest.raises(MetadipError, match="operator maps in z were retired"):
        PretrainConfig.from_dict({**recorded, "input": {**recorded["input"], "operator_maps": True}})


def test_tikhonov_conditioned_init_from_toml_carries_its_estimate_online(tmp_path):
    """``input.estimate = "tikhonov"`` from a TOML recipe: the exported checkpoint records the estimate and its
    λ rule, and ``reconstruct`` rebuilds exactly the z the recipe describes."""
    from metadip import api, operators
    from metadip.conditioning import conditioned_channels, make_conditioned_input

    text = TINY.read_text()
    assert 'z_mode = "resample"' in text
    text = text.replace(
        'z_mode = "resample"',
        'z_mode = "conditioned"\nnoise_channels = 3\nestimate = "tikhonov"\ntikhonov_noise = 40.0',
        1,
    )
    recipe_file = tmp_path / "tik.toml"
    recipe_file.write_text(text)
    config = dataclasses.replace(quiet(PretrainConfig.from_toml(recipe_file)), steps=1)
    assert config.input.estimate == "tikhonov" and config.input.tikhonov_noise == 40.0
    channels = conditioned_channels(3, 3)
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model, options={**config.model.options, "in_channels": channels, "residual": True}
        ),
    )
    result = run_pretrain(config, tmp_path / "t", device="cpu", progress=False)
    init = load_checkpoint(result.checkpoint)
    assert init.input_recipe.estimate == "tikhonov" and init.input_recipe.tikhonov_noise == 40.0
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    op = operators.build_operator("deblur:kernel=gauss,width=1", x.shape[1:])
    y = operators.simulate(x, op, torch.Generator().manual_seed(1))
    z = make_conditioned_input(init.input_recipe, op, y, noise_channels=3)
    assert not torch.equal(z[:, :3], y)  # the estimate is the deconvolution, not y
    out = api.reconstruct(y, op, init=result.checkpoint, iterations=2, stop="budget", device="cpu")
    assert out.image.shape == (1, 3, 16, 16) and torch.isfinite(out.image).all()


def test_supervised_warm_start_regresses_theta0_and_then_meta_learns(tmp_path):
    """maml.supervised_steps: the first steps are plain regression of f_θ0(z) (K = 0: the gradient is the
    gradient of the clean loss at θ0), then MAML proper; the log-lrs only move in the MAML phase; resume works
    across the phase boundary."""
    from metadip.meta.maml import MAML, outer_loss_value

    config = quiet(tiny_config(steps=3))
    maml = dataclasses.replace(config.maml, supervised_steps=2, learn_inner_lr=True, schedule_steps=3)
    config = dataclasses.replace(config, maml=maml)
    with pytest.raises(MetadipError, match="supervised_steps"):
        dataclasses.replace(config, maml=dataclasses.replace(config.maml, supervised_steps=-1))
    # the supervised gradient is the plain gradient of the outer loss at θ0
    from metadip.generators import InputRecipe, build_generator
    from metadip.meta.inner import InnerConfig, InputPolicy
    from metadip.tasks import TaskDistribution

    net = build_generator("skip", out_channels=3, **config.model.options)
    learner = MAML(net, InnerConfig(steps=2), InputPolicy(InputRecipe(channels=4)), learn_inner_lr=True)
    images = {"noise": torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    task = TaskDistribution(sizes=(16,)).task(images, 0, 0)
    grads, record = learner.task_gradient(task, supervised=True)
    assert record["k"] == 0.0
    z = learner.inputs.z_for(task, net)
    expected = torch.autograd.grad(outer_loss_value("clean", net(z, size=task.size), task), list(net.parameters()))
    for got, want in zip(grads, expected, strict=False):
        torch.testing.assert_close(got, want)
    assert all(float(g.abs().sum()) == 0 for g in grads[len(expected) :])  # no lr gradient

    full = run_pretrain(config, tmp_path / "full", device="cpu", progress=False)
    lrs = load_checkpoint(full.checkpoint).inner["lr_per_tensor"]
    assert any(v != pytest.approx(config.inner.lr) for v in lrs.values())  # the MAML step moved them
    first = run_pretrain(dataclasses.replace(config, steps=2), tmp_path / "part", device="cpu", progress=False)
    warm = load_checkpoint(first.checkpoint).inner["lr_per_tensor"]
    assert all(v == pytest.approx(config.inner.lr) for v in warm.values())
    resumed = run_pretrain(config, tmp_path / "part", device="cpu", progress=False, resume=True)
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "part"))
    assert resumed.step == 3 and lrs == load_checkpoint(resumed.checkpoint).inner["lr_per_tensor"]


def test_init_from_starts_theta0_and_inner_lrs_from_a_checkpoint(tmp_path):
    """model.init_from: θ0 (and Meta-SGD's inner lrs) start from the checkpoint; a checkpoint of another
    architecture or z recipe is refused with a clear error."""
    config = quiet(tiny_config(steps=2))
    config = dataclasses.replace(config, maml=dataclasses.replace(config.maml, learn_inner_lr=True))
    source = run_pretrain(config, tmp_path / "source", device="cpu", progress=False).checkpoint
    source_init = load_checkpoint(source)

    def from_source(**changes):
        model = dataclasses.replace(config.model, init_from=str(source))
        return dataclasses.replace(config, model=model, **changes)

    copied = run_pretrain(from_source(steps=0), tmp_path / "copy", device="cpu", progress=False)
    assert_same(weights(tmp_path / "source"), weights(tmp_path / "copy"))
    copy_init = load_checkpoint(copied.checkpoint)
    assert copy_init.inner["lr_per_tensor"] == pytest.approx(source_init.inner["lr_per_tensor"])
    assert copy_init.training["init_from"] == {"name": "tiny-test", "sha256": source_init.sidecar["sha256"]}
    assert "0 meta-steps from tiny-test" in copy_init.card
    # fine-tuning moves away from the source, and differently from a run that starts from random weights
    tuned = run_pretrain(from_source(steps=1), tmp_path / "tuned", device="cpu", progress=False)
    fresh = run_pretrain(dataclasses.replace(config, steps=1), tmp_path / "fresh", device="cpu", progress=False)
    tuned_w, fresh_w, source_w = (weights(p.out_dir) for p in (tuned, fresh, copied))
    assert any(not torch.equal(tuned_w[k], source_w[k]) for k in tuned_w)
    assert any(not torch.equal(tuned_w[k], fresh_w[k]) for k in tuned_w)

    wider = dict(config.model.options, channels_down=[6, 4])
    with pytest.raises(MetadipError, match="architecture differs .*channels_down"):
        model = dataclasses.replace(config.model, options=wider, init_from=str(source))
        run_pretrain(dataclasses.replace(config, model=model), tmp_path / "x", device="cpu", progress=False)
    with pytest.raises(MetadipError, match="z_mode"):
        inputs = dataclasses.replace(config.input, z_mode="fixed")
        run_pretrain(from_source(input=inputs), tmp_path / "y", device="cpu", progress=False)
    with pytest.raises(MetadipError, match="no-such-init"):
        model = dataclasses.replace(config.model, init_from="no-such-init")
        run_pretrain(dataclasses.replace(config, model=model), tmp_path / "z", device="cpu", progress=False)
