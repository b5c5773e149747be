"""The typed meta-training recipe: frozen dataclasses (``pretrain/NAME.toml`` ⇄ :class:`PretrainConfig`), the
config validator (:func:`validate_config`, run on construction) and which keys a resumed run may change
(:func:`resume_config`)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metadip.checkpoint import check_recommendations
from metadip.errors import MetadipError
from metadip.generators.inputs import InputRecipe, drop_retired
from metadip.meta.inner import Z_MODES, InnerConfig
from metadip.online import PAPER
from metadip.phantoms import PHANTOMS_COMPLEX
from metadip.tasks import TaskDistribution, config_from_dict, config_to_dict, read_toml, to_toml_text

ALGORITHMS = ("maml", "reptile")


@dataclass(frozen=True)
class ModelConfig:
    """``arch``: a generator preset (``skip``, ``skip-slim``, ``deep-decoder``); ``options``: overrides of its
    config (e.g. ``{channels_down = [16, 16, 16]}``). Output channels come from ``tasks.channels``.
    ``init_from``: start θ0 from a checkpoint (shipped name or path) instead of random weights — fine-tuning a
    shipped init on another operator distribution or objective. Its architecture and z recipe must be the ones
    this config builds, except that an RGB measurement-conditioned init may seed a grey recipe
    (``tasks.channels = 1``): :mod:`metadip.meta.grey` converts it. Its learned per-tensor inner lrs seed
    Meta-SGD's."""

    arch: str = "skip-slim"
    options: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None


@dataclass(frozen=True)
class InputConfig:
    """The z recipe and how it is used. ``z_mode``: ``resample`` (fresh z per task: θ0 works for any draw and
    size; default), ``fixed`` (one z, stored in the checkpoint; single crop size), ``conditioned`` (z from the
    measurement + ``noise_channels`` noise channels). ``channels`` defaults to the network's input
    channels. ``lowpass``: conditioned z only — Gaussian σ (pixels) of the normalised convolution that smooths
    the image estimate in z (0 = raw estimate; see :mod:`metadip.conditioning`). ``estimate``: conditioned z
    only — ``backprojection`` (default), ``tikhonov`` (regularised least squares, λ = ``tikhonov_floor`` +
    ``tikhonov_noise``·σ̂², replaces the estimate) or ``bm3d`` (denoising only: BM3D of y at σ̂; needs the
    ``bm3d`` package); see :class:`metadip.generators.inputs.InputRecipe`. An
    ``operator_maps = false`` (written by older versions) is accepted and dropped."""

    kind: str = "uniform"
    channels: int | None = None
    scale: float = 0.1
    seed: int = 0
    z_mode: str = "resample"
    noise_channels: int = 0
    lowpass: float = 0.0
    estimate: str = "backprojection"
    tikhonov_noise: float = 50.0
    tikhonov_floor: float = 0.003

    def recipe(self, network_channels: int) -> InputRecipe:
        """The :class:`InputRecipe` this table describes (``channels`` defaulting to the network's inputs)."""
        return InputRecipe(
            kind=self.kind,
            channels=self.channels or network_channels,
            scale=self.scale,
            seed=self.seed,
            lowpass=self.lowpass,
            estimate=self.estimate,
            tikhonov_noise=self.tikhonov_noise,
            tikhonov_floor=self.tikhonov_floor,
        )


@dataclass(frozen=True)
class DataConfig:
    """``source``: ``samples`` (scikit-image's bundled photographs), a folder, or a procedural source —
    ``dead-leaves``, ``phantoms`` (MRI-like head phantoms, grey) or ``phantoms-complex`` (their complex version
    as 2 channels, real and imaginary: needs ``tasks.channels = 2``; see :mod:`metadip.phantoms`).
    ``held_out``: never trained on, used for validation (default for samples: astronaut, camera, coffee,
    chelsea; for a folder: none; ``metadip pretrain --images`` writes a seeded random subset here). ``train``:
    restrict training to these names (default: every image not held out). ``max_side``: downscale larger images
    once at load time."""

    source: str = "samples"
    held_out: tuple[str, ...] | None = None
    train: tuple[str, ...] | None = None
    max_side: int | None = 512


