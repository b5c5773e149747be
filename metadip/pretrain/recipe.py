"""The meta-training recipe, in torchtune's shape: named setup steps, one flat loop, an export.

``run_pretrain(config, out_dir)`` reads top to bottom: :func:`setup_runtime` (device, ranks, threads),
:func:`setup_config` (fresh or resumed config; ``config.toml``), :func:`setup_data` (images, task sampler,
validation tasks), :func:`setup_model` (θ0's network and the z policy), :func:`setup_learner` (MAML / Reptile),
the starting point (``model.init_from``, ``state.pt``), :func:`setup_logging`, the validation; then
:func:`train` — per meta-step draw the global task indices, take this rank's share, :func:`meta_step`
(meta-gradient or Reptile delta, all-reduce, update), log, validate, save the state — and finally :func:`export_run`
(``NAME.safetensors`` + ``NAME.json``)."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from metadip import checkpoint as ckpt
from metadip import distributed
from metadip.conditioning import conditioned_channels
from metadip.errors import MetadipError
from metadip.fileio import atomic_write_text
from metadip.generators import build_generator
from metadip.generators.inputs import InputRecipe
from metadip.images import DEFAULT_HELD_OUT, SAMPLES, list_images, load_images, split_images
from metadip.meta import MAML, Reptile
from metadip.meta.inner import InputPolicy
from metadip.pretrain.config import MAMLSettings, PretrainConfig, resume_config
from metadip.pretrain.export import online_recipe, training_record
from metadip.pretrain.state import _load_init_from, _load_state, _save_state, restore_state, training_state
from metadip.pretrain.validation import Validation
from metadip.runtime import configure_threads, resolve_device
from metadip.tasks import Task, TaskSampler, derive_seed
from metadip.tracking import JSONLLogger, Logger, MultiLogger, NullLogger, TensorBoardLogger

METRIC_KEYS = ("outer_loss", "psnr", "inner_loss", "k")


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
    validation_step: int | None = None  # the meta-step ``validation`` was measured at


@dataclass
class Data:
    """The images of a run: the source, the train / held-out names, the training task sampler and (rank 0) the
    fixed validation tasks."""

    source: str
    train_names: list[str]
    held_names: list[str]
    sampler: TaskSampler
    val_tasks: list[Task]


@dataclass
class Run:
    """What the setup steps built: everything :func:`train` and :func:`export_run` read."""

    config: PretrainConfig
    out: Path
    device: torch.device
    info: distributed.DistInfo
    data: Data
    net: nn.Module
    recipe: InputRecipe
    inputs: InputPolicy
    learner: MAML | Reptile
    algorithm: str
    logger: Logger
    validation: Validation
    start: int = 0
    wall_before: float = 0.0
    init_from: dict | None = None


# ------------------------------------------------------------------------------------------------------------
# setup steps


def setup_runtime(device: str | torch.device, config: PretrainConfig) -> tuple[torch.device, distributed.DistInfo]:
    """The device, this process's rank (torchrun) and the CPU threads (``config.threads``, else all cores
    shared among the ranks)."""
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
    return device, info


def setup_config(config: PretrainConfig, out: Path, *, resume: bool, main: bool) -> tuple[PretrainConfig, dict | None]:
    """The config this run trains and the state it resumes: ``config`` resolved (a fresh run; refused where
    ``out`` holds one) or the one ``out/state.pt`` was trained with (:func:`resume_config`). Rank 0 writes it
    to ``out/config.toml``."""
    state_path = out / "state.pt"
    state = None
    if resume:
        if not state_path.is_file():
            raise MetadipError(f"--resume: no training state at {state_path}")
        state = _load_state(state_path)
        config = resume_config(config, PretrainConfig.from_dict(state["config"]), state_path)
    else:
        if state_path.exists():
            raise MetadipError(f"{out} already holds a training run (state.pt); use --resume or another --out")
        config = config.resolved()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.toml", config.to_toml())
    return config, state


def setup_data(config: PretrainConfig, device: torch.device, main: bool) -> Data:
    """The train / held-out split of ``data.source``, the task sampler over the training images and, on rank 0,
    ``log.val_tasks`` fixed validation tasks on the held-out images (at ``log.val_size``)."""
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
    seed, channels = config.seed, config.tasks.channels
    train_images = load_images(source, train_names, channels, config.data.max_side)
    sampler = TaskSampler(config.tasks, train_images, seed)
    val_tasks = []
    if main and config.log.val_tasks > 0 and held_names:
        held_images = load_images(source, held_names, channels, config.data.max_side)
        val_size = config.log.val_size or max(config.tasks.sizes)
        val_dist = dataclasses.replace(config.tasks, sizes=(val_size,))
        val_tasks = [val_dist.task(held_images, seed, i, stream="val").to(device) for i in range(config.log.val_tasks)]
    return Data(source, train_names, held_names, sampler, val_tasks)


def setup_model(config: PretrainConfig, device: torch.device) -> tuple[nn.Module, InputRecipe, InputPolicy]:
    """θ0's network (initial weights drawn from the run's seed, the global RNG untouched), its z recipe and the
    input policy (``input.z_mode``); refuses a network whose input channels do not fit the recipe."""
    channels = config.tasks.channels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "theta0"))
        net = build_generator(config.model.arch, out_channels=channels, **config.model.options)
    net = net.to(device)
    in_channels = int(net.config.get("in_channels", 32))
    recipe = config.input.recipe(in_channels)
    if config.input.z_mode == "conditioned":
        expected = conditioned_channels(channels, config.input.noise_channels)
        if in_channels != expected:
            raise MetadipError(
                f"z_mode 'conditioned' needs a network with {expected} input channels (2×{channels} "
                f"+ {config.input.noise_channels} noise), the model has {in_channels}; set "
                "model.options.in_channels"
            )
    elif recipe.channels != in_channels:
        raise MetadipError(f"input.channels {recipe.channels} does not match the network's {in_channels}")
    inputs = InputPolicy.create(recipe, config.input.z_mode, net, config.tasks.sizes, config.input.noise_channels)
    if inputs.fixed_z is not None:
        inputs.fixed_z = inputs.fixed_z.to(device)
    return net, recipe, inputs


def setup_learner(config: PretrainConfig, net: nn.Module, inputs: InputPolicy) -> tuple[MAML | Reptile, str]:
    """The meta-learner of ``config.algorithm`` with its ``[maml]`` / ``[reptile]`` settings, and the algorithm's
    name as the sidecar records it (``maml``, ``fomaml``, ``meta-sgd-maml``, ``meta-sgd-fomaml``, ``reptile``)."""
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
        return learner, ("meta-sgd-" if m.learn_inner_lr else "") + ("fomaml" if m.first_order else "maml")
    r = config.reptile
    learner = Reptile(
        net,
        config.inner,
        inputs,
        epsilon_start=r.epsilon_start,
        epsilon_end=r.epsilon_end,
        anneal_steps=r.anneal_steps or max(1, config.steps),
        z_lr=r.z_lr,
    )
    return learner, "reptile"


def setup_logging(config: PretrainConfig, out: Path, *, main: bool, resume: bool, start: int) -> Logger:
    """Rank 0: ``out/log.jsonl`` (cut back to ``start`` on resume) and TensorBoard (``log.tensorboard``); other
    ranks log nothing."""
    if not main:
        return NullLogger()
    jsonl = JSONLLogger(out / "log.jsonl")
    jsonl.truncate_after(start if resume else -1)
    loggers = [jsonl]
    if config.log.tensorboard:
        loggers.append(TensorBoardLogger(out / "tb", purge_step=start if resume else None))
    return MultiLogger(*loggers)


# ------------------------------------------------------------------------------------------------------------
# the loop


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


def meta_step(run: Run, step: int) -> dict:
    """Meta-step ``step``: this rank's share of the global task indices, the meta-gradient (MAML; the first
    ``maml.supervised_steps`` regress f_θ0(z) directly) or the Reptile delta, all-reduced over the ranks and
    applied. Returns the step's metrics (averaged over the ranks)."""
    config, info, learner = run.config, run.info, run.learner
    indices = [step * config.meta_batch + i for i in range(config.meta_batch)]
    tasks = [run.data.sampler(k).to(run.device) for k in distributed.shard(indices, info)]
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
    record = distributed.all_reduce_metrics(record, run.device, info)
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
    return record


