"""Validation during meta-training (rank 0): θ0 against random init on a fixed set of held-out tasks, PSNR after
0, K and ``val_factor``·K inner steps (:class:`Validation`), with the online recipe the init will be run with."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from metadip import checkpoint as ckpt
from metadip import metrics
from metadip.conditioning import backprojection
from metadip.generators import default_input_recipe, make_input
from metadip.meta.inner import InnerConfig, InputPolicy, forward, inner_loop, parameter_dict
from metadip.online import PAPER
from metadip.pretrain.config import PretrainConfig
from metadip.tasks import Task, derive_seed, make_generator
from metadip.tracking import image_grid


class Validation:
    """``validation(step)`` → mean PSNRs (``val/psnr_meta_T``, ``val/psnr_random_T``, and per family) of θ0 and
    of random init (the DIP paper's recipe, same architecture; computed once per task and cached) on ``tasks``
    after each mark T in 0, K, ``val_factor``·K inner steps; the first ``log.image_grids`` tasks' images go to
    ``logger`` as one grid. No tasks: no validation."""

    def __init__(
        self,
        config: PretrainConfig,
        net: nn.Module,
        inputs: InputPolicy,
        learner,
        tasks: list[Task],
        logger,
        device: torch.device,
    ):
        self.config, self.net, self.inputs, self.learner, self.tasks = config, net, inputs, learner, tasks
        self.logger, self.device = logger, device
        k_val = config.inner.steps
        self.marks = sorted({0, k_val, config.log.val_factor * k_val})
        self.inner = _validation_inner(config)
        self.random_inner = InnerConfig(
            steps=k_val, optimizer=PAPER.optimizer, lr=PAPER.lr, reg_noise_std=PAPER.reg_noise_std
        )
        self.random_cache: dict[int, dict] = {}
        self.random_net = None
        if tasks and config.log.val_random:
            random_init = ckpt.random_init(
                net.config, out_channels=config.tasks.channels, seed=derive_seed(config.seed, "random-arm") % 2**31
            )
            self.random_net = random_init.build(device)
            self.random_recipe = default_input_recipe(self.random_net, seed=random_init.input_recipe.seed)

    def __call__(self, step: int) -> dict:
        net, marks, random_net, random_cache = self.net, self.marks, self.random_net, self.random_cache
        results: dict[str, list[float]] = {}
        rows = []
        log_lr = getattr(self.learner, "log_lr", None) or None
        for i, task in enumerate(self.tasks):
            z = self.inputs.z_for(task, net)
            curve = _psnr_curve(
                net,
                parameter_dict(net),
                z,
                task,
                self.inner,
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
                    rz = make_input(
                        self.random_recipe,
                        random_net.input_shape(*task.size),
                        generator=make_generator(task.seed, "val-random-z"),
                    ).to(self.device)
                    random_cache[i] = _psnr_curve(
                        random_net,
                        parameter_dict(random_net),
                        rz,
                        task,
                        self.random_inner,
                        marks[-1],
                        marks,
                        None,
                        (task.seed, "val-random"),
                    )
                for t in marks:
                    results.setdefault(f"val/psnr_random_{t}", []).append(random_cache[i][t][0])
                    results.setdefault(f"val/{task.family}/psnr_random_{t}", []).append(random_cache[i][t][0])
            if i < self.config.log.image_grids:
                row.append(backprojection(task.op, task.y)[0])
                row += [curve[t][1] for t in marks if t > 0]
                if random_net is not None:
                    row += [random_cache[i][t][1] for t in marks if t > 0]
                rows.append(row)
        summary = {k: sum(v) / len(v) for k, v in results.items()}
        if rows:
            tiles = [t for row in rows for t in row]
            self.logger.log_images(
                "val/images_x_y_metaK_metaNK_randomK_randomNK", image_grid(tiles, len(rows[0])), step
            )
        return summary


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
