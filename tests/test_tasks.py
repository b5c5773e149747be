"""Image sources, the train/held-out split, crops, and the task distribution (reproducible from (seed, k))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metadip.errors import MetadipError
from metadip.images import (
    DEFAULT_HELD_OUT,
    DEFAULT_TRAIN,
    NATURAL_SAMPLES,
    augment,
    list_images,
    load_image,
    load_images,
    random_crop,
    split_images,
)
from metadip.tasks import FAMILIES, TaskDistribution, TaskSampler, derive_seed


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return {"a": torch.rand(1, 3, 40, 50, generator=gen), "b": torch.rand(1, 3, 30, 30, generator=gen)}


def test_default_split_holds_out_the_benchmark_pictures():
    train, held = split_images(list_images())
    assert held == list(DEFAULT_HELD_OUT) and "astronaut" in held
    assert train == list(DEFAULT_TRAIN)
    assert not set(train) & set(held)
    assert "cat" not in NATURAL_SAMPLES  # the same file as chelsea: would leak a held-out picture


def test_split_rejects_unknown_held_out_name():
    with pytest.raises(MetadipError, match="astronot"):
        split_images(["astronaut", "camera"], held_out=["astronot"])


def test_sample_images_load_grey_as_rgb():
    camera = load_image("samples", "camera", channels=3)
    assert camera.shape == (1, 3, 512, 512) and camera.dtype == torch.float32
    assert torch.equal(camera[:, 0], camera[:, 1])
    grey = load_image("samples", "coffee", channels=1)
    assert grey.shape[1] == 1 and 0 <= float(grey.min()) and float(grey.max()) <= 1


def test_folder_source_is_recursive_and_split_by_stem(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "one.png")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / "sub" / "two.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    names = list_images(tmp_path)
    assert names == ["one.png", "sub/two.jpg"]
    train, held = split_images(names, held_out=["two"])
    assert (train, held) == (["one.png"], ["sub/two.jpg"])
    loaded = load_images(tmp_path, names, channels=3, max_side=16)
    assert loaded["sub/two.jpg"].shape == (1, 3, 16, 16)
    assert max(loaded["one.png"].shape[-2:]) == 16


def test_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(MetadipError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(MetadipError, match="not found"):
        list_images(tmp_path / "missing")


def test_crops_and_augmentations_are_deterministic(images):
    crop = random_crop(images["a"], 16, torch.Generator().manual_seed(3), scale=(1.0, 2.0))
    again = random_crop(images["a"], 16, torch.Generator().manual_seed(3), scale=(1.0, 2.0))
    assert crop.shape == (1, 3, 16, 16) and torch.equal(crop, again)
    assert 0 <= float(crop.min()) and float(crop.max()) <= 1
    small = random_crop(torch.rand(1, 3, 10, 12), 16, torch.Generator().manual_seed(0))
    assert small.shape == (1, 3, 16, 16)
    flipped = {
        tuple(augment(crop, torch.Generator().manual_seed(s)).flatten()[:4].tolist()) for s in range(12)
    }
    assert len(flipped) > 1
    plain = augment(crop, torch.Generator().manual_seed(5), flips=False, rotations=False)
    assert torch.equal(plain, crop)


def test_task_k_is_a_pure_function_of_seed_and_k(images):
    dist = TaskDistribution(
        weights={f: 1.0 for f in FAMILIES},
        sizes=(16, 24),
        inpaint_holes=("pixels", "blocks"),
        deblur_kernels=("gauss", "motion"),
    )
    sampler = TaskSampler(dist, images, seed=7)
    first = sampler(5)
    _ = [sampler(k) for k in range(5)]  # other draws in between change nothing
    again = TaskSampler(dist, images, seed=7)(5)
    assert first.spec == again.spec and first.seed == again.seed
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    other = TaskSampler(dist, images, seed=8)(5)
    assert other.seed != first.seed
    assert first.seed == derive_seed(7, "task", 5)
    families = {sampler(k).family for k in range(40)}
    assert families == set(FAMILIES)


def test_task_parameters_stay_in_their_ranges(images):
    dist = TaskDistribution(
        weights={"denoise": 1.0, "inpaint": 1.0, "superres": 1.0},
        denoise_sigma=(10.0, 20.0),
        noise_sigma=(0.0, 3.0),
        inpaint_ratio=(0.4, 0.6),
        superres_factors=(2,),
        sizes=(16,),
    )
    for k in range(30):
        task = TaskSampler(dist, images, seed=1)(k)
        params = task.op.params()
        if task.family == "denoise":
            assert 10 <= task.sigma <= 20
        else:
            assert 0 <= task.sigma <= 3
        if task.family == "inpaint":
            assert 0.4 <= params["ratio"] <= 0.6
        if task.family == "superres":
            assert task.y.shape[-2:] == (8, 8)
        assert task.x.shape == (1, 3, 16, 16)


def test_task_distribution_round_trips_dict_and_toml():
    dist = TaskDistribution(
        weights={"denoise": 2.0, "fourier": 0.5},
        sizes=(32, 64),
        superres_factors=(2, 3, 4),
        deblur_kernels=("motion",),
        min_std=0.0,
    )
    assert TaskDistribution.from_dict(dist.to_dict()) == dist
    assert TaskDistribution.from_toml(dist.to_toml()) == dist


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"weights": {"denoise": 1.0}, "bogus": 1}, "bogus"),
        ({"denoise_sigma": "25"}, "denoise_sigma"),
        ({"denoise_sigma": [1.0]}, "denoise_sigma"),
        ({"weights": {"telepathy": 1.0}}, "telepathy"),
        ({"sizes": [4]}, "sizes"),
        ({"inpaint_ratio": [0.2, 1.5]}, "inpaint_ratio"),
        ({"flips": 1}, "flips"),
    ],
)
def test_task_distribution_rejects_bad_config(data, match):
    with pytest.raises(MetadipError, match=match):
        TaskDistribution.from_dict(data)
