"""Meta-training of DIP initialisations: the config (frozen dataclasses ⇄ TOML) and one flat training loop.

``run_pretrain(config, out_dir)`` reads top to bottom like nanoGPT's ``train.py``: build the images, the task
sampler, the network and the meta-learner; then per meta-step draw the global task indices, take this rank's
share, compute the meta-gradient (MAML) or the Reptile delta, all-reduce, update, log, validate, checkpoint;
finally export a ``safetensors`` + JSON checkpoint.

Everything random derives from ``(seed, purpose, index)`` (:func:`metadip.tasks.derive_seed`): θ0's initial
weights, task k, each task's inner-loop jitter and z draw, the validation tasks. Nothing draws from a global
stream, so a run resumed from ``state.pt`` reproduces an uninterrupted run bit for bit, and 2 processes
reproduce 1 (up to float summation order).

Output folder: ``config.toml`` (resolved config), ``state.pt`` (training state: weights, outer-optimiser
state, learned inner lrs, fixed z, step, wall time, resolved config, RNG state; loaded with
``weights_only=True``), ``log.jsonl``, ``tb/`` (TensorBoard), ``NAME.safetensors`` + ``NAME.json`` (the
exported init)."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metadip.errors import MetadipError
from metadip.fileio import atomic_write_bytes, atomic_write_text
from metadip.generators.inputs import InputRecipe
from metadip.meta.inner import Z_MODES, InnerConfig, InputPolicy, inner_loop, parameter_dict
from metadip.tasks import (
    TaskDistribution,
    TaskSampler,
    config_from_dict,
    config_to_dict,
    derive_seed,
    make_generator,
    read_toml,
    to_toml_text,
)

STATE_VERSION = 1
ALGORITHMS = ("maml", "reptile")
METRIC_KEYS = ("outer_loss", "psnr", "inner_loss", "k")


# ------------------------------------------------------------------------------------------------------------
# config


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
    the image estimate in z (0 = raw estimate; see :mod:`metadip.conditioning`). ``operator_maps``: conditioned
    z only — add the noise-level and detail-response maps of :func:`metadip.conditioning.operator_maps`.
    ``estimate``: conditioned z only — ``backprojection`` (default), ``tikhonov`` (regularised least squares,
    λ = ``tikhonov_floor`` + ``tikhonov_noise``·σ̂², replaces the estimate) or ``both`` (the Tikhonov image as
    extra channels; see :class:`metadip.generators.inputs.InputRecipe`)."""

    kind: str = "uniform"
    channels: int | None = None
    scale: float = 0.1
    seed: int = 0
    z_mode: str = "resample"
    noise_channels: int = 0
    lowpass: float = 0.0
    operator_maps: bool = False
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
            operator_maps=self.operator_maps,
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
    """ε anneals linearly from ``epsilon_start`` to ``epsilon_end`` over ``anneal_steps`` (default: steps)."""

    epsilon_start: float = 0.2
    epsilon_end: float = 0.02
    anneal_steps: int | None = None


