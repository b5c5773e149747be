"""MAML over DIP tasks: second-order (through the functional inner Adam) or first-order, with a configurable
outer loss, a multi-step outer loss, K sampled per task and learned per-tensor inner learning rates
(Meta-SGD).

Outer loss of one task, averaged over the inner steps ``t`` in ``loss_steps``::

    L = mean_t  ℓ(f_{θ_t}(z))     ℓ = ‖f − x‖² ("clean") | ‖A f − y‖² ("measurement") | both summed ("both")

``loss_steps`` is ``"last"`` ([K]), ``"all"`` ([1..K]) or an explicit list (entries above K are dropped; [K]
if none is left). Why a multi-step loss: online DIP runs for tens to hundreds of steps, not K; an init trained
only on "be good at step K" can overshoot (fit noise) right after K, while the average over 1..K rewards a
trajectory that improves quickly *and* keeps improving. Sampling K per task (``InnerConfig.sample_steps``)
spreads the evaluation points further.

Second order can be truncated (``InnerConfig.second_order_steps = T``): only the last T inner steps are
differentiated exactly, earlier ones count as identity Jacobians (first order). The exact gradient through
many inner Adam steps at DIP's learning rate grows with K and is dominated by elements whose gradient is
near zero (Adam's step ≈ lr·sign(g) is a near-step function of θ0), so T = 1–2 is the practical setting.

First-order MAML treats every θ_t as independent of θ0, so the meta-gradient is Σ_t ∇ℓ(θ_t) / |loss_steps|
(the plain gradient at the adapted weights). For a learned log-lr of tensor n it uses ``⟨∇ℓ(θ_t)_n, θ_{t,n} −
θ_{0,n}⟩``: the exact derivative when the update directions are held fixed (every inner update of tensor n is
proportional to exp(log_lr_n)), which is the first-order approximation of Meta-SGD.

``supervised=True`` (the warm-start phase, ``maml.supervised_steps``) skips the inner loop: K = 0 and the loss
is ℓ(f_{θ0}(z)) alone — plain regression of the restorer θ0 on the task distribution, about K times cheaper
per task than a meta-step, so θ0 can first learn *what* to output before meta-learning shapes how DIP steps
from it behave. The learned inner learning rates get no gradient in that phase."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from metadip import metrics
from metadip.dip import measurement_loss
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

OUTER_LOSSES = ("clean", "measurement", "both")


def resolve_loss_steps(loss_steps: str | Sequence[int], k: int) -> list[int]:
    """The inner steps at which the outer loss is evaluated for a task with K = ``k``."""
    if isinstance(loss_steps, str):
        if loss_steps == "last":
            return [k]
        if loss_steps == "all":
            return list(range(1, k + 1))
        raise MetadipError(f"loss_steps {loss_steps!r} must be 'last', 'all' or a list of step numbers")
    steps = sorted({int(t) for t in loss_steps if 0 <= int(t) <= k})
    return steps or [k]


def outer_loss_value(kind: str, output: Tensor, task: Task) -> Tensor:
    if kind == "clean":
        return torch.mean((output - task.x) ** 2)
    if kind == "measurement":
        return measurement_loss(task.op, output, task.y)
    return torch.mean((output - task.x) ** 2) + measurement_loss(task.op, output, task.y)


class MAML:
    """MAML / first-order MAML / Meta-SGD on ``net``'s parameters (θ0 lives in ``net`` itself).

    ``meta_gradient(tasks)`` returns (gradients aligned with :meth:`meta_parameters`, metrics);
    ``apply(grads)`` takes one outer-optimiser (Adam) step; ``step(tasks)`` does both."""

    algorithm = "maml"

    def __init__(
        self,
        net: nn.Module,
        inner: InnerConfig,
        inputs: InputPolicy,
        *,
        first_order: bool = False,
        outer_loss: str = "clean",
        loss_steps: str | Sequence[int] = "last",
        learn_inner_lr: bool = False,
        outer_lr: float = 1e-4,
        lr_lr: float | None = None,
        grad_clip: float | None = None,
        weight_decay: float = 0.0,
    ) -> None:
        if outer_loss not in OUTER_LOSSES:
            raise MetadipError(f"outer_loss {outer_loss!r} is not one of {', '.join(OUTER_LOSSES)}")
        resolve_loss_steps(loss_steps, inner.max_steps)  # validates
        self.net = net
        self.inner = inner
        self.inputs = inputs
        self.first_order = bool(first_order)
        self.outer_loss = outer_loss
        self.loss_steps = loss_steps
        self.learn_inner_lr = bool(learn_inner_lr)
        self.grad_clip = grad_clip
        self.names = [n for n, _ in net.named_parameters()]
        device = next(net.parameters()).device
        dtype = next(net.parameters()).dtype
        self.log_lr: dict[str, nn.Parameter] = {}
        if self.learn_inner_lr:
            self.log_lr = {n: nn.Parameter(torch.zeros((), device=device, dtype=dtype)) for n in self.names}
        groups = [{"params": list(net.parameters()), "weight_decay": weight_decay}]
        if self.log_lr:
            groups.append(
                {
                    "params": list(self.log_lr.values()),
                    "lr": lr_lr if lr_lr is not None else outer_lr,
                    "weight_decay": 0.0,
                }
            )
        self.optimizer = torch.optim.Adam(groups, lr=outer_lr)
        self._base_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]

    # -- parameters ------------------------------------------------------------------------------------------
    def meta_parameters(self) -> list[Tensor]:
        """θ0 tensors (in ``named_parameters`` order) followed by the log-lrs, if learned."""
        return list(self.net.parameters()) + [self.log_lr[n] for n in self.names if self.log_lr]

    def inner_lrs(self) -> dict[str, float] | None:
        """Per-tensor inner learning rates (lr · exp(log_lr)), or None when not learned."""
        if not self.log_lr:
            return None
        return {n: float(self.inner.lr * torch.exp(self.log_lr[n].detach())) for n in self.names}

    # -- one task --------------------------------------------------------------------------------------------
    def supervised_gradient(self, task: Task) -> tuple[list[Tensor], dict[str, float]]:
        """Gradient of ℓ(f_{θ0}(z)) (no inner steps) w.r.t. :meth:`meta_parameters` (zeros for the log-lrs)."""
        z = self.inputs.z_for(task, self.net)
        params = list(self.net.parameters())
        with torch.enable_grad():
            output = self.net(z, size=task.size)
            loss = outer_loss_value(self.outer_loss, output, task)
            grads = list(torch.autograd.grad(loss, params, materialize_grads=True))
        grads += [torch.zeros_like(self.log_lr[n]) for n in self.names if self.log_lr]
        record = {
            "outer_loss": float(loss.detach()),
            "psnr": metrics.psnr(output.detach().clamp(0, 1), task.x),
            "inner_loss": float(measurement_loss(task.op, output.detach(), task.y)),
            "k": 0.0,
        }
        return grads, record

    def task_gradient(self, task: Task, supervised: bool = False) -> tuple[list[Tensor], dict[str, float]]:
        """Outer-loss gradient of one task w.r.t. :meth:`meta_parameters`, and its metrics (``supervised``:
        see :meth:`supervised_gradient`)."""
        if supervised:
            return self.supervised_gradient(task)
        generator = inner_generator(task)
        k = self.inner.draw_steps(generator)
        steps = resolve_loss_steps(self.loss_steps, k)
        hook_steps = sorted(set(steps) | {k})  # step K always, for the PSNR metric
        z = self.inputs.z_for(task, self.net)
        theta0 = parameter_dict(self.net)
        log_lr = self.log_lr or None
        record: dict[str, float] = {}

        if self.first_order:
            theta0_detached = {n: p.detach() for n, p in theta0.items()}
            grads = {n: torch.zeros_like(p) for n, p in theta0.items()}
            lr_grads = {n: torch.zeros_like(self.log_lr[n]) for n in self.names} if log_lr else {}
            total = [0.0]

            def hook(t: int, params: dict[str, Tensor], output: Tensor | None) -> None:
                if output is None:
                    output = forward(self.net, params, network_input(params, z), task.size)
                if t == k:
                    record["psnr"] = metrics.psnr(output.detach().clamp(0, 1), task.x)
                if t not in steps:
                    return
                loss = outer_loss_value(self.outer_loss, output, task) / len(steps)
                total[0] += float(loss.detach())
                g = torch.autograd.grad(
                    loss, [params[n] for n in self.names], retain_graph=t < k, materialize_grads=True
                )
                for name, gi in zip(self.names, g, strict=True):
                    grads[name] += gi
                    if lr_grads:
                        lr_grads[name] += (gi * (params[name].detach() - theta0_detached[name])).sum()

            result = inner_loop(
                self.net,
                theta0,
                z,
                task,
                self.inner,
                steps=k,
                create_graph=False,
                generator=generator,
                log_lr=log_lr,
                hook=hook,
                hook_steps=hook_steps,
                input_builder=input_builder_for(self.inputs, task) if self.inner.loss == "sure" else None,
            )
            out = [grads[n] for n in self.names] + [lr_grads[n] for n in self.names if lr_grads]
            record["outer_loss"] = total[0]
        else:
            losses: list[Tensor] = []

            def hook(t: int, params: dict[str, Tensor], output: Tensor | None) -> None:
                if output is None:
                    output = forward(self.net, params, network_input(params, z), task.size)
                if t == k:
                    record["psnr"] = metrics.psnr(output.detach().clamp(0, 1), task.x)
                if t in steps:
                    losses.append(outer_loss_value(self.outer_loss, output, task))

            result = inner_loop(
                self.net,
                theta0,
                z,
                task,
                self.inner,
                steps=k,
                create_graph=True,
                generator=generator,
                log_lr=log_lr,
                hook=hook,
                hook_steps=hook_steps,
                input_builder=input_builder_for(self.inputs, task) if self.inner.loss == "sure" else None,
            )
            loss = torch.stack(losses).mean()
            record["outer_loss"] = float(loss.detach())
            out = list(torch.autograd.grad(loss, self.meta_parameters(), materialize_grads=True))
        record["inner_loss"] = result.losses[-1] if result.losses else float("nan")
        record["k"] = float(k)
        return out, record

    # -- a meta-batch ----------------------------------------------------------------------------------------
    def meta_gradient(
        self, tasks: Sequence[Task], normalize: int | None = None, supervised: bool = False
    ) -> tuple[list[Tensor], dict[str, float]]:
        """Sum of the tasks' gradients (and metrics) divided by ``normalize`` (default ``len(tasks)``): with
        the global meta-batch size as ``normalize``, an all-reduce SUM over ranks gives the global mean.
        ``supervised``: the warm-start phase (no inner loop, see :meth:`supervised_gradient`)."""
        normalize = len(tasks) if normalize is None else int(normalize)
        total: list[Tensor] | None = None
        sums: dict[str, float] = {}
        for task in tasks:
            grads, record = self.task_gradient(task, supervised=supervised)
            total = grads if total is None else [a + b for a, b in zip(total, grads, strict=True)]
            for key, value in record.items():
                sums[key] = sums.get(key, 0.0) + value
        if total is None:
            total = [torch.zeros_like(p) for p in self.meta_parameters()]
        return [g / normalize for g in total], {k: v / normalize for k, v in sums.items()}

    def apply(self, grads: Sequence[Tensor], lr_scale: float = 1.0) -> dict[str, float]:
        """One outer Adam step with ``grads``; every group's learning rate is its base rate × ``lr_scale``
        (the schedule)."""
        params = self.meta_parameters()
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad.detach().to(param.dtype).clone()
        info: dict[str, float] = {}
        if self.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            info["grad_norm"] = float(norm)
        for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * lr_scale
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return info

    def step(self, tasks: Sequence[Task], lr_scale: float = 1.0) -> dict[str, float]:
        grads, record = self.meta_gradient(tasks)
        record.update(self.apply(grads, lr_scale))
        return record

    # -- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "log_lr": {n: p.detach().clone() for n, p in self.log_lr.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for name, value in state.get("log_lr", {}).items():
                self.log_lr[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
