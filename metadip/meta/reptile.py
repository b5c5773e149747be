"""Reptile over DIP tasks: θ0 ← θ0 + ε·mean_tasks(θ_K − θ0), with ε annealed linearly.

The outer step is a plain interpolation (equivalently SGD with learning rate 1 on the pseudo-gradient
ε·(θ0 − θ_K)). Feeding θ0 − θ_K to Adam as a gradient normalises away its scale and with a large learning rate
destroys the init (a first probe collapsed to a constant output), so no adaptive optimiser is offered here.
The inner loop is the same functional DIP loop as MAML's, without ``create_graph``.

With ``z_lr`` > 0 the stored (fixed) z is learned with θ0: its pseudo-gradient is the gradient of the clean loss
‖f_{θ_K}(z) − x‖² with respect to z at the adapted weights (first order: θ_K is held fixed), and the step moves z
by ``z_lr·ε/ε_start`` along the mean gradient normalised to unit RMS. The pair (θ0, z) is what gives the head
start (a fresh z loses it), so both are meta-parameters; online, z stays fixed as in DIP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from metadip import metrics
from metadip.errors import MetadipError
from metadip.meta.inner import (
    InnerConfig,
    InputPolicy,
    forward,
    inner_generator,
    inner_loop,
    input_builder_for,
    network_input,
    parameter_dict,
)
from metadip.tasks import Task


class Reptile:
    """``meta_gradient(tasks)`` returns mean(θ0 − θ_K) per parameter (the pseudo-gradient); ``apply(grads,
    step)`` does θ0 ← θ0 − ε(step)·grads, with ε going linearly from ``epsilon_start`` to ``epsilon_end`` over
    ``anneal_steps`` meta-steps (then constant)."""

    algorithm = "reptile"

    def __init__(
        self,
        net: nn.Module,
        inner: InnerConfig,
        inputs: InputPolicy,
        *,
        epsilon_start: float = 0.2,
        epsilon_end: float = 0.02,
        anneal_steps: int = 1000,
        z_lr: float = 0.0,
    ) -> None:
        if not (0 < epsilon_end <= 1 and 0 < epsilon_start <= 1):
            raise MetadipError(f"reptile epsilon must be in (0, 1], got {epsilon_start} → {epsilon_end}")
        if anneal_steps < 1:
            raise MetadipError(f"reptile anneal_steps must be >= 1, got {anneal_steps}")
        if inner.adapt != "all":
            raise MetadipError(
                f"reptile moves θ0 toward θ_K, so weights that do not adapt (inner.adapt = {inner.adapt!r}) would "
                "never be learned; use algorithm = 'maml' (first_order = true) for restricted adaptation"
            )
        if z_lr < 0:
            raise MetadipError(f"reptile z_lr must be >= 0, got {z_lr}")
        if z_lr > 0 and (inputs.mode != "fixed" or inputs.fixed_z is None):
            raise MetadipError("reptile z_lr learns the stored z: it needs input z_mode = 'fixed'")
        self.z_lr = float(z_lr)
        self.net = net
        self.inner = inner
        self.inputs = inputs
        self.epsilon_start = float(epsilon_start)
        self.epsilon_end = float(epsilon_end)
        self.anneal_steps = int(anneal_steps)
        self.names = [n for n, _ in net.named_parameters()]

    def epsilon(self, step: int) -> float:
        """ε at meta-step ``step`` (0-based)."""
        frac = min(max(step, 0) / self.anneal_steps, 1.0)
        return self.epsilon_start + (self.epsilon_end - self.epsilon_start) * frac

    def meta_parameters(self) -> list[Tensor]:
        """θ0's tensors, then the stored z when it is learned (``z_lr`` > 0)."""
        params = list(self.net.parameters())
        if self.z_lr > 0:
            assert self.inputs.fixed_z is not None
            params.append(self.inputs.fixed_z)
        return params

    def inner_lrs(self) -> dict[str, float] | None:
        return None

    def task_gradient(self, task: Task) -> tuple[list[Tensor], dict[str, float]]:
        """θ0 − θ_K for one task, and its metrics."""
        generator = inner_generator(task)
        k = self.inner.draw_steps(generator)
        z = self.inputs.z_for(task, self.net)
        theta0 = parameter_dict(self.net)
        result = inner_loop(
            self.net,
            theta0,
            z,
            task,
            self.inner,
            steps=k,
            create_graph=False,
            generator=generator,
            input_builder=input_builder_for(self.inputs, task) if self.inner.loss == "sure" else None,
        )
        # One forward at θ_K: the record's output and, when z is learned, the clean loss's gradient w.r.t. z.
        learn_z = self.z_lr > 0
        adapted = {n: p.detach() for n, p in result.params.items()}
        z_in = z.detach().requires_grad_(learn_z)
        with torch.set_grad_enabled(learn_z):
            output = forward(self.net, adapted, network_input(adapted, z_in), task.size)
        z_grad = [torch.autograd.grad(torch.mean((output - task.x) ** 2), z_in)[0]] if learn_z else []
        output = output.detach()
        with torch.no_grad():
            record = {
                "outer_loss": float(torch.mean((output - task.x) ** 2)),
                "psnr": metrics.psnr(output.clamp(0, 1), task.x),
                "inner_loss": result.losses[-1],
                "k": float(k),
            }
            delta = [theta0[n].detach() - result.params[n].detach() for n in self.names] + z_grad
        return delta, record

    def meta_gradient(
        self, tasks: Sequence[Task], normalize: int | None = None
    ) -> tuple[list[Tensor], dict[str, float]]:
        """Sum over ``tasks`` of θ0 − θ_K (and of the metrics) divided by ``normalize`` (default
        ``len(tasks)``)."""
        normalize = len(tasks) if normalize is None else int(normalize)
        total: list[Tensor] | None = None
        sums: dict[str, float] = {}
        for task in tasks:
            delta, record = self.task_gradient(task)
            total = delta if total is None else [a + b for a, b in zip(total, delta, strict=True)]
            for key, value in record.items():
                sums[key] = sums.get(key, 0.0) + value
        if total is None:
            total = [torch.zeros_like(p) for p in self.meta_parameters()]
        return [g / normalize for g in total], {k: v / normalize for k, v in sums.items()}

    def apply(self, grads: Sequence[Tensor], step: int = 0) -> dict[str, float]:
        """θ0 ← θ0 − ε(step)·grads (= θ0 + ε·mean(θ_K − θ0)), in place."""
        eps = self.epsilon(step)
        params = self.meta_parameters()
        record = {"epsilon": eps}
        with torch.no_grad():
            if self.z_lr > 0:
                z, z_grad = params.pop(), grads[-1]
                grads = grads[:-1]
                rms = float(z_grad.pow(2).mean().sqrt())
                if rms > 0:
                    step_size = self.z_lr * eps / self.epsilon_start
                    z.sub_(z_grad.to(z.dtype), alpha=step_size / rms)
                    record["z_step"] = step_size
            for param, grad in zip(params, grads, strict=True):
                param.sub_(grad.to(param.dtype), alpha=eps)
        return record

    def step(self, tasks: Sequence[Task], step: int = 0) -> dict[str, float]:
        grads, record = self.meta_gradient(tasks)
        record.update(self.apply(grads, step))
        return record

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