def time_is_up(run: Run, wall: float, budget: float) -> bool:
    """Whether ``wall`` seconds of training spend the ``budget``; under torchrun every rank stops at the same step
    (rank 0's clock decides)."""
    spent = wall >= budget
    if run.info.enabled:
        spent = distributed.all_reduce_metrics({"spent": float(spent and run.info.is_main)}, run.device, run.info)
        spent = spent["spent"] > 0
    return spent


def save_state(run: Run, step: int, wall: float) -> None:
    """Rank 0 writes ``state.pt`` (atomically) after ``step`` meta-steps."""
    if run.info.is_main:
        _save_state(run.out / "state.pt", training_state(step, run.net, run.learner, run.inputs, wall, run.config))


def train(run: Run, *, end: int, progress: bool) -> PretrainResult:
    """Meta-steps ``run.start`` … ``end`` − 1, then the state. Stops early, like a finished run, once
    ``max_minutes`` of training (resumed parts included) are spent."""
    from tqdm.auto import tqdm

    config, main, logger, validation = run.config, run.info.is_main, run.logger, run.validation
    bar = tqdm(
        total=config.steps,
        initial=run.start,
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

    def wall() -> float:
        return run.wall_before + time.perf_counter() - started

    try:
        if run.start == 0 and validation.tasks and config.log.val_every > 0:
            last_val, last_val_step = validation(0), 0
            logger.log(last_val, 0)
        for step in range(run.start, end):
            if budget is not None and time_is_up(run, wall(), budget):
                end, stopped_on_time = step, True  # the time budget is spent: stop here, export below
                if main and last_metrics and step % config.log.every != 0:
                    logger.log({f"train/{k}": v for k, v in last_metrics.items()}, step)
                break
            if budget is not None:
                left = budget - wall()
                bar.set_description_str(f"pretrain {config.name} ({left / 60:.1f} min left)", refresh=False)
            record = meta_step(run, step)
            done = step + 1
            last_metrics = record
            bar.update(1)
            bar.set_postfix({"loss": f"{record['outer_loss']:.4g}", "psnr": f"{record['psnr']:.2f}"}, refresh=False)
            if main and (done % config.log.every == 0 or done == end):
                logger.log({f"train/{k}": v for k, v in record.items()} | {"train/wall_seconds": wall()}, done)
            if (
                main
                and validation.tasks
                and ((config.log.val_every > 0 and done % config.log.val_every == 0) or done == config.steps)
            ):
                last_val, last_val_step = validation(done), done
                logger.log(last_val, done)
                if progress:
                    bar.write(
                        f"step {done}: "
                        + ", ".join(f"{k[4:]}={v:.2f}" for k, v in sorted(last_val.items()) if k.count("/") == 1)
                    )
            if config.log.ckpt_every > 0 and done % config.log.ckpt_every == 0 and done != end:
                save_state(run, done, wall())
        step = max(run.start, end)
        save_state(run, step, wall())
    finally:
        bar.close()
        logger.close()
    return PretrainResult(
        out_dir=run.out,
        step=step,
        finished=step >= config.steps,
        metrics=last_metrics,
        validation=last_val,
        wall_seconds=wall(),
        stopped_on_time=stopped_on_time,
        validation_step=last_val_step,
    )


# ------------------------------------------------------------------------------------------------------------
# export


def export_run(run: Run, result: PretrainResult, *, export: bool) -> None:
    """Write the trained init into the run folder (and, with ``export``, into :func:`metadip.checkpoint.export_dir`)
    with its online recipe and training record; sets ``result.checkpoint`` / ``result.exported``."""
    config, data = run.config, run.data
    training = training_record(
        config,
        algorithm=run.algorithm,
        source=data.source,
        train_names=data.train_names,
        held_names=data.held_names,
        step=result.step,
        wall=result.wall_seconds,
        world_size=run.info.world_size,
        device=run.device,
        init_from=run.init_from,
        stopped_on_time=result.stopped_on_time,
        validation=result.validation,
        validation_step=result.validation_step,
    )
    result.checkpoint, result.exported = ckpt.export_init(
        run.out / config.name,
        {k: v.detach().cpu() for k, v in run.net.state_dict().items()},
        description=config.description,
        export=export,
        arch_config=run.net.config,
        input_recipe=run.recipe,
        inner=online_recipe(config, run.learner.inner_lrs()),
        training=training,
        z=run.inputs.fixed_z if config.input.z_mode == "fixed" else None,
        z_mode=config.input.z_mode,
        noise_channels=config.input.noise_channels if config.input.z_mode == "conditioned" else 0,
        recommended_for=config.recommended_for,
        avoid_for=config.avoid_for,
    )


# ------------------------------------------------------------------------------------------------------------
# the recipe


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
    device, info = setup_runtime(device, config)
    out = Path(out_dir)
    config, state = setup_config(config, out, resume=resume, main=info.is_main)
    also_export = config.export if export is None else bool(export)
    data = setup_data(config, device, info.is_main)
    net, recipe, inputs = setup_model(config, device)
    learner, algorithm = setup_learner(config, net, inputs)
    init_from = _load_init_from(config, net, recipe, learner) if config.model.init_from else None
    start, wall_before = restore_state(state, net, learner, inputs, device)
    distributed.broadcast_parameters_(learner.meta_parameters(), info)
    logger = setup_logging(config, out, main=info.is_main, resume=resume, start=start)
    validation = Validation(config, net, inputs, learner, data.val_tasks, logger, device)
    run = Run(
        config=config,
        out=out,
        device=device,
        info=info,
        data=data,
        net=net,
        recipe=recipe,
        inputs=inputs,
        learner=learner,
        algorithm=algorithm,
        logger=logger,
        validation=validation,
        start=start,
        wall_before=wall_before,
        init_from=init_from,
    )
    end = config.steps if stop_after is None else min(config.steps, int(stop_after))
    result = train(run, end=end, progress=progress)
    if info.is_main and (result.finished or result.stopped_on_time):
        export_run(run, result, export=also_export)
    distributed.barrier(info)
    return result