@dataclass(frozen=True)
class OnlineSettings:
    """The online recipe exported with the init (what ``reconstruct`` uses). ``lr`` / ``reg_noise_std`` / ``loss``
    default to the inner loop's; learned per-tensor lrs are exported too (``inner.lr_per_tensor``). ``loss``
    (``mse`` | ``sure``) may differ from ``inner.loss``: an init meta-trained with the data fit can be run
    online with SURE (what adapts, ``inner.adapt``, may not differ)."""

    optimizer: str = "adam"
    lr: float | None = None
    reg_noise_std: float | None = None
    ema: float = 0.99
    iterations: int = 3000
    stop: str = "holdout"
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
        name = self.name.strip()
        if not name or any(c in name for c in "/\\:") or name.startswith("."):
            raise MetadipError(f"name {self.name!r} must be a plain file name (no slashes or colons)")
        if self.algorithm not in ALGORITHMS:
            raise MetadipError(f"algorithm {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if self.steps < 0 or self.meta_batch < 1:
            raise MetadipError("steps must be >= 0 and meta_batch >= 1")
        if self.threads is not None and self.threads < 1:
            raise MetadipError("threads must be >= 1")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise MetadipError(f"max_minutes must be a finite number > 0, got {self.max_minutes}")
        from metadip.phantoms import PHANTOMS_COMPLEX

        if (self.data.source == PHANTOMS_COMPLEX) != (self.tasks.channels == 2):
            raise MetadipError(
                f"tasks.channels = 2 (complex: real and imaginary) goes with data.source = '{PHANTOMS_COMPLEX}' "
                f"and only with it (got channels {self.tasks.channels}, source {self.data.source!r})"
            )
        from metadip.checkpoint import check_recommendations

        for entry in check_recommendations(self.recommended_for, "recommended_for"):
            if entry.split(":", 1)[0].strip().lower() not in self.tasks.families:
                raise MetadipError(
                    f"recommended_for: {entry!r} is a family with no weight in [tasks]; an init is only "
                    "recommended for a family it was trained on"
                )
        check_recommendations(self.avoid_for, "avoid_for")
        if self.input.z_mode not in Z_MODES:
            raise MetadipError(f"input.z_mode {self.input.z_mode!r} is not one of {', '.join(Z_MODES)}")
        try:
            self.input.recipe(1)  # refuse a bad [input] table before a run folder is written
        except MetadipError as exc:
            raise MetadipError(f"[input]: {exc}") from None
        if self.maml.outer_loss not in ("clean", "measurement", "both"):
            raise MetadipError(f"maml.outer_loss {self.maml.outer_loss!r} is not one of clean, measurement, both")
        if isinstance(self.maml.loss_steps, str) and self.maml.loss_steps not in ("last", "all"):
            raise MetadipError(f"maml.loss_steps {self.maml.loss_steps!r} must be 'last', 'all' or a list")
        if self.maml.schedule not in ("constant", "cosine"):
            raise MetadipError(f"maml.schedule {self.maml.schedule!r} is not one of constant, cosine")
        if self.maml.supervised_steps < 0:
            raise MetadipError("maml.supervised_steps must be >= 0")
        if self.algorithm == "reptile" and self.maml.supervised_steps:
            raise MetadipError("maml.supervised_steps needs algorithm = 'maml'")
        if self.algorithm == "reptile" and self.maml.learn_inner_lr:
            raise MetadipError("maml.learn_inner_lr needs algorithm = 'maml' (Reptile gives no lr gradient)")
        if self.online.optimizer not in ("adam", "sgd"):
            raise MetadipError(f"online.optimizer {self.online.optimizer!r} is not one of adam, sgd")
        if self.online.loss not in (None, "mse", "sure"):
            raise MetadipError(f"online.loss {self.online.loss!r} is not one of mse, sure")
        if (
            min(self.log.every, self.log.val_factor) < 1
            or min(self.log.val_every, self.log.ckpt_every, self.log.val_tasks, self.log.image_grids) < 0
        ):
            raise MetadipError("log: every and val_factor must be >= 1, the other periods and counts >= 0")

    # -- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PretrainConfig:
        if "name" not in data:
            raise MetadipError("config needs a top-level 'name'")
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


# ------------------------------------------------------------------------------------------------------------
# a recipe for a folder of pictures (``metadip pretrain --images DIR``)

#: ``--arch`` of a from-scratch ``--images`` recipe: ``skip-slim`` / ``skip`` (the generator presets) or ``tiny``,
#: a 2-scale × 4-channel skip net that trains in seconds — for smoke tests, not a useful initialisation.
SCRATCH_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "skip-slim": ("skip-slim", {}),
    "skip": ("skip", {}),
    "tiny": ("skip", {"num_scales": 2, "channels_down": [4, 4], "channels_up": [4, 4], "channels_skip": [2, 2]}),
}
SCRATCH = "scratch"  # --from scratch: random θ0 (the default init's recipe otherwise)


def init_recipe(name_or_path: str) -> tuple[PretrainConfig, str, int]:
    """(recipe, name as ``model.init_from`` takes it, channels) of a checkpoint: the training config its sidecar
    records (``training.config``), so it works from a wheel install without the ``pretrain/`` folder. A bare
    name stays a name; a path becomes absolute."""
    from metadip import checkpoint as ckpt

    raw = str(name_or_path).strip()
    try:
        init = ckpt.load_checkpoint(raw)
    except MetadipError as exc:
        raise MetadipError(f"--from: {exc}") from None
    recorded = (init.training or {}).get("config")
    if not isinstance(recorded, Mapping):
        raise MetadipError(f"--from {raw}: its sidecar records no training recipe (training.config); use --config")
    try:
        recipe = PretrainConfig.from_dict(recorded)
    except MetadipError as exc:
        raise MetadipError(f"--from {raw}: its recorded training recipe no longer parses: {exc}") from None
    looks_like_path = "/" in raw or os.sep in raw or raw.endswith((".json", ".safetensors"))
    reference = str(ckpt.resolve_checkpoint(raw).resolve().with_suffix("")) if looks_like_path else raw
    return recipe, reference, int(init.arch_config.get("out_channels", recipe.tasks.channels))


