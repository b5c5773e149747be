"""The functional inner loop shared by MAML, first-order MAML, Reptile and validation: K DIP steps from a
parameter dict, written so that (optionally) second-order gradients flow through every step.

One step is exactly the online DIP step of :func:`metadip.dip.fit`: jitter the input (``reg_noise_std``), run
the generator with ``torch.func.functional_call``, take :func:`metadip.dip.measurement_loss` against the
task's y and apply SGD or Adam. Adam is written out functionally (first/second moments, bias correction,
``eps`` added to the root) so it matches ``torch.optim.Adam`` step for step and ``torch.autograd.grad(...,
create_graph=True)`` differentiates through it. The root is taken of ``v̂ + 1e-30``: identical in
float32/float64 for any non-zero second moment, but finite-gradient where a gradient is exactly zero (biases
before BatchNorm) — the plain ``sqrt`` has an infinite derivative at 0 and would turn the meta-gradient into
NaN.

Learned inner learning rates (Meta-SGD) are one log-multiplier per parameter **tensor**: the step of tensor n
is ``lr · exp(log_lr[n]) · update``. Per tensor rather than per element because Adam already rescales every
element by its own gradient history (a per-element lr would mostly duplicate that), because ~100 extra scalars
cannot overfit a few thousand tasks while 2.2 M per-element rates can, and because a per-layer rate is
something the online loop (``torch.optim`` parameter groups) can use and a person can read in the checkpoint.

The network input z is chosen by :class:`InputPolicy`: ``fixed`` (one z for every task, stored in the
checkpoint), ``resample`` (a fresh draw of the recipe per task, so θ0 must work for *any* z draw and size —
the default: an init trained on 64 px crops is then usable at 128 and 256 px) or ``conditioned`` (z built from
the measurement, see :mod:`metadip.conditioning`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metadip.adaptation import Z_KEY, adapted_names, adapts_input, check_mode
from metadip.checkpoint import Z_MODES
from metadip.conditioning import make_conditioned_input
from metadip.dip import measurement_loss
from metadip.errors import MetadipError
from metadip.generators import InputRecipe, jitter, make_input
from metadip.losses import has_noise, sure_through_input
from metadip.online import PAPER
from metadip.optim import BETAS, EPS
from metadip.tasks import Task, config_from_dict, config_to_dict, make_generator

OPTIMIZERS = ("adam", "sgd")
_SQRT_FLOOR = 1e-30


@dataclass(frozen=True)
class InnerConfig:
    """The inner (per-task DIP) optimiser. ``steps``: K; ``sample_steps``: draw K per task uniformly from this
    inclusive range instead (``None`` = always ``steps``); ``reg_noise_std``: input jitter σ (0 = off).
    ``second_order_steps``: in second-order MAML, differentiate exactly through only the last T inner steps
    (earlier steps are first-order: their Jacobian is taken as the identity); ``None``: all K; 0: FO-MAML."""

    steps: int = 10
    optimizer: str = PAPER.optimizer
    lr: float = PAPER.lr
    beta1: float = BETAS[0]
    beta2: float = BETAS[1]
    eps: float = EPS
    momentum: float = 0.0
    reg_noise_std: float = PAPER.reg_noise_std
    sample_steps: tuple[int, int] | None = None
    second_order_steps: int | None = None
    adapt: str = "all"  # what adapts (metadip.adaptation): all | norm | input — the online stage adapts the same
    loss: str = "mse"  # the inner (= online) loss: mse | sure (metadip.dip.fit's ``loss``)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapt", check_mode(self.adapt))
        if self.loss not in ("mse", "sure"):
            raise MetadipError(f"inner.loss: {self.loss!r} is not one of mse, sure")
        if self.optimizer not in OPTIMIZERS:
            raise MetadipError(f"inner.optimizer: {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.steps < 1:
            raise MetadipError(f"inner.steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise MetadipError(f"inner.lr must be > 0, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0 and 0 <= self.momentum < 1):
            raise MetadipError("inner: need 0 <= beta1, beta2, momentum < 1 and eps > 0")
        if self.second_order_steps is not None and self.second_order_steps < 0:
            raise MetadipError("inner.second_order_steps must be >= 0")
        if self.reg_noise_std < 0:
            raise MetadipError("inner.reg_noise_std must be >= 0")
        if self.sample_steps is not None and not 1 <= self.sample_steps[0] <= self.sample_steps[1]:
            raise MetadipError(
                f"inner.sample_steps must be [low, high] with 1 <= low <= high, got {list(self.sample_steps)}"
            )

    @property
    def max_steps(self) -> int:
        return self.sample_steps[1] if self.sample_steps is not None else self.steps

    def draw_steps(self, generator: torch.Generator) -> int:
        """K for one task (always draws one number so streams do not depend on the setting)."""
        draw = float(torch.rand((), generator=generator, dtype=torch.float64))
        if self.sample_steps is None:
            return self.steps
        lo, hi = self.sample_steps
        return lo + min(int(draw * (hi - lo + 1)), hi - lo)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> InnerConfig:
        return config_from_dict(cls, data, "inner")


@dataclass
class InnerResult:
    """``params``: θ_K; ``losses``: the measurement loss of each step (floats); ``steps``: K."""

    params: dict[str, Tensor]
    losses: list[float] = field(default_factory=list)
    steps: int = 0


def parameter_dict(net: nn.Module) -> dict[str, Tensor]:
    """The network's parameters by name (the tensors themselves, so gradients reach them)."""
    return dict(net.named_parameters())


