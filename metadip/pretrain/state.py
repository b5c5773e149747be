"""The training state and where a run starts from: ``state.pt`` (:func:`_save_state` / :func:`_load_state`, read
with ``weights_only=True``), its contents (:func:`training_state`, :func:`restore_state`) and a checkpoint's θ0
as the starting point (``model.init_from``: :func:`_load_init_from`, converting channels through
:mod:`metadip.meta.grey` where :func:`_channel_change` says so)."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import torch
from torch import nn

from metadip import checkpoint as ckpt
from metadip.errors import MetadipError
from metadip.fileio import atomic_write_bytes
from metadip.meta.grey import change_channels_state
from metadip.meta.inner import InputPolicy
from metadip.pretrain.config import PretrainConfig

STATE_VERSION = 1


def training_state(step: int, net: nn.Module, learner, inputs: InputPolicy, wall_seconds: float, config) -> dict:
    """What ``state.pt`` holds after ``step`` meta-steps: θ0, the meta-learner (outer optimiser, learned inner
    lrs), the fixed z, the wall time so far, the resolved config and the torch RNG state."""
    return {
        "version": STATE_VERSION,
        "step": step,
        "params": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "learner": learner.state_dict(),
        "fixed_z": inputs.fixed_z.detach().cpu() if inputs.fixed_z is not None else None,
        "wall_seconds": wall_seconds,
        "config": config.to_dict(),
        "rng": {"torch": torch.get_rng_state()},
    }


def restore_state(state: dict | None, net: nn.Module, learner, inputs: InputPolicy, device) -> tuple[int, float]:
    """Load a resumed run's ``state`` into ``net`` / ``learner`` / ``inputs``; returns (start step, wall seconds
    already spent) — (0, 0.0) for a fresh run (``state`` None)."""
    if state is None:
        return 0, 0.0
    net.load_state_dict(state["params"], strict=True)
    learner.load_state_dict(state["learner"])
    if state.get("fixed_z") is not None:
        inputs.fixed_z = state["fixed_z"].to(device)
    return int(state["step"]), float(state["wall_seconds"])


def _save_state(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable/unsafe file becomes one user-facing error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MetadipError(f"cannot resume from {path}: {first}") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise MetadipError(f"cannot resume from {path}: not a metadip training state (version {STATE_VERSION})")
    return state


def _load_init_from(config: PretrainConfig, net, recipe, learner) -> dict:
    """Copy a checkpoint's θ0 (and learned inner lrs, for Meta-SGD) into the freshly built ``net``/``learner``.

    Refuses a checkpoint whose architecture, z mode or input recipe differ from what ``config`` builds: its
    weights would mean something else. One exception: a measurement-conditioned init may start a recipe whose
    image estimate differs (``estimate``, ``lowpass``, the Tikhonov weights) — z has the same layout, the
    estimate channel just holds another picture of the same scene; the record then names the source's estimate.
    Returns what the exported checkpoint records about the starting point.
    """
    source = ckpt.load_checkpoint(config.model.init_from)
    where = f"model.init_from {config.model.init_from!r}"
    z_mode, noise = config.input.z_mode, config.input.noise_channels if config.input.z_mode == "conditioned" else 0
    change = _channel_change(source, net, z_mode)
    source_arch, source_recipe = source.arch_config, source.input_recipe
    if change:  # compare everything but the picture channels
        source_arch = {**source_arch, "in_channels": net.config.get("in_channels"), "out_channels": change[1]}
        source_recipe = dataclasses.replace(source_recipe, channels=recipe.channels)
    if source_arch != net.config:
        differ = sorted(k for k in set(source_arch) | set(net.config) if source_arch.get(k) != net.config.get(k))
        raise MetadipError(f"{where}: its architecture differs from this config's in {', '.join(differ)}")
    if source.z_mode != z_mode or source.noise_channels != noise:
        raise MetadipError(
            f"{where}: it was trained with z_mode {source.z_mode!r} ({source.noise_channels} noise channels), "
            f"this config uses {z_mode!r} ({noise})"
        )
    estimate_change = None
    if z_mode == "conditioned" and source_recipe != recipe:
        same_layout = dataclasses.replace(source_recipe, **{k: getattr(recipe, k) for k in _ESTIMATE_FIELDS})
        if same_layout == recipe:
            estimate_change = {k: getattr(source_recipe, k) for k in _ESTIMATE_FIELDS}
            source_recipe = same_layout
    if source_recipe != recipe:
        raise MetadipError(f"{where}: its input recipe {source.input_recipe} differs from this config's {recipe}")
    state = source.state_dict
    if change:
        source_channels, target_channels = change
        colour_blocks = 2  # the image estimate and the normaliser: one channel per colour each
        shared = recipe.channels - colour_blocks * target_channels
        shapes = {k: v.shape for k, v in net.state_dict().items()}
        state = change_channels_state(state, shapes, colour_blocks, shared, source_channels, target_channels)
    device = next(net.parameters()).device
    with torch.no_grad():
        net.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
        lrs = source.recipe.lr_per_tensor or {}
        for name, value in (getattr(learner, "log_lr", None) or {}).items():
            if name in lrs and lrs[name] > 0:
                value.fill_(math.log(float(lrs[name]) / learner.inner.lr))
    found = {"name": source.name, "sha256": str(source.sidecar.get("sha256", ""))}
    if estimate_change:
        found["estimate_from"] = estimate_change
    return {**found, "converted": _CONVERSIONS[change]} if change else found


#: The input-recipe fields that only choose the image estimate in a conditioned z (``model.init_from`` may change
#: them).
_ESTIMATE_FIELDS = ("estimate", "lowpass", "tikhonov_noise", "tikhonov_floor")


#: The channel conversions ``model.init_from`` applies (:mod:`metadip.meta.grey`), by (source, target) channels.
_CONVERSIONS = {(3, 1): "rgb-to-grey", (1, 2): "grey-to-complex", (3, 2): "rgb-to-complex"}


def _channel_change(source, net, z_mode: str) -> tuple[int, int] | None:
    """(source, target) channels when ``model.init_from`` is a measurement-conditioned init that
    :mod:`metadip.meta.grey` converts to ``net``'s channel count (RGB → grey exactly for grey pictures; grey or
    RGB → complex, two channels, exactly for pictures with equal parts); None when no conversion applies."""
    if z_mode != "conditioned" or source.z_mode != "conditioned":
        return None
    change = (int(source.arch_config.get("out_channels", 3)), int(net.config.get("out_channels", 3)))
    return change if change in _CONVERSIONS else None
