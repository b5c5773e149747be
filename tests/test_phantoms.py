"""The procedural MRI-like phantom source: deterministic per generator, shapes and value ranges, a complex variant
with a smooth non-trivial phase, fast enough to draw per task, and wired into the image sources, the task
sampler and meta-training (``data.source = "phantoms"`` / ``"phantoms-complex"``)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import pytest
import torch

from metadip.errors import MetadipError
from metadip.images import list_images, load_images
from metadip.phantoms import PHANTOMS, PHANTOMS_COMPLEX, Phantoms, phantom
from metadip.tasks import TaskDistribution, TaskSampler

ROOT = Path(__file__).resolve().parent.parent


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("size", [16, 33, 64])
def test_real_phantom_shape_range_and_structure(size):
    image = phantom(size, _gen(0))
    assert image.shape == (1, 1, size, size) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.std()) > 0.05  # a picture, not a flat field
    corners = image[..., [0, 0, -1, -1], [0, -1, 0, -1]]
    assert float(corners.abs().max()) < 1e-3  # black background outside the head
    assert float(image[..., size // 2, size // 2]) > 0.0  # inside the head


def test_deterministic_per_seed_and_different_across_seeds():
    one = phantom(48, _gen(3))
    assert torch.equal(one, phantom(48, _gen(3)))
    assert not torch.equal(one, phantom(48, _gen(4)))
    both = phantom(48, _gen(3), complex_valued=True)
    assert torch.equal(both, phantom(48, _gen(3), complex_valued=True))


def test_complex_phantom_channels_phase_and_magnitude():
    size = 64
    parts = phantom(size, _gen(5), complex_valued=True)
    assert parts.shape == (1, 2, size, size) and parts.dtype == torch.float32
    assert float(parts.min()) >= 0.0 and float(parts.max()) <= 1.0  # both channels in [0, 1] (phase in [0, π/2])
    real, imag = parts[0, 0], parts[0, 1]
    magnitude = torch.sqrt(real**2 + imag**2)
    # the magnitude is the real phantom drawn from the same generator state
    torch.testing.assert_close(magnitude, phantom(size, _gen(5))[0, 0], atol=1e-5, rtol=0)
    inside = magnitude > 0.1
    phase = torch.atan2(imag, real)[inside]
    assert float(phase.min()) >= 0.0 and float(phase.max()) <= math.pi / 2 + 1e-6
    assert float(phase.std()) > 0.05  # non-trivial phase ...
    # ... that varies smoothly: neighbouring pixels inside the head differ far less than the phase's spread
    full = torch.atan2(imag, real)
    pair = inside[:, 1:] & inside[:, :-1]
    step = (full[:, 1:] - full[:, :-1]).abs()[pair]
    assert float(step.median()) < 0.2 * float(phase.std())


def test_bad_size_is_refused():
    for bad in (4, 0, 16.5, True):
        with pytest.raises(MetadipError, match="phantom size"):
            phantom(bad, _gen(0))


def test_fast_enough_to_draw_per_task():
    generator = _gen(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        phantom(64, generator)  # warm-up
        times = []
        for _ in range(7):
            start = time.perf_counter()
            phantom(64, generator)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert sorted(times)[len(times) // 2] < 0.02


def test_phantoms_never_come_from_scikit_image():
    """The training source must not be Shepp–Logan (scikit-image's phantom is a test picture)."""
    source = (ROOT / "metadip" / "phantoms.py").read_text(encoding="utf-8")
    assert "skimage" not in source and "shepp_logan" not in source.lower()


# ------------------------------------------------------------------------------------------------- the source


def test_source_names_and_loading():
    assert list_images(PHANTOMS) == [PHANTOMS]
    assert list_images(PHANTOMS_COMPLEX) == [PHANTOMS_COMPLEX]
    assert load_images(PHANTOMS, [PHANTOMS]) == {PHANTOMS: Phantoms()}
    assert load_images(PHANTOMS_COMPLEX, [PHANTOMS_COMPLEX]) == {PHANTOMS_COMPLEX: Phantoms(complex_valued=True)}
    with pytest.raises(MetadipError, match="one image"):
        load_images(PHANTOMS, ["astronaut"])


@pytest.mark.parametrize("channels", [1, 3])
def test_task_sampler_draws_real_phantoms(channels):
    dist = TaskDistribution(weights={"fourier": 1.0, "denoise": 1.0}, sizes=(16, 24), channels=channels)
    sampler = TaskSampler(dist, load_images(PHANTOMS, [PHANTOMS]), seed=1)
    tasks = [sampler(k) for k in range(6)]
    for task in tasks:
        assert task.image == PHANTOMS and task.x.shape[:2] == (1, channels)
        assert float(task.x.min()) >= 0.0 and float(task.x.max()) <= 1.0
        if channels == 3:  # a grey phantom in an RGB task
            assert torch.equal(task.x[:, 0], task.x[:, 1]) and torch.equal(task.x[:, 0], task.x[:, 2])
    assert torch.equal(sampler(2).x, tasks[2].x) and torch.equal(sampler(2).y, tasks[2].y)  # (seed, k) → task
    assert len({t.family for t in tasks}) == 2


def test_task_sampler_draws_complex_phantoms_for_fourier():
    dist = TaskDistribution(weights={"fourier": 1.0}, sizes=(16,), channels=2)
    sampler = TaskSampler(dist, load_images(PHANTOMS_COMPLEX, [PHANTOMS_COMPLEX]), seed=0)
    task = sampler(0)
    assert task.x.shape == (1, 2, 16, 16) and task.family == "fourier"
    assert task.y.is_complex() and task.y.shape == (1, 2, 16, 16)
    # the physical single-coil measurement mask·FFT(re + i·im) is y_re + i·y_im (noise aside)
    clean = task.op.A(task.x)
    single = torch.fft.fft2(torch.complex(task.x[:, 0], task.x[:, 1]), norm="ortho") * task.op.mask[:, 0]
    torch.testing.assert_close(clean[:, 0] + 1j * clean[:, 1], single, atol=1e-5, rtol=1e-5)


def test_channel_mismatches_are_refused():
    with pytest.raises(MetadipError, match="tasks.channels\\s*= 2"):
        Phantoms(complex_valued=True).draw(16, 1, _gen(0))
    with pytest.raises(MetadipError, match="1 or 3"):
        Phantoms().draw(16, 2, _gen(0))
    with pytest.raises(MetadipError, match="dead leaves"):
        TaskDistribution(channels=2, dead_leaves=0.5)


def _tiny(**changes):
    from metadip.pretrain import PretrainConfig

    config = PretrainConfig.from_toml(ROOT / "pretrain" / "experiments" / "tiny-test.toml")
    log = dataclasses.replace(config.log, val_tasks=0)
    return dataclasses.replace(config, recommended_for=(), log=log, **changes)


def test_pretrain_config_pairs_complex_source_with_two_channels():
    from metadip.pretrain import DataConfig

    base = _tiny()
    with pytest.raises(MetadipError, match="phantoms-complex"):
        dataclasses.replace(base, tasks=dataclasses.replace(base.tasks, channels=2))
    with pytest.raises(MetadipError, match="phantoms-complex"):
        dataclasses.replace(base, data=DataConfig(source=PHANTOMS_COMPLEX))


def test_meta_training_runs_on_complex_phantoms(tmp_path):
    """One meta-step on complex phantoms gives a 2-channel (linear-head) init recording its source."""
    from metadip.checkpoint import load_checkpoint
    from metadip.pretrain import DataConfig, run_pretrain

    base = _tiny(steps=1)
    config = dataclasses.replace(
        base,
        data=DataConfig(source=PHANTOMS_COMPLEX),
        tasks=dataclasses.replace(base.tasks, channels=2, weights={"fourier": 1.0}),
    )
    result = run_pretrain(config, tmp_path / "run", device="cpu", progress=False)
    assert result.finished and math.isfinite(result.metrics["outer_loss"])
    init = load_checkpoint(tmp_path / "run" / "tiny-test")
    assert init.arch_config["out_channels"] == 2
    assert init.training["image_source"] == PHANTOMS_COMPLEX and init.training["held_out_images"] == []


# ----------------------------------------------------------------------------------------- evaluation pictures


def test_held_out_phantoms_are_deterministic_and_never_a_training_task():
    from metadip.phantoms import held_out_index, held_out_phantom

    assert [held_out_index(n) for n in ("phantom-1", "Phantom-12", "phantom-0", "phantom-x", "phantoms")] == [
        1, 12, None, None, None
    ]
    first = held_out_phantom(1, 32)
    assert torch.equal(first, held_out_phantom(1, 32)) and not torch.equal(first, held_out_phantom(2, 32))
    both = held_out_phantom(1, 32, complex_valued=True)
    torch.testing.assert_close(both.square().sum(1, keepdim=True).sqrt(), first, atol=1e-5, rtol=0)
    # the training stream of the shipped phantom recipes (seed 0, 64 px) never renders a held-out picture
    dist = TaskDistribution(weights={"fourier": 1.0}, sizes=(32,), channels=1, fourier_pattern="lines|points")
    sampler = TaskSampler(dist, load_images(PHANTOMS, [PHANTOMS]), seed=0)
    held = [held_out_phantom(k, 32) for k in range(1, 9)]
    for k in range(40):
        x = sampler(k).x
        assert all(not torch.allclose(x, h, atol=1e-3) for h in held)
    with pytest.raises(MetadipError, match="index"):
        held_out_phantom(0, 32)


def test_fourier_tasks_draw_lines_or_points():
    both = TaskDistribution(weights={"fourier": 1.0}, sizes=(16,), channels=1, fourier_pattern="lines|points")
    sampler = TaskSampler(both, load_images(PHANTOMS, [PHANTOMS]), seed=3)
    patterns = {sampler(k).op.params()["pattern"] for k in range(12)}
    assert patterns == {"lines", "points"}
    # one pattern draws nothing extra: the task stream of older recipes is unchanged
    one = dataclasses.replace(both, fourier_pattern="lines")
    ops = [TaskSampler(one, load_images(PHANTOMS, [PHANTOMS]), seed=3)(k).op for k in range(4)]
    assert all(op.params()["pattern"] == "lines" for op in ops)
    with pytest.raises(MetadipError, match="fourier_pattern"):
        TaskDistribution(fourier_pattern="lines|stars")


def test_evaluation_renders_held_out_phantoms_and_a_complex_shepp_logan():
    from metadip.evaluation import load_clean, resolve_images
    from metadip.phantoms import held_out_phantom

    items = resolve_images("phantom-2,shepp_logan_phantom")
    assert [(i.name, i.kind) for i in items] == [("phantom-2", "phantom"), ("shepp_logan_phantom", "sample")]
    assert torch.equal(load_clean(items[0], 24, 1), held_out_phantom(2, 24))
    assert torch.equal(load_clean(items[0], 24, 2), held_out_phantom(2, 24, complex_valued=True))
    grey = load_clean(items[1], 24, 1)
    parts = load_clean(items[1], 24, 2)
    assert parts.shape == (1, 2, 24, 24) and torch.equal(parts, load_clean(items[1], 24, 2))
    torch.testing.assert_close(parts.square().sum(1, keepdim=True).sqrt(), grey, atol=1e-5, rtol=0)
    assert float((parts[:, 0] - parts[:, 1]).abs().max()) > 0.01  # a phase, not equal parts
    with pytest.raises(MetadipError, match="held-out phantom"):
        resolve_images("phantom-0")
