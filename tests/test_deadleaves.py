"""The procedural dead-leaves source: deterministic per generator, valid images, power-law radii, and wired into
the image-source functions and the task sampler."""

from __future__ import annotations

import math

import pytest
import torch

from metadip.errors import MetadipError
from metadip.images import (
    DEAD_LEAVES,
    DeadLeaves,
    dead_leaves,
    list_images,
    load_images,
    power_law_radii,
    random_patch,
    split_images,
)
from metadip.tasks import TaskDistribution, TaskSampler, derive_seed


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("size", "channels"), [(64, 3), (48, 1), (17, 3)])
def test_shape_range_dtype(size, channels):
    image = dead_leaves(size, channels, _gen(0))
    assert image.shape == (1, channels, size, size) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert torch.isfinite(image).all() and float(image.std()) > 0.05  # a picture, not a flat field


def test_deterministic_per_seed():
    one = dead_leaves(64, 3, _gen(7))
    assert torch.equal(one, dead_leaves(64, 3, _gen(7)))
    assert not torch.equal(one, dead_leaves(64, 3, _gen(8)))


def test_grey_has_one_channel_and_colour_has_colour():
    grey = dead_leaves(32, 1, _gen(1))
    assert grey.shape[1] == 1
    colour = dead_leaves(32, 3, _gen(1))
    assert float((colour[:, 0] - colour[:, 1]).abs().mean()) > 0.05  # not grey repeated three times


def test_untextured_leaves_are_flat_and_cover_the_image():
    image = dead_leaves(64, 3, _gen(2), textured=False)
    flat = image.reshape(3, -1).T
    # every pixel takes one leaf's colour, so there are far fewer distinct colours than pixels
    assert torch.unique(flat, dim=0).shape[0] < 0.5 * flat.shape[0]
    textured = dead_leaves(64, 3, _gen(2))
    assert torch.unique(textured.reshape(3, -1).T, dim=0).shape[0] > flat.shape[0] * 0.9


def test_rectangles_and_options_are_deterministic():
    a = dead_leaves(40, 3, _gen(3), rectangles=0.5, sigma_power=2.5, r_min=1.5, r_max=20.0)
    b = dead_leaves(40, 3, _gen(3), rectangles=0.5, sigma_power=2.5, r_min=1.5, r_max=20.0)
    assert torch.equal(a, b)
    assert not torch.equal(a, dead_leaves(40, 3, _gen(3), rectangles=0.0, sigma_power=2.5, r_min=1.5, r_max=20.0))


def test_radii_follow_the_power_law():
    alpha, r_min, r_max = 3.0, 2.0, 64.0
    radii = power_law_radii(200_000, _gen(0), alpha, r_min, r_max)
    assert float(radii.min()) >= r_min and float(radii.max()) <= r_max
    # p(r) ∝ r^-3: each octave [r, 2r) holds 4× the shapes of the next one
    octaves = [int(((radii >= r_min * 2**i) & (radii < r_min * 2 ** (i + 1))).sum()) for i in range(4)]
    assert all(a > b for a, b in zip(octaves, octaves[1:], strict=False))
    for a, b in zip(octaves[:3], octaves[1:4], strict=False):
        assert a / b == pytest.approx(4.0, rel=0.1)
    # maximum-likelihood exponent of a truncated power law is close to alpha (r_max ≫ r_min: Hill estimator)
    hill = 1 + radii.numel() / float(torch.log(radii / r_min).sum())
    assert hill == pytest.approx(alpha, rel=0.02)
    uniform_log = power_law_radii(50_000, _gen(1), 1.0, 1.0, 100.0)  # alpha = 1: log-uniform
    assert float(torch.log(uniform_log).mean()) == pytest.approx(math.log(100) / 2, rel=0.02)


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(MetadipError, match="channels"):
        dead_leaves(32, 2, _gen(0))
    with pytest.raises(MetadipError, match="r_min"):
        dead_leaves(32, 3, _gen(0), r_min=10.0, r_max=5.0)
    with pytest.raises(MetadipError, match="r_min"):
        dead_leaves(32, 3, _gen(0), r_min=0.0)
    with pytest.raises(MetadipError, match="rectangles"):
        dead_leaves(32, 3, _gen(0), rectangles=2.0)


def test_fast_enough_on_one_thread():
    import time

    dead_leaves(64, 3, _gen(0))  # warm-up
    start = time.perf_counter()
    for seed in range(5):
        dead_leaves(64, 3, _gen(seed))
    assert (time.perf_counter() - start) / 5 < 0.25  # 5x the 50 ms target: headroom for busy CI machines


