"""The one Deep Image Prior loop.

``fit`` minimises ‖A f_θ(z) − y‖² over θ from a given starting state (random or meta-learned weights + the z
they belong to), with Adam, optional input jitter, an EMA of outputs, rollback on loss spikes, NaN safety and a
pluggable early-stopping rule. ``measurement_loss`` is shared with the meta-learner's functional inner loop.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from metadip import metrics, optim
from metadip.adaptation import Z_KEY, adapted_names, adapts_input
from metadip.errors import MetadipError
from metadip.generators import jitter
from metadip.losses import has_noise, sure_through_input
from metadip.online import DEFAULT_ADAPT, DEFAULT_LOSS, PAPER, DipRecipe
from metadip.stopping import StoppingRule, make_stopping_rule  # noqa: F401  (re-exported)

#: A loss below this (MSE on the [0, 1] scale, ~26 dB) never counts as a spike: with few observed entries a
#: well-fitted loss of 1e-4 can jump 50-fold without anything going wrong (rollback_factor × the floor is the bar).
SPIKE_FLOOR = 2.5e-3
#: With ``ssim_every > 1`` SSIM is still computed on every one of the first SSIM_DENSE iterations.
SSIM_DENSE = 500


def measurement_loss(op, output: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared data-fidelity |A f − y|² over the measured entries (complex-aware).

    ``weight`` (broadcastable to y) selects the entries that count; by default the operator's measurement mask.
    """
    residual = op.A(output) - y
    squared = residual.real**2 + residual.imag**2 if residual.is_complex() else residual**2
    if weight is None:
        weight = op.measurement_mask()
    if weight is None:
        return squared.mean()
    weight = weight.to(squared.dtype).expand_as(squared)
    return (squared * weight).sum() / weight.sum().clamp_min(1.0)