def forward(net: nn.Module, params: Mapping[str, Tensor], z: Tensor, size: tuple[int, int]) -> Tensor:
    """``f_params(z)`` at output ``size`` without touching ``net``'s own parameters (an adapted input under
    :data:`~metadip.adaptation.Z_KEY` in ``params`` is not a network weight: pass it as ``z``)."""
    weights = {n: p for n, p in params.items() if n != Z_KEY}
    return functional_call(net, weights, (z,), {"size": tuple(size)})


def network_input(params: Mapping[str, Tensor], z: Tensor) -> Tensor:
    """The input of the network at these parameters: the adapted z when the mode adapts it, else ``z``."""
    return params.get(Z_KEY, z)


StepHook = Callable[[int, dict[str, Tensor], "Tensor | None"], None]


def inner_loop(
    net: nn.Module,
    params: Mapping[str, Tensor],
    z: Tensor,
    task: Task,
    config: InnerConfig,
    *,
    steps: int | None = None,
    create_graph: bool = False,
    generator: torch.Generator | None = None,
    log_lr: Mapping[str, Tensor] | None = None,
    hook: StepHook | None = None,
    hook_steps: Iterable[int] = (),
    lr: float | None = None,
    frozen: Collection[str] = (),
    input_builder: Callable[[Tensor], Tensor] | None = None,
) -> InnerResult:
    """Run ``steps`` (default ``config.steps``) DIP steps on ``task`` from ``params``.

    ``create_graph=True`` keeps the graph of every step (second-order MAML); then ``params`` should be the
    meta-parameters themselves. With ``create_graph=False`` every iterate is a detached leaf that requires
    grad (first-order MAML, Reptile, validation). ``generator`` drives the input jitter. ``log_lr`` holds
    per-tensor log-multipliers of the learning rate (Meta-SGD). ``hook(t, θ_t, output)`` is called for each
    ``t`` in ``hook_steps`` (0 ≤ t ≤ steps) with the parameters after ``t`` steps; ``output`` is
    ``f_{θ_t}(z)`` when the loop computed it anyway (no jitter, t < steps) and ``None`` otherwise. ``lr``
    overrides ``config.lr``."""
    steps = config.steps if steps is None else int(steps)
    base_lr = config.lr if lr is None else float(lr)
    hook_at = set(int(t) for t in hook_steps) if hook is not None else set()
    exact_steps = steps if config.second_order_steps is None else min(steps, config.second_order_steps)
    size = task.size
    adapted = set(adapted_names(net, config.adapt))
    names = [n for n in params if n not in frozen and n in adapted]
    if create_graph:
        current = dict(params)
    else:
        current = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    if adapts_input(config.adapt):  # z is a per-task parameter, adapted from the recipe's z (never meta-learned)
        current[Z_KEY] = z.detach().clone().requires_grad_(True)
        names.append(Z_KEY)
    if log_lr is not None:
        scale = {
            n: (torch.exp(log_lr[n]) if create_graph else torch.exp(log_lr[n].detach())) if n in log_lr else 1.0
            for n in names
        }
    else:
        scale = None
    state_m: dict[str, Tensor] = {}
    state_v: dict[str, Tensor] = {}
    losses: list[float] = []
    hidden = int(getattr(net, "hidden_channels", 0))
    with torch.enable_grad():
        for t in range(steps):
            base = network_input(current, z)
            net_input = (
                jitter(base, config.reg_noise_std, generator, hidden)
                if config.reg_noise_std > 0
                else base
            )
            if config.loss == "sure" and has_noise(task.op, getattr(task.op, "sigma", 0)):
                # dip.fit's SURE (PURE with a Poisson peak) step, functionally
                noise = net_input - base
                loss, output = sure_through_input(
                    task.op,
                    lambda source, params=current, noise=noise: forward(net, params, source + noise, size),
                    base,
                    task.y,
                    float(task.op.sigma) / 255.0,
                    generator,
                    input_builder=input_builder,
                )
            else:
                output = forward(net, current, net_input, size)
                loss = measurement_loss(task.op, output, task.y)
            if t in hook_at:
                hook(t, current, output if config.reg_noise_std == 0 else None)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"inner loss became {value} at step {t + 1} on task {task.spec!r}")
            losses.append(value)
            # with second_order_steps = T only the last T steps are differentiated through
            straight_through = create_graph and t < steps - exact_steps
            grads = torch.autograd.grad(
                loss,
                [current[n] for n in names],
                create_graph=create_graph and not straight_through,
                retain_graph=create_graph,
                materialize_grads=True,
            )
            updated: dict[str, Tensor] = dict(current)  # frozen tensors carry over unchanged
            for name, grad in zip(names, grads, strict=True):
                param = current[name]
                if config.optimizer == "adam":
                    m = state_m.get(name)
                    v = state_v.get(name)
                    m = (
                        (1 - config.beta1) * grad
                        if m is None
                        else config.beta1 * m + (1 - config.beta1) * grad
                    )
                    v = (
                        (1 - config.beta2) * grad * grad
                        if v is None
                        else (config.beta2 * v + (1 - config.beta2) * grad * grad)
                    )
                    state_m[name], state_v[name] = m, v
                    m_hat = m / (1 - config.beta1 ** (t + 1))
                    v_hat = v / (1 - config.beta2 ** (t + 1))
                    direction = m_hat / (torch.sqrt(v_hat + _SQRT_FLOOR) + config.eps)
                else:
                    if config.momentum > 0:
                        buf = state_m.get(name)
                        buf = grad if buf is None else config.momentum * buf + grad
                        state_m[name] = buf
                        direction = buf
                    else:
                        direction = grad
                step_size = base_lr if scale is None else base_lr * scale[name]
                new = param - step_size * direction
                if straight_through:  # value of the step, Jacobian of the identity (first-order step)
                    new = param + (new - param).detach()
                    if name in state_m:
                        state_m[name] = state_m[name].detach()
                    if name in state_v:
                        state_v[name] = state_v[name].detach()
                if not create_graph:
                    new = new.detach().requires_grad_(True)
                    if name in state_m:
                        state_m[name] = state_m[name].detach()
                    if name in state_v:
                        state_v[name] = state_v[name].detach()
                updated[name] = new
            current = updated
        if steps in hook_at:
            hook(steps, current, None)
    return InnerResult(params=current, losses=losses, steps=steps)