def test_dead_leaves_source_lists_and_loads():
    assert list_images(DEAD_LEAVES) == [DEAD_LEAVES]
    train, held = split_images(list_images(DEAD_LEAVES), ())
    assert train == [DEAD_LEAVES] and held == []
    images = load_images(DEAD_LEAVES, train, channels=3, max_side=512)
    assert isinstance(images[DEAD_LEAVES], DeadLeaves)
    with pytest.raises(MetadipError, match="dead-leaves"):
        load_images(DEAD_LEAVES, ["astronaut"])


@pytest.mark.parametrize("channels", [1, 3])
def test_task_sampler_draws_from_the_dead_leaves_source(channels):
    dist = TaskDistribution(weights={"denoise": 1.0, "inpaint": 1.0}, sizes=(32,), channels=channels)
    images = load_images(DEAD_LEAVES, [DEAD_LEAVES], channels=channels)
    sampler = TaskSampler(dist, images, seed=3)
    tasks = sampler.batch(range(4))
    for task in tasks:
        assert task.image == DEAD_LEAVES and task.x.shape == (1, channels, 32, 32)
        assert 0 <= float(task.x.min()) and float(task.x.max()) <= 1
    assert not torch.equal(tasks[0].x, tasks[1].x)  # a fresh picture per task
    again = TaskSampler(dist, images, seed=3)(2)
    assert torch.equal(again.x, tasks[2].x) and torch.equal(again.y, tasks[2].y)


def test_mix_of_photographs_and_dead_leaves():
    gen = _gen(0)
    photos = {"a": torch.rand(1, 3, 40, 50, generator=gen), "b": torch.rand(1, 3, 30, 30, generator=gen)}
    plain = TaskDistribution(weights={"denoise": 1.0}, sizes=(16,), min_std=0.0)
    mixed = TaskDistribution(weights={"denoise": 1.0}, sizes=(16,), min_std=0.0, dead_leaves=0.5)
    drawn = [mixed.task(photos, 1, k).image for k in range(60)]
    share = drawn.count(DEAD_LEAVES) / len(drawn)
    assert 0.3 < share < 0.7 and set(drawn) <= {"a", "b", DEAD_LEAVES}
    # validation tasks never draw dead leaves
    assert all(mixed.task(photos, 1, k, stream="val").image != DEAD_LEAVES for k in range(20))
    # fraction 0 (the default) draws no extra number: the stream is image, size, crop as it always was
    assert plain.dead_leaves == 0.0
    task = plain.task(photos, 1, 5)
    replay = torch.Generator().manual_seed(derive_seed(1, "task", 5))
    name = ["a", "b"][int(torch.randint(2, (), generator=replay))]
    assert int(torch.randint(1, (), generator=replay)) == 0
    assert torch.equal(task.x, random_patch(photos[name], 16, replay, scale=plain.crop_scale, min_std=0.0))
    everything = TaskDistribution(weights={"denoise": 1.0}, sizes=(16,), dead_leaves=1.0)
    assert everything.task({}, 0, 0).image == DEAD_LEAVES  # works without any photographs


def test_mix_round_trips_and_is_validated():
    dist = TaskDistribution(dead_leaves=0.25)
    assert TaskDistribution.from_toml(dist.to_toml()) == dist
    assert "dead_leaves = 0.25" in dist.to_toml()
    with pytest.raises(MetadipError, match="dead_leaves"):
        TaskDistribution(dead_leaves=1.5)
    assert TaskDistribution.from_dict({}).dead_leaves == 0.0  # old recipes parse unchanged


def test_pretrain_from_the_dead_leaves_source_records_it(tmp_path):
    import dataclasses
    from pathlib import Path

    from metadip.checkpoint import load_checkpoint
    from metadip.pretrain import PretrainConfig, run_pretrain

    tiny = Path(__file__).resolve().parent.parent / "pretrain" / "experiments" / "tiny-test.toml"
    config = PretrainConfig.from_toml(tiny)
    config = dataclasses.replace(
        config,
        steps=1,
        data=dataclasses.replace(config.data, source=DEAD_LEAVES, train=None),
        tasks=dataclasses.replace(config.tasks, dead_leaves=0.5),
        log=dataclasses.replace(config.log, val_tasks=0),
    )
    result = run_pretrain(config, tmp_path / "dl", device="cpu", progress=False)
    training = load_checkpoint(result.checkpoint).sidecar["training"]
    assert training["image_source"] == DEAD_LEAVES and training["train_images"] == [DEAD_LEAVES]
    assert training["tasks"]["dead_leaves"] == 0.5
    assert training["config"]["data"]["source"] == DEAD_LEAVES