@dataclass(frozen=True)
class MAMLSettings:
    """Outer loop of MAML. ``first_order``: FO-MAML. ``outer_loss``: clean | measurement | both.
    ``loss_steps``: ``last``, ``all`` or a list of inner steps. ``learn_inner_lr``: Meta-SGD (per tensor).
    ``schedule``: ``constant`` or ``cosine`` (to ``min_lr_ratio``·lr over ``schedule_steps``, default: steps)
    after ``warmup_steps`` of linear warm-up. ``supervised_steps``: the first N meta-steps are a warm start that
    regresses θ0's own output f_{θ0}(z) on the outer loss (K = 0, no inner loop, much cheaper per step); the
    remaining ``steps − N`` are MAML proper. Counted in ``steps`` and in the schedule."""

    first_order: bool = False
    outer_loss: str = "clean"
    loss_steps: str | tuple[int, ...] = "last"
    learn_inner_lr: bool = False
    outer_lr: float = 1e-4
    lr_lr: float | None = None
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    schedule_steps: int | None = None
    supervised_steps: int = 0


@dataclass(frozen=True)
class ReptileSettings:
    """ε anneals linearly from ``epsilon_start`` to ``epsilon_end`` over ``anneal_steps`` (default: steps).
    ``z_lr`` > 0 (needs ``input.z_mode = "fixed"``) learns the stored z together with θ0: each meta-step moves z
    against the mean gradient of the clean loss at θ_K, normalised to unit RMS, by ``z_lr · ε/epsilon_start``
    (stateless, so resume stays bit-identical); online, z stays fixed as in DIP."""

    epsilon_start: float = 0.2
    epsilon_end: float = 0.02
    anneal_steps: int | None = None
    z_lr: float = 0.0


@dataclass(frozen=True)
class OnlineSettings:
    """The online recipe exported with the init (what ``reconstruct`` uses). ``lr`` / ``reg_noise_std`` / ``loss``
    default to the inner loop's; learned per-tensor lrs are exported too (``inner.lr_per_tensor``). ``loss``
    (``mse`` | ``sure``) may differ from ``inner.loss``: an init meta-trained with the data fit can be run
    online with SURE (what adapts, ``inner.adapt``, may not differ)."""

    optimizer: str = PAPER.optimizer
    lr: float | None = None
    reg_noise_std: float | None = None
    ema: float = PAPER.ema
    iterations: int = PAPER.iterations
    stop: str = PAPER.stop
    stop_patience: int | None = None
    loss: str | None = None


@dataclass(frozen=True)
class LogSettings:
    """``every``: scalar logging period; ``val_every`` / ``ckpt_every``: validation / state-checkpoint periods
    (0 = only at the end); ``val_tasks``: size of the fixed validation set (held-out images; 0 = none);
    ``val_size``: its crop size (default: the largest training size); ``val_factor``: also report after
    ``val_factor``·K steps; ``val_random``: also run random init (DIP recipe) on it; ``image_grids``: how many
    validation tasks to show in TensorBoard."""

    every: int = 10
    val_every: int = 200
    ckpt_every: int = 100
    val_tasks: int = 8
    val_size: int | None = None
    val_factor: int = 4
    val_random: bool = True
    image_grids: int = 4
    tensorboard: bool = True