# ------------------------------------------------------------------------------------------------------------
# network input policy


@dataclass
class InputPolicy:
    """How each task gets its z. ``fixed``: ``fixed_z`` (drawn once from the recipe at the training size,
    saved in the checkpoint); ``resample``: a fresh draw per task from ``derive_seed(task.seed, "z")``;
    ``conditioned``: back-projection of y + normaliser + ``noise_channels`` noise channels (see
    :mod:`metadip.conditioning`)."""

    recipe: InputRecipe
    mode: str = "resample"
    fixed_z: Tensor | None = None
    noise_channels: int = 0

    def __post_init__(self) -> None:
        if self.mode not in Z_MODES:
            raise MetadipError(f"z_mode {self.mode!r} is not one of {', '.join(Z_MODES)}")

    @classmethod
    def create(
        cls, recipe: InputRecipe, mode: str, net: nn.Module, sizes: Iterable[int], noise_channels: int = 0
    ) -> InputPolicy:
        """Build the policy; ``fixed`` draws its z now (needs a single training size)."""
        fixed = None
        if mode == "fixed":
            sizes = sorted(set(int(s) for s in sizes))
            if len(sizes) != 1:
                raise MetadipError(f"z_mode = 'fixed' needs a single crop size, got {sizes}; use 'resample'")
            fixed = make_input(recipe, net.input_shape(sizes[0], sizes[0]))
        return cls(recipe=recipe, mode=mode, fixed_z=fixed, noise_channels=int(noise_channels))

    def z_for(self, task: Task, net: nn.Module) -> Tensor:
        height, width = task.size
        device = task.x.device
        if self.mode == "fixed":
            assert self.fixed_z is not None
            if tuple(self.fixed_z.shape[-3:]) != tuple(net.input_shape(height, width)):
                raise MetadipError(
                    f"fixed z of shape {tuple(self.fixed_z.shape)} does not fit a {height}×{width} task"
                )
            return self.fixed_z.to(device=device, dtype=task.x.dtype)
        generator = make_generator(task.seed, "z")
        if self.mode == "resample":
            return make_input(self.recipe, net.input_shape(height, width), generator=generator).to(
                device=device, dtype=task.x.dtype
            )
        return make_conditioned_input(
            self.recipe, task.op, task.y, self.noise_channels, generator=generator
        ).to(dtype=task.x.dtype)


def input_builder_for(policy: InputPolicy, task: Task) -> Callable[[Tensor], Tensor] | None:
    """y′ ↦ z′ for a measurement-conditioned policy (the same noise channels as ``policy.z_for(task)``), for a
    SURE inner loss; None when z does not depend on y."""
    if policy.mode != "conditioned":
        return None

    def build(measurement: Tensor) -> Tensor:
        return make_conditioned_input(
            policy.recipe, task.op, measurement, policy.noise_channels, generator=make_generator(task.seed, "z")
        ).to(dtype=task.x.dtype)

    return build


def inner_generator(task: Task) -> torch.Generator:
    """The generator for a task's inner-loop randomness (K draw, jitter): derived from the task seed alone."""
    return make_generator(task.seed, "inner")