def _folder_name(root: Path) -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in root.name).strip("-.")
    return name or "images"


def images_recipe(
    folder: str | os.PathLike,
    operators: list[str] | tuple[str, ...],
    *,
    init: str | None = None,
    name: str | None = None,
    held_out: int | None = None,
    size: int | None = None,
    arch: str | None = None,
    steps: int | None = None,
    max_minutes: float | None = None,
) -> PretrainConfig:
    """The recipe ``metadip pretrain --images DIR --operator SPEC ...`` trains (see :mod:`metadip.cli_pretrain`).

    Starts from the recipe recorded by init ``init`` (default: the one ``--init auto`` picks for the folder's
    channel count, e.g. ``universal-slim-long`` for colour pictures) with ``model.init_from = init`` (a
    fine-tune), or with random θ0 for ``init = "scratch"``: then the recipe is the one that trained the default
    init's lineage from random weights (``universal-slim`` for colour; followed through ``model.init_from``) and
    ``arch`` may pick a preset of :data:`SCRATCH_ARCHS`. ``data.source`` = the folder (absolute),
    ``data.held_out`` = ``held_out`` pictures (default max(1, 10 %)) chosen by a permutation of the sorted names
    drawn from the recipe's seed (:func:`metadip.images.seeded_held_out`); ``tasks`` = the operator specs and
    their ranges (:func:`metadip.tasks.distribution_for_operators`), the folder's channel count and ``size``
    (crop size).
    The schedule horizons are left unset (they follow ``steps``; a resumed run keeps its own);
    ``recommended_for`` / ``avoid_for`` are cleared (they only steer ``--init auto`` among installed inits);
    ``export`` is off (the init is written into the run folder).

    An RGB measurement-conditioned init fine-tunes on grey pictures through :mod:`metadip.meta.grey`; a grey init
    cannot learn colour. Folder problems (empty, no pictures, grey and colour mixed, too few pictures for the
    split, pictures smaller than the crops) are one-line :class:`MetadipError` s."""
    from metadip.checkpoint import shipped_init_for
    from metadip.images import check_picture_sizes, scan_folder, seeded_held_out, split_images
    from metadip.tasks import distribution_for_operators

    root = Path(folder).expanduser().resolve()
    pictures = scan_folder(root)
    channels = 1 if pictures[0].channels == 1 else 3
    kind = "grey" if channels == 1 else "colour"
    scratch = init is not None and init.strip().lower() == SCRATCH
    if arch is not None and not scratch:
        raise MetadipError("--arch applies only with --from scratch (a fine-tune keeps its init's architecture)")
    if init is None or scratch:
        default = shipped_init_for(channels)
        if default is None:
            raise MetadipError(f"no installed init for {kind} pictures to take the recipe from; use --config")
        init = default
    base, reference, init_channels = init_recipe(init)
    for _ in range(8) if scratch else ():  # the recipe that trained the default's lineage from random weights
        if not base.model.init_from:
            break
        base, _, init_channels = init_recipe(base.model.init_from)
    if channels == 3 and init_channels != 3 and not scratch:
        raise MetadipError(
            f"--from {init}: a {init_channels}-channel init cannot learn the colour pictures of {root}; "
            "use an RGB init or --from scratch"
        )
    in_channels = None
    if channels != init_channels and base.input.z_mode == "conditioned":  # z holds the pictures' channels
        from metadip.conditioning import conditioned_channels

        recipe = base.input.recipe(1)
        in_channels = conditioned_channels(
            channels, base.input.noise_channels, recipe.operator_maps, recipe.estimate == "both"
        )
    elif channels != init_channels and not scratch:
        raise MetadipError(
            f"--from {init}: only a measurement-conditioned RGB init converts to grey; {root} holds grey pictures"
        )
    model = dataclasses.replace(base.model, init_from=None if scratch else reference)
    if scratch and arch is not None:
        if arch not in SCRATCH_ARCHS:
            raise MetadipError(f"--arch {arch!r} is not one of {', '.join(SCRATCH_ARCHS)}")
        preset, options = SCRATCH_ARCHS[arch]
        kept = {k: v for k, v in base.model.options.items() if k in ("residual", "in_channels")}
        model = ModelConfig(arch=preset, options={**options, **kept}, init_from=None)
    if in_channels is not None:
        model = dataclasses.replace(model, options={**model.options, "in_channels": in_channels})

    tasks = distribution_for_operators(base.tasks, list(operators))
    tasks = dataclasses.replace(tasks, channels=channels, sizes=(size,) if size is not None else tasks.sizes)
    names = [p.name for p in pictures]
    count = max(1, len(names) // 10) if held_out is None else int(held_out)
    try:
        held = seeded_held_out(names, count, make_generator(base.seed, "held-out"))
    except MetadipError as exc:
        raise MetadipError(f"{root}: {exc}; add pictures or lower --held-out") from None
    _, held = split_images(names, held)  # exactly what the loop holds out (a file name also matches sub/NAME)
    if len(held) == len(names):
        raise MetadipError(f"{root}: holding out {', '.join(held)} leaves no picture for training")
    check_picture_sizes(root, pictures, max(tasks.sizes), base.data.max_side)
    start = "trained from scratch" if scratch else f"fine-tuned from {init}"
    config = dataclasses.replace(
        base,
        name=name if name is not None else _folder_name(root),
        description=f"{start} on the {kind} pictures of {root} ({', '.join(operators)}; "
        f"{len(names) - len(held)} for training, {len(held)} held out)",
        steps=base.steps if steps is None else int(steps),
        export=False,
        threads=None,
        max_minutes=max_minutes,
        recommended_for=(),
        avoid_for=(),
        model=model,
        data=DataConfig(source=str(root), held_out=tuple(held), train=None, max_side=base.data.max_side),
        tasks=tasks,
        maml=dataclasses.replace(base.maml, schedule_steps=None),
        reptile=dataclasses.replace(base.reptile, anneal_steps=None),
    )
    return config


# ------------------------------------------------------------------------------------------------------------
# helpers of the loop


def lr_scale(settings: MAMLSettings, step: int) -> float:
    """Multiplier of the outer learning rate at meta-step ``step`` (warm-up, then constant or cosine)."""
    if settings.warmup_steps > 0 and step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    if settings.schedule == "constant":
        return 1.0
    horizon = max(1, (settings.schedule_steps or 1) - settings.warmup_steps)
    progress = min(1.0, max(0.0, (step - settings.warmup_steps) / horizon))
    floor = settings.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


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
    weights would mean something else. Returns what the exported checkpoint records about the starting point.
    """
    from metadip import checkpoint as ckpt

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
    if source_recipe != recipe:
        raise MetadipError(f"{where}: its input recipe {source.input_recipe} differs from this config's {recipe}")
    state = source.state_dict
    if change:
        from metadip.meta.grey import change_channels_state

        source_channels, target_channels = change
        colour_blocks = 3 if recipe.estimate == "both" else 2
        shared = recipe.channels - colour_blocks * target_channels
        shapes = {k: v.shape for k, v in net.state_dict().items()}
        state = change_channels_state(state, shapes, colour_blocks, shared, source_channels, target_channels)
    device = next(net.parameters()).device
    with torch.no_grad():
        net.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
        lrs = source.inner.get("lr_per_tensor") or {}
        for name, value in (getattr(learner, "log_lr", None) or {}).items():
            if name in lrs and lrs[name] > 0:
                value.fill_(math.log(float(lrs[name]) / learner.inner.lr))
    found = {"name": source.name, "sha256": str(source.sidecar.get("sha256", ""))}
    return {**found, "converted": _CONVERSIONS[change]} if change else found


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


def _validation_inner(config: PretrainConfig) -> InnerConfig:
    """The inner loop validation runs for θ0: the online recipe (lr, jitter) at the training K."""
    return dataclasses.replace(
        config.inner,
        optimizer=config.online.optimizer,
        sample_steps=None,
        lr=config.online.lr if config.online.lr is not None else config.inner.lr,
        reg_noise_std=config.online.reg_noise_std
        if config.online.reg_noise_std is not None
        else config.inner.reg_noise_std,
    )


def _psnr_curve(net, params, z, task, inner: InnerConfig, steps: int, marks: list[int], log_lr, seed_parts):
    """PSNR (and outputs) of f_θt(z) against the clean image at the inner steps in ``marks``."""
    from metadip import metrics
    from metadip.meta.inner import forward

    found: dict[int, tuple[float, torch.Tensor]] = {}

    def hook(t, current, output):
        with torch.no_grad():
            out = output.detach() if output is not None else forward(net, current, z, task.size)
            out = out.clamp(0, 1)
        found[t] = (metrics.psnr(out, task.x), out)

    inner_loop(
        net,
        params,
        z,
        task,
        inner,
        steps=steps,
        create_graph=False,
        generator=make_generator(*seed_parts),
        log_lr=log_lr,
        hook=hook,
        hook_steps=marks,
    )
    return found


@dataclass
class PretrainResult:
    out_dir: Path
    step: int
    finished: bool
    checkpoint: Path | None = None
    exported: Path | None = None
    metrics: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    stopped_on_time: bool = False  # ended by config.max_minutes before config.steps (exported all the same)


# ------------------------------------------------------------------------------------------------------------
# the loop


def run_pretrain(
    config: PretrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    export: bool | None = None,
    stop_after: int | None = None,
) -> PretrainResult:
    """Meta-train ``config`` into ``out_dir``. ``resume`` continues from ``out_dir/state.pt``; ``export``
    (default ``config.export``) also writes ``checkpoints/NAME.*``; ``stop_after`` ends the run (state saved,
    nothing exported) once that many meta-steps are done — an interruption on purpose."""
    from metadip import checkpoint as ckpt
    from metadip import distributed
    from metadip.generators import build_generator, default_input_recipe
    from metadip.images import DEFAULT_HELD_OUT, SAMPLES, list_images, load_images, split_images
    from metadip.meta import MAML, Reptile
    from metadip.runtime import configure_threads, resolve_device
    from metadip.tracking import JSONLLogger, MultiLogger, NullLogger, TensorBoardLogger, image_grid

    # ---- device, ranks, threads ----------------------------------------------------------------------------
    device = resolve_device(device)
    info = distributed.init_distributed(device)
    device = distributed.local_device(device, info)
    if device.type == "cpu":
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        elif info.enabled:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world_size))
        else:
            configure_threads()
    main = info.is_main
    out = Path(out_dir)
    state_path = out / "state.pt"

    # ---- config: fresh or resumed --------------------------------------------------------------------------
    state = None
    if resume:
        if not state_path.is_file():
            raise MetadipError(f"--resume: no training state at {state_path}")
        state = _load_state(state_path)
        saved = PretrainConfig.from_dict(state["config"])
        cmp = _comparable(config, saved)
        if cmp["given"] != cmp["saved"]:
            diff = sorted(k for k in cmp["given"] if cmp["given"].get(k) != cmp["saved"].get(k))
            raise MetadipError(
                f"--resume: the config differs from the one {state_path} was trained with "
                f"(in: {', '.join(diff)}); only steps, max_minutes, export, threads and log may change"
            )
        config = dataclasses.replace(
            saved,
            steps=config.steps,
            export=config.export,
            log=config.log,
            threads=config.threads,
            description=config.description,
            max_minutes=config.max_minutes,
        )
    else:
        if state_path.exists():
            raise MetadipError(f"{out} already holds a training run (state.pt); use --resume or another --out")
        config = config.resolved()
    export = config.export if export is None else bool(export)
    seed = config.seed
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.toml", config.to_toml())

    # ---- images and tasks ----------------------------------------------------------------------------------
    source = config.data.source
    names = list_images(source)
    held_default = DEFAULT_HELD_OUT if source == SAMPLES else ()
    train_names, held_names = split_images(
        names, config.data.held_out if config.data.held_out is not None else held_default
    )
    if config.data.train is not None:
        wanted = list(config.data.train)
        unknown = [n for n in wanted if n not in train_names]
        if unknown:
            raise MetadipError(f"data.train: {', '.join(unknown)} not among the non-held-out images")
        train_names = wanted
    if not train_names:
        raise MetadipError("no training images left after the held-out split")
    channels = config.tasks.channels
    train_images = load_images(source, train_names, channels, config.data.max_side)
    sampler = TaskSampler(config.tasks, train_images, seed)
    val_tasks = []
    if main and config.log.val_tasks > 0 and held_names:
        held_images = load_images(source, held_names, channels, config.data.max_side)
        val_size = config.log.val_size or max(config.tasks.sizes)
        val_dist = dataclasses.replace(config.tasks, sizes=(val_size,))
        val_tasks = [val_dist.task(held_images, seed, i, stream="val").to(device) for i in range(config.log.val_tasks)]

    # ---- network, input policy, meta-learner ---------------------------------------------------------------
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "theta0"))
        net = build_generator(config.model.arch, out_channels=channels, **config.model.options)
    net = net.to(device)
    in_channels = int(net.config.get("in_channels", 32))
    recipe = config.input.recipe(in_channels)
    if config.input.z_mode == "conditioned":
        from metadip.conditioning import OPERATOR_MAPS, conditioned_channels

        both = recipe.estimate == "both"
        expected = conditioned_channels(channels, config.input.noise_channels, config.input.operator_maps, both)
        if in_channels != expected:
            maps = f" + {OPERATOR_MAPS} operator maps" if config.input.operator_maps else ""
            maps = f" + {channels} Tikhonov" + maps if both else maps
            raise MetadipError(
                f"z_mode 'conditioned' needs a network with {expected} input channels (2×{channels}{maps} "
                f"+ {config.input.noise_channels} noise), the model has {in_channels}; set "
                "model.options.in_channels"
            )
    elif recipe.channels != in_channels:
        raise MetadipError(f"input.channels {recipe.channels} does not match the network's {in_channels}")
    inputs = InputPolicy.create(recipe, config.input.z_mode, net, config.tasks.sizes, config.input.noise_channels)
    if inputs.fixed_z is not None:
        inputs.fixed_z = inputs.fixed_z.to(device)
    if config.algorithm == "maml":
        m = config.maml
        learner = MAML(
            net,
            config.inner,
            inputs,
            first_order=m.first_order,
            outer_loss=m.outer_loss,
            loss_steps=m.loss_steps,
            learn_inner_lr=m.learn_inner_lr,
            outer_lr=m.outer_lr,
            lr_lr=m.lr_lr,
            grad_clip=m.grad_clip,
            weight_decay=m.weight_decay,
        )
        algorithm_name = ("meta-sgd-" if m.learn_inner_lr else "") + ("fomaml" if m.first_order else "maml")
    else:
        r = config.reptile
        learner = Reptile(
            net,
            config.inner,
            inputs,
            epsilon_start=r.epsilon_start,
            epsilon_end=r.epsilon_end,
            anneal_steps=r.anneal_steps or max(1, config.steps),
        )
        algorithm_name = "reptile"

    start, wall_before = 0, 0.0
    init_from = _load_init_from(config, net, recipe, learner) if config.model.init_from else None
    if state is not None:
        net.load_state_dict(state["params"], strict=True)
        learner.load_state_dict(state["learner"])
        if state.get("fixed_z") is not None:
            inputs.fixed_z = state["fixed_z"].to(device)
        start, wall_before = int(state["step"]), float(state["wall_seconds"])
    distributed.broadcast_parameters_(learner.meta_parameters(), info)

    # ---- logging -------------------------------------------------------------------------------------------
    if main:
        jsonl = JSONLLogger(out / "log.jsonl")
        if resume:
            jsonl.truncate_after(start)
        else:
            jsonl.truncate_after(-1)
        loggers = [jsonl]
        if config.log.tensorboard:
            loggers.append(TensorBoardLogger(out / "tb", purge_step=start if resume else None))
        logger = MultiLogger(*loggers)
    else:
        logger = NullLogger()

    # ---- validation (rank 0): θ0 vs random init after K and val_factor·K steps -----------------------------
    k_val = config.inner.steps
    marks = sorted({0, k_val, config.log.val_factor * k_val})
    val_inner = _validation_inner(config)
    random_inner = InnerConfig(steps=k_val, optimizer="adam", lr=0.01, reg_noise_std=1.0 / 30.0)
    random_cache: dict[int, dict] = {}
    random_net = None
    if val_tasks and config.log.val_random:
        random_init = ckpt.random_init(net.config, out_channels=channels, seed=derive_seed(seed, "random-arm") % 2**31)
        random_net = random_init.build(device)
        random_recipe = default_input_recipe(random_net, seed=random_init.input_recipe.seed)

    def validate(step: int) -> dict:
        results: dict[str, list[float]] = {}
        rows = []
        log_lr = getattr(learner, "log_lr", None) or None
        for i, task in enumerate(val_tasks):
            z = inputs.z_for(task, net)
            curve = _psnr_curve(
                net,
                parameter_dict(net),
                z,
                task,
                val_inner,
                marks[-1],
                marks,
                log_lr,
                (task.seed, "val-inner"),
            )
            row = [task.x]
            for t in marks:
                results.setdefault(f"val/psnr_meta_{t}", []).append(curve[t][0])
                results.setdefault(f"val/{task.family}/psnr_meta_{t}", []).append(curve[t][0])
            if random_net is not None:
                if i not in random_cache:
                    from metadip.generators import make_input

                    rz = make_input(
                        random_recipe,
                        random_net.input_shape(*task.size),
                        generator=make_generator(task.seed, "val-random-z"),
                    ).to(device)
                    random_cache[i] = _psnr_curve(
                        random_net,
                        parameter_dict(random_net),
                        rz,
                        task,
                        random_inner,
                        marks[-1],
                        marks,
                        None,
                        (task.seed, "val-random"),
                    )
                for t in marks:
                    results.setdefault(f"val/psnr_random_{t}", []).append(random_cache[i][t][0])
                    results.setdefault(f"val/{task.family}/psnr_random_{t}", []).append(random_cache[i][t][0])
            if i < config.log.image_grids:
                from metadip.conditioning import backprojection

                row.append(backprojection(task.op, task.y)[0])
                row += [curve[t][1] for t in marks if t > 0]
                if random_net is not None:
                    row += [random_cache[i][t][1] for t in marks if t > 0]
                rows.append(row)
        summary = {k: sum(v) / len(v) for k, v in results.items()}
        if rows:
            tiles = [t for row in rows for t in row]
            logger.log_images("val/images_x_y_metaK_metaNK_randomK_randomNK", image_grid(tiles, len(rows[0])), step)
        return summary

    # ---- the loop ------------------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    end = config.steps if stop_after is None else min(config.steps, int(stop_after))
    bar = tqdm(
        total=config.steps,
        initial=start,
        desc=f"pretrain {config.name}",
        unit="step",
        dynamic_ncols=True,
        disable=not (progress and main),
    )
    started = time.perf_counter()
    last_metrics: dict = {}
    last_val: dict = {}
    last_val_step: int | None = None
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    stopped_on_time = False

    def save_state(step: int) -> None:
        if not main:
            return
        _save_state(
            state_path,
            {
                "version": STATE_VERSION,
                "step": step,
                "params": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "learner": learner.state_dict(),
                "fixed_z": inputs.fixed_z.detach().cpu() if inputs.fixed_z is not None else None,
                "wall_seconds": wall_before + time.perf_counter() - started,
                "config": config.to_dict(),
                "rng": {"torch": torch.get_rng_state()},
            },
        )

    try:
        if start == 0 and val_tasks and config.log.val_every > 0:
            last_val, last_val_step = validate(0), 0
            logger.log(last_val, 0)
        for step in range(start, end):
            spent = budget is not None and wall_before + time.perf_counter() - started >= budget
            if budget is not None and info.enabled:  # every rank stops at the same step (rank 0's clock decides)
                spent = distributed.all_reduce_metrics({"spent": float(spent and main)}, device, info)["spent"] > 0
            if spent:
                end, stopped_on_time = step, True  # the time budget is spent: stop here, export below
                if main and last_metrics and step % config.log.every != 0:
                    logger.log({f"train/{k}": v for k, v in last_metrics.items()}, step)
                break
            if budget is not None:
                left = budget - wall_before - (time.perf_counter() - started)
                bar.set_description_str(f"pretrain {config.name} ({left / 60:.1f} min left)", refresh=False)
            indices = [step * config.meta_batch + i for i in range(config.meta_batch)]
            tasks = [sampler(k).to(device) for k in distributed.shard(indices, info)]
            try:
                if config.algorithm == "maml":
                    supervised = step < config.maml.supervised_steps
                    grads, record = learner.meta_gradient(tasks, normalize=config.meta_batch, supervised=supervised)
                else:
                    grads, record = learner.meta_gradient(tasks, normalize=config.meta_batch)
            except FloatingPointError as exc:
                raise MetadipError(f"meta-step {step + 1}: {exc}; lower inner.lr") from None
            record = {key: record.get(key, 0.0) for key in METRIC_KEYS}
            distributed.all_reduce_sum_(grads, info)
            record = distributed.all_reduce_metrics(record, device, info)
            if not all(math.isfinite(float(g.sum())) for g in grads):
                raise MetadipError(
                    f"meta-gradient became NaN/Inf at meta-step {step + 1}; lower the learning "
                    "rates (inner.lr, maml.outer_lr) or enable maml.grad_clip"
                )
            if config.algorithm == "maml":
                scale = lr_scale(config.maml, step)
                record.update(learner.apply(grads, lr_scale=scale))
                record["outer_lr"] = config.maml.outer_lr * scale
            else:
                record.update(learner.apply(grads, step))
            done = step + 1
            last_metrics = record
            bar.update(1)
            bar.set_postfix({"loss": f"{record['outer_loss']:.4g}", "psnr": f"{record['psnr']:.2f}"}, refresh=False)
            if main and (done % config.log.every == 0 or done == end):
                logger.log(
                    {f"train/{k}": v for k, v in record.items()}
                    | {"train/wall_seconds": wall_before + time.perf_counter() - started},
                    done,
                )
            if (
                main
                and val_tasks
                and ((config.log.val_every > 0 and done % config.log.val_every == 0) or done == config.steps)
            ):
                last_val, last_val_step = validate(done), done
                logger.log(last_val, done)
                if progress:
                    bar.write(
                        f"step {done}: "
                        + ", ".join(f"{k[4:]}={v:.2f}" for k, v in sorted(last_val.items()) if k.count("/") == 1)
                    )
            if config.log.ckpt_every > 0 and done % config.log.ckpt_every == 0 and done != end:
                save_state(done)
        step = max(start, end)
        save_state(step)
    finally:
        bar.close()
        logger.close()
    wall = wall_before + time.perf_counter() - started

    # ---- export --------------------------------------------------------------------------------------------
    result = PretrainResult(
        out_dir=out,
        step=step,
        finished=step >= config.steps,
        metrics=last_metrics,
        validation=last_val,
        wall_seconds=wall,
        stopped_on_time=stopped_on_time,
    )
    if main and (result.finished or stopped_on_time):
        online = config.online
        inner_recipe = {
            "optimizer": online.optimizer,
            "lr": online.lr if online.lr is not None else config.inner.lr,
            "reg_noise_std": online.reg_noise_std if online.reg_noise_std is not None else config.inner.reg_noise_std,
            "ema": online.ema,
            "iterations": online.iterations,
            "stop": online.stop,
            "stop_options": {online.stop: {"patience": online.stop_patience}} if online.stop_patience else {},
            "meta_inner_steps": config.inner.steps,
            "adapt": config.inner.adapt,
            "loss": online.loss if online.loss is not None else config.inner.loss,
            "betas": [config.inner.beta1, config.inner.beta2],
            "eps": config.inner.eps,
        }
        lrs = learner.inner_lrs()
        if lrs is not None:
            inner_recipe["lr_per_tensor"] = lrs
        training = {
            "algorithm": algorithm_name,
            "families": config.tasks.families,
            "tasks": config.tasks.to_dict(),
            "image_source": source,
            "train_images": train_names,
            "held_out_images": held_names,
            "steps": step,
            "supervised_steps": min(step, config.maml.supervised_steps) if config.algorithm == "maml" else 0,
            "meta_batch": config.meta_batch,
            "tasks_seen": step * config.meta_batch,
            "wall_seconds": round(wall, 1),
            "seed": seed,
            "world_size": info.world_size,
            "device": device.type,
            "torch_version": torch.__version__,
            "z_mode": config.input.z_mode,
            **({"init_from": init_from} if init_from else {}),
            **(
                {
                    "time_budget": {
                        "max_minutes": config.max_minutes,
                        "stopped_on_time": stopped_on_time,
                        "stopped_at_step": step if stopped_on_time else None,
                        "planned_steps": config.steps,
                        "validation_step": last_val_step,
                    }
                }
                if config.max_minutes is not None
                else {}
            ),
            "validation": last_val,
            "config": config.to_dict(),
        }
        card = (f"{config.description.strip()} — " if config.description.strip() else "") + ckpt.make_card(
            config.name, net.config, training
        )
        common = dict(
            arch_config=net.config,
            input_recipe=recipe,
            inner=inner_recipe,
            training=training,
            z=inputs.fixed_z if config.input.z_mode == "fixed" else None,
            z_mode=config.input.z_mode,
            noise_channels=config.input.noise_channels if config.input.z_mode == "conditioned" else 0,
            card=card,
            recommended_for=config.recommended_for,
            avoid_for=config.avoid_for,
        )
        state_dict = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        _, result.checkpoint = ckpt.save_checkpoint(out / config.name, state_dict, **common)
        if export:
            _, result.exported = ckpt.save_checkpoint(ckpt.export_dir() / config.name, state_dict, **common)
    distributed.barrier(info)
    return result