@dataclass(frozen=True)
class PretrainConfig:
    """A meta-training recipe (``pretrain/NAME.toml``). Top-level keys: ``name``, ``description``,
    ``algorithm`` (maml | reptile), ``seed``, ``steps`` (meta-steps), ``meta_batch`` (tasks per meta-step),
    ``export`` (also write ``checkpoints/NAME.*``), ``threads`` (CPU threads; default all cores / ranks),
    ``max_minutes`` (wall-clock budget: the run ends after this many minutes of training — resumed parts
    included — and exports like a finished run; the sidecar records ``time_budget``), ``recommended_for``
    (operator specs — ``deblur``, ``superres:factor=4`` — for which ``--init auto`` should
    prefer this init over the default; each family must be trained on), ``avoid_for`` (specs for which
    ``--init auto`` must never pick it); both are recorded in the sidecar and change nothing in training.
    Tables: ``[model]``, ``[input]``, ``[data]``, ``[tasks]``, ``[inner]``, ``[maml]``, ``[reptile]``,
    ``[online]``, ``[log]``."""

    name: str
    description: str = ""
    algorithm: str = "reptile"
    seed: int = 0
    steps: int = 1000
    meta_batch: int = 4
    export: bool = False
    threads: int | None = None
    max_minutes: float | None = None
    recommended_for: tuple[str, ...] = ()
    avoid_for: tuple[str, ...] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: TaskDistribution = field(default_factory=TaskDistribution)
    inner: InnerConfig = field(default_factory=InnerConfig)
    maml: MAMLSettings = field(default_factory=MAMLSettings)
    reptile: ReptileSettings = field(default_factory=ReptileSettings)
    online: OnlineSettings = field(default_factory=OnlineSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        validate_config(self)

    # -- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PretrainConfig:
        if "name" not in data:
            raise MetadipError("config needs a top-level 'name'")
        if isinstance(data.get("input"), Mapping):  # configs recorded by older versions (state.pt, sidecars)
            data = {**data, "input": drop_retired(dict(data["input"]), "input")}
        return config_from_dict(cls, data)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> PretrainConfig:
        data = read_toml(path)
        try:
            return cls.from_dict(data)
        except MetadipError as exc:
            raise MetadipError(f"{path}: {exc}") from None

    def to_toml(self) -> str:
        return to_toml_text(self.to_dict(), header=f"metadip pretrain recipe {self.name!r} (resolved)")

    def resolved(self) -> PretrainConfig:
        """Fill in the defaults that depend on other keys (schedule horizons), so a resumed run with a changed
        ``steps`` keeps the schedule of the original run."""
        maml, reptile = self.maml, self.reptile
        if maml.schedule_steps is None:
            maml = dataclasses.replace(maml, schedule_steps=max(1, self.steps))
        if reptile.anneal_steps is None:
            reptile = dataclasses.replace(reptile, anneal_steps=max(1, self.steps))
        return dataclasses.replace(self, maml=maml, reptile=reptile)


def validate_config(config: PretrainConfig) -> None:
    """Refuse a recipe that cannot train (one-line :class:`MetadipError` naming the key), before a run folder
    is written. Checks each key and the combinations of keys the dataclasses cannot express."""
    name = config.name.strip()
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise MetadipError(f"name {config.name!r} must be a plain file name (no slashes or colons)")
    if config.algorithm not in ALGORITHMS:
        raise MetadipError(f"algorithm {config.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    if config.steps < 0 or config.meta_batch < 1:
        raise MetadipError("steps must be >= 0 and meta_batch >= 1")
    if config.threads is not None and config.threads < 1:
        raise MetadipError("threads must be >= 1")
    if config.max_minutes is not None and not (math.isfinite(config.max_minutes) and config.max_minutes > 0):
        raise MetadipError(f"max_minutes must be a finite number > 0, got {config.max_minutes}")
    if (config.data.source == PHANTOMS_COMPLEX) != (config.tasks.channels == 2):
        raise MetadipError(
            f"tasks.channels = 2 (complex: real and imaginary) goes with data.source = '{PHANTOMS_COMPLEX}' "
            f"and only with it (got channels {config.tasks.channels}, source {config.data.source!r})"
        )
    for entry in check_recommendations(config.recommended_for, "recommended_for"):
        if entry.split(":", 1)[0].strip().lower() not in config.tasks.families:
            raise MetadipError(
                f"recommended_for: {entry!r} is a family with no weight in [tasks]; an init is only "
                "recommended for a family it was trained on"
            )
    check_recommendations(config.avoid_for, "avoid_for")
    if config.input.z_mode not in Z_MODES:
        raise MetadipError(f"input.z_mode {config.input.z_mode!r} is not one of {', '.join(Z_MODES)}")
    try:
        config.input.recipe(1)  # refuse a bad [input] table before a run folder is written
    except MetadipError as exc:
        raise MetadipError(f"[input]: {exc}") from None
    if config.input.estimate == "bm3d" and "sure" in (config.inner.loss, config.online.loss):
        raise MetadipError(
            "input.estimate = 'bm3d' with the SURE loss would rerun BM3D at every iteration (SURE perturbs y "
            "through z); use loss = 'mse'"
        )
    if config.maml.outer_loss not in ("clean", "measurement", "both"):
        raise MetadipError(f"maml.outer_loss {config.maml.outer_loss!r} is not one of clean, measurement, both")
    if isinstance(config.maml.loss_steps, str) and config.maml.loss_steps not in ("last", "all"):
        raise MetadipError(f"maml.loss_steps {config.maml.loss_steps!r} must be 'last', 'all' or a list")
    if config.maml.schedule not in ("constant", "cosine"):
        raise MetadipError(f"maml.schedule {config.maml.schedule!r} is not one of constant, cosine")
    if config.maml.supervised_steps < 0:
        raise MetadipError("maml.supervised_steps must be >= 0")
    if config.algorithm == "reptile" and config.maml.supervised_steps:
        raise MetadipError("maml.supervised_steps needs algorithm = 'maml'")
    if config.reptile.z_lr < 0:
        raise MetadipError(f"reptile.z_lr must be >= 0, got {config.reptile.z_lr}")
    if config.reptile.z_lr > 0 and (config.algorithm != "reptile" or config.input.z_mode != "fixed"):
        raise MetadipError(
            "reptile.z_lr learns the stored z: it needs algorithm = 'reptile' and input.z_mode = 'fixed'"
        )
    if config.algorithm == "reptile" and config.maml.learn_inner_lr:
        raise MetadipError("maml.learn_inner_lr needs algorithm = 'maml' (Reptile gives no lr gradient)")
    if config.online.optimizer not in ("adam", "sgd"):
        raise MetadipError(f"online.optimizer {config.online.optimizer!r} is not one of adam, sgd")
    if config.online.loss not in (None, "mse", "sure"):
        raise MetadipError(f"online.loss {config.online.loss!r} is not one of mse, sure")
    if (
        min(config.log.every, config.log.val_factor) < 1
        or min(config.log.val_every, config.log.ckpt_every, config.log.val_tasks, config.log.image_grids) < 0
    ):
        raise MetadipError("log: every and val_factor must be >= 1, the other periods and counts >= 0")


# keys that may differ between the run that wrote state.pt and the run that resumes it
_RESUME_FREE = ("steps", "export", "log", "threads", "description", "recommended_for", "avoid_for", "max_minutes")


def _comparable(config: PretrainConfig, saved: PretrainConfig) -> dict:
    data = config.to_dict()
    ref = saved.to_dict()
    for key in _RESUME_FREE:
        data.pop(key, None)
        ref.pop(key, None)
    if config.maml.schedule_steps is None:
        data["maml"]["schedule_steps"] = ref["maml"]["schedule_steps"]
    if config.reptile.anneal_steps is None:
        data["reptile"]["anneal_steps"] = ref["reptile"]["anneal_steps"]
    return {"given": data, "saved": ref}


def resume_config(config: PretrainConfig, saved: PretrainConfig, state_path: Path) -> PretrainConfig:
    """The config a resumed run trains: ``saved`` (the one ``state_path`` was trained with) with the keys a
    resumed run may change (steps, max_minutes, export, threads, description, log, and the ``--init auto`` hints
    recommended_for / avoid_for, which change nothing in training) taken from ``config``;
    any other difference is refused."""
    cmp = _comparable(config, saved)
    if cmp["given"] != cmp["saved"]:
        diff = sorted(k for k in cmp["given"] if cmp["given"].get(k) != cmp["saved"].get(k))
        raise MetadipError(
            f"--resume: the config differs from the one {state_path} was trained with "
            f"(in: {', '.join(diff)}); only steps, max_minutes, export, threads and log may change"
        )
    return dataclasses.replace(
        saved,
        steps=config.steps,
        export=config.export,
        log=config.log,
        threads=config.threads,
        description=config.description,
        max_minutes=config.max_minutes,
        recommended_for=config.recommended_for,
        avoid_for=config.avoid_for,
    )
