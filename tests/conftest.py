"""Shared fixtures: CPU device, a seeded torch.Generator, and tiny images from scikit-image's bundled samples.

Images are float32 1×C×H×W tensors in [0, 1] (the package convention). The fixtures return fresh copies, so a
test may modify what it gets.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch

TINY = 32  # default side of the tiny test images (px)

# Tiny tensors run fastest on one intra-op thread, and several threads on shared/busy cores oversubscribe
# badly (10x slower seen on 2 shared cores). metadip.runtime.configure_threads respects OMP_NUM_THREADS, and
# subprocesses started by tests inherit it. Override by exporting OMP_NUM_THREADS before running pytest.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@functools.lru_cache(maxsize=16)
def _sample(name: str, size: int) -> torch.Tensor:
    import skimage.data
    from skimage.transform import resize

    array = getattr(skimage.data, name)()
    array = array.astype(np.float64) / 255.0 if array.dtype == np.uint8 else array.astype(np.float64)
    if array.ndim == 2:
        array = array[..., None]
    height, width = array.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    array = array[top : top + side, left : left + side, :3]
    array = resize(array, (size, size), order=3, anti_aliasing=True, mode="reflect")
    array = np.clip(array, 0.0, 1.0).astype(np.float32).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(0)


def sample_image(name: str = "astronaut", size: int = TINY) -> torch.Tensor:
    """Centred square crop of a scikit-image sample resized to size²: 1×C×size×size float32 in [0, 1]."""
    return _sample(name, size).clone()


@pytest.fixture
def device() -> torch.device:
    """Tests run on the CPU."""
    return torch.device("cpu")


@pytest.fixture
def generator() -> torch.Generator:
    """A fresh CPU generator seeded with 0 (one per test, passed explicitly)."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def tiny_rgb() -> torch.Tensor:
    """astronaut, 1×3×32×32."""
    return sample_image("astronaut", TINY)


@pytest.fixture
def tiny_grey() -> torch.Tensor:
    """camera, 1×1×32×32."""
    return sample_image("camera", TINY)


@pytest.fixture
def tiny_rgb_png(tmp_path, tiny_rgb):
    """Path of tiny_rgb saved as an 8-bit PNG in the test's temporary directory."""
    from PIL import Image

    path = tmp_path / "clean.png"
    array = (tiny_rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)
    return path
