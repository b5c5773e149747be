"""The online DIP loop's optimisers without ``torch.optim``: Adam and SGD with momentum, op for op.

``torch.optim``'s first use imports ``torch._dynamo`` (``Optimizer.add_param_group`` and ``step`` are wrapped
to disable it): ~1.5–3 s, as much as importing torch, on every ``metadip reconstruct``. The classes here run
the exact arithmetic of ``torch.optim.Adam`` (any betas / eps) / ``torch.optim.SGD`` on the CPU (the
single-tensor kernels of torch 2.13: ``lerp_``, ``mul_().addcmul_()``, ``sqrt() / √bc₂ + eps``, ``addcdiv_``;
the same ops in the same order with the same Python-float scalars), so a run gives bit-identical parameters
(``tests/test_dip.py`` checks it, rollback included). On other devices torch's default is its multi-tensor
(``foreach``) kernel, whose rounding this CPU-only copy has not been checked against: :func:`make` falls back
to ``torch.optim`` there.

The interface is the part of ``torch.optim.Optimizer`` that :func:`metadip.dip.fit` uses: ``param_groups``
(each ``{"params": [...], "lr": ...}``), ``zero_grad``, ``step``, ``state_dict`` and ``load_state_dict``.

The meta-learner's inner loop keeps its own differentiable Adam (:mod:`metadip.meta.inner`): it must be
out-of-place for second-order gradients and takes the root of ``v̂ + 1e-30``, so it agrees with this one to
~1e-7 per step, not bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

OPTIMIZERS = ("adam", "sgd")
#: torch.optim.Adam's defaults.
BETAS = (0.9, 0.999)
EPS = 1e-8
#: The online loop's SGD momentum.
MOMENTUM = 0.9


class _Optimizer:
    """Parameter groups, per-tensor state (keyed by the tensor's position across groups, like torch's
    ``state_dict``) and the bookkeeping shared by :class:`Adam` and :class:`SGD`."""

    def __init__(self, params, lr: float) -> None:
        params = list(params)
        if params and isinstance(params[0], dict):
            groups = [{"params": list(g["params"]), "lr": float(g.get("lr", lr))} for g in params]
        else:
            groups = [{"params": params, "lr": float(lr)}]
        self.param_groups: list[dict] = groups
        self.state: dict[int, dict] = {}

    def _indexed(self):
        """(index, tensor, lr) for every tensor, in group order."""
        index = 0
        for group in self.param_groups:
            for param in group["params"]:
                yield index, param, group["lr"]
                index += 1

    def zero_grad(self, set_to_none: bool = True) -> None:
        for _, param, _ in self._indexed():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.detach_()
                param.grad.zero_()

    def state_dict(self) -> dict:
        """A copy of the state (tensors cloned) and the learning rates."""
        state = {
            i: {k: v.clone() if isinstance(v, Tensor) else v for k, v in entry.items()}
            for i, entry in self.state.items()
        }
        return {"state": state, "lrs": [g["lr"] for g in self.param_groups]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.state = {
            int(i): {k: v.clone() if isinstance(v, Tensor) else v for k, v in entry.items()}
            for i, entry in state_dict["state"].items()
        }
        for group, lr in zip(self.param_groups, state_dict["lrs"], strict=True):
            group["lr"] = lr


class Adam(_Optimizer):
    """``torch.optim.Adam(params, lr, betas, eps)`` (no weight decay, no amsgrad) on the CPU."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = BETAS, eps: float = EPS) -> None:
        super().__init__(params, lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for index, param, lr in self._indexed():
            grad = param.grad
            if grad is None:  # like torch: a tensor without a gradient keeps its state and its step count
                continue
            state = self.state.get(index)
            if state is None:
                state = self.state[index] = {
                    "step": 0,
                    "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
                }
            state["step"] += 1
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            if torch.is_complex(param):
                grad, exp_avg, exp_avg_sq = (torch.view_as_real(t) for t in (grad, exp_avg, exp_avg_sq))
                param = torch.view_as_real(param)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = float(state["step"])  # torch keeps a float32 step tensor and reads it back with .item()
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


class SGD(_Optimizer):
    """``torch.optim.SGD(params, lr, momentum=0.9)`` (no dampening, no Nesterov, no weight decay) on the CPU."""

    def __init__(self, params, lr: float, momentum: float = MOMENTUM) -> None:
        super().__init__(params, lr)
        self.momentum = float(momentum)

    @torch.no_grad()
    def step(self) -> None:
        for index, param, lr in self._indexed():
            grad = param.grad
            if grad is None:
                continue
            if self.momentum != 0:
                state = self.state.setdefault(index, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.detach().clone()
                else:
                    buf.mul_(self.momentum).add_(grad, alpha=1)
                grad = buf
            param.add_(grad, alpha=-lr)


def make(name: str, params, lr: float, betas: tuple[float, float] | None = None, eps: float | None = None):
    """``adam`` (constants ``betas`` / ``eps``, None: torch's defaults) or ``sgd`` (momentum 0.9; no betas / eps)
    over ``params`` (tensors, or groups ``{"params": [...], "lr": ...}``): the classes above when every tensor is
    on the CPU, else ``torch.optim``'s (identical results either way on the CPU; see the module docstring).
    Raises ValueError for another name."""
    params = list(params)
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    tensors = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
    betas = BETAS if betas is None else (float(betas[0]), float(betas[1]))
    eps = EPS if eps is None else float(eps)
    if all(t.device.type == "cpu" for t in tensors):
        return Adam(params, lr, betas, eps) if name == "adam" else SGD(params, lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)
    return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