def holdout_split(
    op, y: torch.Tensor, fraction: float, generator: torch.Generator | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Split the measured entries of ``y`` into a training weight and a held-out weight (``fraction`` held out).

    The split is per spatial position and shared across channels so a held-out pixel is hidden entirely.
    """
    if fraction <= 0:
        return None, None
    if not 0 < fraction < 0.5:
        raise MetadipError(f"holdout fraction must be in (0, 0.5), got {fraction}")
    base = op.measurement_mask()
    shape = (1, 1, *y.shape[-2:])
    draw = torch.rand(shape, generator=generator, device="cpu").to(y.device)
    held = (draw < fraction).to(torch.float32)
    if base is not None:
        base = base.to(device=y.device, dtype=torch.float32).expand(shape) if base.shape[1] == 1 else base.float()
        held = held * base
        train = base - held
    else:
        train = 1.0 - held
    return train, held


@dataclass
class FitResult:
    """What a DIP run returns: the reconstruction, its per-iteration history and how it ended."""

    image: torch.Tensor
    history: dict[str, list[float]]
    stop_iteration: int
    stop_reason: str
    seconds: float
    rollbacks: int = 0
    extras: dict = field(default_factory=dict)


class _Snapshot:
    """Trained tensors (network parameters, and z when it adapts) and optimiser state at a known-good
    iteration, for rollback."""

    def __init__(self, tensors: list[torch.Tensor], optimizer, loss: float) -> None:
        self.params = [p.detach().clone() for p in tensors]
        self.optimizer = copy.deepcopy(optimizer.state_dict())
        self.loss = loss

    def restore(self, tensors: list[torch.Tensor], optimizer) -> None:
        with torch.no_grad():
            for param, saved in zip(tensors, self.params, strict=True):
                param.copy_(saved)
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))


def make_optimizer(
    name: str,
    net: nn.Module,
    lr: float,
    lr_per_tensor: dict[str, float] | None = None,
    tensors: list[tuple[str, torch.Tensor]] | None = None,
    betas: tuple[float, float] | None = None,
    eps: float | None = None,
):
    """Adam (default; constants ``betas`` / ``eps``, None: torch's defaults) or SGD with momentum over
    ``tensors`` (name, tensor) — default every parameter of ``net``; ``lr_per_tensor`` (Meta-SGD inits) gives
    each tensor its own learning rate, by name, falling back to ``lr``. On the CPU these are
    :mod:`metadip.optim`'s copies of ``torch.optim.Adam`` / ``SGD`` (the same arithmetic, without the ~2 s
    ``torch._dynamo`` import that ``torch.optim``'s first use costs)."""
    name = name.lower()
    named = list(net.named_parameters()) if tensors is None else list(tensors)
    params = [p for _, p in named]
    if lr_per_tensor:
        params = [{"params": [p], "lr": float(lr_per_tensor.get(n, lr))} for n, p in named]
    if name not in optim.OPTIMIZERS:
        raise MetadipError(f"unknown optimizer {name!r}; valid: {', '.join(optim.OPTIMIZERS)}")
    return optim.make(name, params, lr, betas=betas, eps=eps)


def fit(
    net: nn.Module,
    z: torch.Tensor,
    y: torch.Tensor,
    op,
    recipe: DipRecipe = PAPER,
    *,
    iterations: int | None = None,
    stop: str | StoppingRule = "budget",
    sigma: float | None = None,
    reference: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    rollback: bool = True,
    rollback_factor: float = 4.0,
    snapshot_every: int = 10,
    holdout_fraction: float | None = None,
    track_ssim: bool = True,
    ssim_every: int = 1,
    progress: bool = False,
    logger=None,
    callback: Callable[[int, torch.Tensor, dict, torch.Tensor], None] | None = None,
    monitor: str | StoppingRule | None = None,
    holdout_weights: tuple[torch.Tensor, torch.Tensor] | None = None,
    input_builder: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FitResult:
    """Fit ``net`` so that ``A net(z) ≈ y`` and return the early-stopped reconstruction.

    Args:
        net: generator, already holding its starting weights (random or θ0), on the target device.
        z: its fixed input, 1×C×h×w.
        y: measurement (B=1), real or complex.
        op: forward operator (``A``, ``measurement_mask``, ``image_shape``).
        recipe: the online recipe (:class:`metadip.online.DipRecipe`; default the DIP paper's): optimiser, lr(s),
            Adam's betas / eps, input jitter, EMA of the outputs, what adapts and the loss — ``adapt``
            (:mod:`metadip.adaptation`): ``all`` weights (standard DIP), ``norm`` (BatchNorm affines only) or
            ``input`` (z and the BatchNorm affines; z is optimised from the given one); ``loss``: ``mse`` (the
            data fit ‖A f − y‖² on the training entries) or ``sure`` (Stein's unbiased estimate of the error,
            :func:`metadip.losses.sure_loss`, with the operator's σ — PURE, its Poisson–Gaussian form, when the
            operator has a Poisson peak: it does not reward fitting the noise; over the training entries, like the
            data fit; for noise-free measurements it is the plain data fit). The divergence probe
            goes through z when ``input_builder`` (y′ ↦ z′, a measurement-conditioned input) is given; with a
            fixed z SURE is the data fit minus σ². Its stopping rule is not used: ``stop`` is
            (``recipe.stopping_rule()`` builds the recipe's).
        iterations: the budget (maximum number of iterations); default the recipe's.
        stop: stopping rule or its name; ``budget`` runs exactly ``iterations``.
        sigma: noise std in [0, 1] units, for the discrepancy rule.
        reference: clean image, only for history PSNR/SSIM and the evaluation-only oracle rule.
        generator: the run's torch.Generator (jitter, hold-out split); seeded by the caller.
        holdout_fraction: share of measurements kept out of the loss; defaults to 0.1 for the holdout rule.
        holdout_weights: (train, held-out) measurement weights drawn by the caller with :func:`holdout_split`.
        monitor: a second rule that is only watched, never obeyed: where it *would* have stopped and what it would
            have returned land in ``FitResult.extras["monitor"]`` (evaluation runs a full budget and records the
            no-ground-truth rule's choice this way).
        ssim_every: with ``reference``, SSIM (costly: ~4 ms at 64 px) on every iteration up to
            :data:`SSIM_DENSE`, then every ``ssim_every``-th (NaN in between); PSNR is always every iteration.
    """
    iterations = recipe.iterations if iterations is None else iterations
    if iterations < 1:
        raise MetadipError(f"iterations must be a positive integer, got {iterations}")
    if ssim_every < 1:
        raise MetadipError(f"ssim_every must be >= 1, got {ssim_every}")
    reg_noise_std, ema = recipe.reg_noise_std, recipe.ema
    adapt, loss = recipe.adapt or DEFAULT_ADAPT, recipe.loss or DEFAULT_LOSS
    rule = make_stopping_rule(stop)
    if holdout_fraction is None:
        holdout_fraction = 0.1 if rule.needs_holdout else 0.0
    if rule.needs_holdout and holdout_fraction <= 0:
        raise MetadipError("the holdout rule needs holdout_fraction > 0")
    rule.reset(sigma=sigma, reference=reference)
    watcher = make_stopping_rule(monitor) if monitor is not None else None
    if watcher is not None:
        if watcher.needs_holdout and not rule.needs_holdout and holdout_fraction <= 0:
            holdout_fraction = 0.1
        watcher.reset(sigma=sigma, reference=reference)
    watcher_stop: int | None = None

    height, width = op.image_shape[-2:]
    size = (height, width)
    if holdout_weights is not None:  # drawn by the caller (e.g. before building a measurement-conditioned z)
        train_weight, held_weight = holdout_weights
    else:
        train_weight, held_weight = holdout_split(op, y, holdout_fraction, generator)
    net.train()
    adapted = set(adapted_names(net, adapt))
    trainable = [(n, p) for n, p in net.named_parameters() if n in adapted]
    for name, param in net.named_parameters():
        param.requires_grad_(name in adapted)
    if adapts_input(adapt):
        z = z.detach().clone().requires_grad_(True)
        trainable.append((Z_KEY, z))
    tensors = [p for _, p in trainable]
    opt = make_optimizer(
        recipe.optimizer, net, recipe.lr, recipe.lr_per_tensor, tensors=trainable, betas=recipe.betas, eps=recipe.eps
    )

    history: dict[str, list[float]] = {"loss": []}
    if held_weight is not None:
        history["holdout_loss"] = []
    if reference is not None:
        history["psnr"] = []
        if track_ssim:
            history["ssim"] = []

    average: torch.Tensor | None = None
    snapshot: _Snapshot | None = None
    rollbacks = 0
    stop_reason = "budget"
    stop_iteration = iterations
    best_loss = math.inf
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, desc="DIP", unit="it", dynamic_ncols=True, leave=False)
    started = time.perf_counter()
    iteration = 0
    hidden = int(getattr(net, "hidden_channels", 0))
    try:
        while iteration < iterations:
            # the meta inner loop's jitter, the same draw (an offset net's estimate channels are left alone)
            net_input = jitter(z, reg_noise_std, generator, hidden)
            opt.zero_grad(set_to_none=True)
            if loss == "sure" and has_noise(op, sigma):  # noise-free measurements: SURE is the data fit
                noise = net_input - z
                objective, output = sure_through_input(
                    op,
                    lambda source, noise=noise: net(source + noise, size=size),
                    z,
                    y,
                    sigma or 0.0,
                    generator,
                    input_builder=input_builder,
                    weight=train_weight,
                )
            else:
                output = net(net_input, size=size)
                objective = measurement_loss(op, output, y, train_weight)
            loss_value = float(objective.detach())

            spiked = not math.isfinite(loss_value) or (
                rollback and snapshot is not None and loss_value > rollback_factor * max(snapshot.loss, SPIKE_FLOOR)
            )
            if spiked:
                if snapshot is None or rollbacks >= 20:
                    stop_reason = "diverged"
                    stop_iteration = iteration
                    break
                snapshot.restore(tensors, opt)
                rollbacks += 1
                continue  # redo this iteration from the restored state (the jitter draw differs)

            objective.backward()
            opt.step()
            iteration += 1
            best_loss = min(best_loss, loss_value)
            if snapshot is None or iteration % snapshot_every == 0:
                snapshot = _Snapshot(tensors, opt, loss_value)

            current = output.detach()
            if ema > 0:
                average = current.clone() if average is None else average.mul_(ema).add_(current, alpha=1 - ema)
                estimate = average
            else:
                estimate = current
            history["loss"].append(loss_value)
            holdout_value = None
            if held_weight is not None:
                with torch.no_grad():
                    holdout_value = float(measurement_loss(op, estimate, y, held_weight))
                history["holdout_loss"].append(holdout_value)
            row = {"loss": loss_value}
            if reference is not None:
                shown = estimate.clamp(0, 1)  # what the fit returns (a net without a sigmoid output is unbounded)
                row["psnr"] = metrics.psnr(shown, reference)
                history["psnr"].append(row["psnr"])
                if track_ssim:
                    if ssim_every <= 1 or iteration <= SSIM_DENSE or iteration % ssim_every == 0:
                        row["ssim"] = metrics.ssim(shown, reference)
                    history["ssim"].append(row.get("ssim", math.nan))
            if logger is not None:
                logger.log(row, step=iteration)
            if callback is not None:
                callback(iteration, estimate, row, current)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()}, refresh=False)
            if watcher is not None and watcher_stop is None:
                if watcher.update(iteration, current, loss_value, holdout_value, estimate=estimate):
                    watcher_stop = iteration
            if rule.update(iteration, current, loss_value, holdout_value, estimate=estimate):
                stop_reason = rule.reason
                stop_iteration = iteration
                break
    finally:
        if bar is not None:
            bar.close()
        for param in net.parameters():  # frozen weights were only frozen for this run
            param.requires_grad_(True)
    seconds = time.perf_counter() - started

    if rule.best_output is not None:
        image = rule.best_output
        chosen = rule.best_iteration
    elif average is not None or iteration > 0:
        image = average if ema > 0 else current
        chosen = iteration
    else:
        raise MetadipError("DIP diverged before the first iteration (loss is not finite); check the measurement")
    extras = {"output_iteration": chosen, "best_loss": best_loss}
    if adapts_input(adapt):
        extras["adapted_input"] = z.detach()
    if watcher is not None:
        watched = watcher.best_output if watcher.best_output is not None else image
        extras["monitor"] = {
            "rule": watcher.name,
            "stop_iteration": watcher_stop,
            "reason": watcher.reason if watcher_stop is not None else "not triggered",
            "output_iteration": watcher.best_iteration if watcher.best_output is not None else chosen,
            "image": watched.detach().clamp(0, 1),
        }
    return FitResult(
        image=image.detach().clamp(0, 1),
        history=history,
        stop_iteration=stop_iteration,
        stop_reason=stop_reason,
        seconds=seconds,
        rollbacks=rollbacks,
        extras=extras,
    )
