"""What an exported init's sidecar says about its training run: the online recipe it expects
(:func:`online_recipe`, the sidecar's ``inner``) and the record of how it was trained (:func:`training_record`,
``training``). Writing the files is :func:`metadip.checkpoint.export_init`."""

from __future__ import annotations

import torch

from metadip.online import DipRecipe
from metadip.pretrain.config import PretrainConfig


def online_recipe(config: PretrainConfig, lr_per_tensor: dict | None) -> DipRecipe:
    """The online recipe ``reconstruct`` runs the init with: ``[online]``, defaulting to the inner loop's lr,
    jitter and loss; what adapts and the Adam constants of the inner loop; the learned per-tensor lrs, if any."""
    online, inner = config.online, config.inner
    return DipRecipe(
        optimizer=online.optimizer,
        lr=online.lr if online.lr is not None else inner.lr,
        reg_noise_std=online.reg_noise_std if online.reg_noise_std is not None else inner.reg_noise_std,
        ema=online.ema,
        iterations=online.iterations,
        stop=online.stop,
        stop_options={online.stop: {"patience": online.stop_patience}} if online.stop_patience else {},
        meta_inner_steps=inner.steps,
        adapt=inner.adapt,
        loss=online.loss if online.loss is not None else inner.loss,
        betas=(inner.beta1, inner.beta2),
        eps=inner.eps,
        lr_per_tensor=lr_per_tensor,
    )


def training_record(
    config: PretrainConfig,
    *,
    algorithm: str,
    source: str,
    train_names: list[str],
    held_names: list[str],
    step: int,
    wall: float,
    world_size: int,
    device: torch.device,
    init_from: dict | None,
    stopped_on_time: bool,
    validation: dict,
    validation_step: int | None,
) -> dict:
    """The sidecar's ``training``: algorithm, task distribution, images, steps, wall time, seed, where it ran,
    the starting checkpoint (``model.init_from``), the time budget (``max_minutes``), the last validation and the
    resolved config."""
    return {
        "algorithm": algorithm,
        "families": config.tasks.families,
        "tasks": config.tasks.to_dict(),
        "image_source": source,
        # a run of 0 steps from PyTorch's init saw no picture (an untrained design such as offset-inpaint)
        "train_images": train_names if step > 0 or init_from else [],
        "held_out_images": held_names,
        "steps": step,
        "supervised_steps": min(step, config.maml.supervised_steps) if config.algorithm == "maml" else 0,
        "meta_batch": config.meta_batch,
        "tasks_seen": step * config.meta_batch,
        "wall_seconds": round(wall, 1),
        "seed": config.seed,
        "world_size": world_size,
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
                    "validation_step": validation_step,
                }
            }
            if config.max_minutes is not None
            else {}
        ),
        "validation": validation,
        "config": config.to_dict(),
    }
