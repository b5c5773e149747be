"""Early-stopping rules for DIP.

DIP fits natural structure before noise, so *when* to stop is the regulariser. Every rule sees, after each
iteration, the current reconstruction (the EMA output when EMA is on), the training loss and, when part of the
measurements is held out, the loss on those. A rule says whether to stop and may keep the best iterate it saw.

Rules without ground truth: ``wmv`` (ES-WMV, Wang et al. TMLR 2023), ``holdout`` (held-out measurements),
``discrepancy`` (Morozov's discrepancy principle), ``budget`` (fixed number of iterations).
``oracle`` needs the clean image and exists for evaluation only.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch

from metadip import metrics
from metadip.errors import MetadipError

STOPPING_RULES = ("wmv", "holdout", "discrepancy", "budget", "oracle")
DEFAULT_STOP = "holdout"


@dataclass
class StoppingRule:
    """Base rule: never stops early; the loop's final output is the answer."""

    name: str = "budget"
    best_iteration: int | None = field(default=None, init=False)
    best_output: torch.Tensor | None = field(default=None, init=False)
    reason: str = field(default="budget", init=False)

    needs_holdout: bool = field(default=False, init=False)
    needs_reference: bool = field(default=False, init=False)

    def reset(self, *, sigma: float | None = None, reference: torch.Tensor | None = None) -> None:
        """Prepare for a new run. ``sigma`` is the noise std in [0, 1] units (None = unknown)."""
        self.best_iteration = None
        self.best_output = None
        self.reason = "budget"

    def update(
        self,
        iteration: int,
        output: torch.Tensor,
        loss: float,
        holdout_loss: float | None = None,
        estimate: torch.Tensor | None = None,
    ) -> bool:
        """Record iteration ``iteration`` (1-based); return True to stop now.

        ``output`` is the network's raw output of this iteration, ``estimate`` the reconstruction the loop would
        return now (the EMA of outputs when EMA is on; defaults to ``output``). Rules keep ``estimate``.
        """
        return False

    def _keep(self, iteration: int, estimate: torch.Tensor) -> None:
        self.best_iteration = iteration
        self.best_output = estimate.detach().clone()


class Budget(StoppingRule):
    """Run exactly the requested number of iterations."""

    def __init__(self) -> None:
        super().__init__(name="budget")


class WindowedVariance(StoppingRule):
    """ES-WMV: variance of the last ``window`` outputs around their mean; stop once ``patience`` iterations pass
    without a new minimum and return the output at the minimum (Wang, Li, Zhuang, Chen, Liang, Sun 2023)."""

    def __init__(self, window: int = 50, patience: int = 150, min_iterations: int = 0) -> None:
        super().__init__(name="wmv")
        if window < 2 or patience < 1:
            raise MetadipError("wmv needs window >= 2 and patience >= 1")
        self.window = window
        self.patience = patience
        self.min_iterations = min_iterations

    def reset(self, *, sigma=None, reference=None) -> None:
        super().reset()
        self._outputs: deque[torch.Tensor] = deque(maxlen=self.window)
        self._sum: torch.Tensor | None = None
        self._sum_sq: float = 0.0
        self.best_variance = math.inf
        self.variances: list[float] = []

    def update(self, iteration, output, loss, holdout_loss=None, estimate=None) -> bool:
        estimate = output if estimate is None else estimate
        current = output.detach()
        if len(self._outputs) == self.window:
            oldest = self._outputs[0]
            self._sum = self._sum - oldest
            self._sum_sq -= float(torch.sum(oldest.double() ** 2))
        self._outputs.append(current.clone())
        self._sum = current.clone().double() if self._sum is None else self._sum + current.double()
        self._sum_sq += float(torch.sum(current.double() ** 2))
        if len(self._outputs) < self.window:
            self.variances.append(math.nan)
            return False
        count = len(self._outputs)
        mean_sq = float(torch.sum(self._sum**2)) / (count * count)
        variance = max(self._sum_sq / count - mean_sq, 0.0) / current.numel()
        self.variances.append(variance)
        if variance < self.best_variance:
            self.best_variance = variance
            self._keep(iteration, estimate)
        elif iteration >= self.min_iterations and iteration - self.best_iteration >= self.patience:
            self.reason = "wmv"
            return True
        return False


class HoldoutValidation(StoppingRule):
    """Stop when the error on held-out measurements (kept out of the loss) stops falling; return the output at
    the smoothed minimum. Works for any operator and unknown noise."""

    def __init__(self, patience: int = 150, smoothing: float = 0.9) -> None:
        super().__init__(name="holdout")
        self.patience = patience
        self.smoothing = smoothing
        self.needs_holdout = True

    def reset(self, *, sigma=None, reference=None) -> None:
        super().reset()
        self._smoothed: float | None = None
        self._best = math.inf

    def update(self, iteration, output, loss, holdout_loss=None, estimate=None) -> bool:
        estimate = output if estimate is None else estimate
        if holdout_loss is None or not math.isfinite(holdout_loss):
            return False
        if self._smoothed is None:
            self._smoothed = holdout_loss
        else:
            self._smoothed = self.smoothing * self._smoothed + (1 - self.smoothing) * holdout_loss
        if self._smoothed < self._best:
            self._best = self._smoothed
            self._keep(iteration, estimate)
        elif iteration - self.best_iteration >= self.patience:
            self.reason = "holdout"
            return True
        return False


class Discrepancy(StoppingRule):
    """Morozov's discrepancy principle: stop once the mean squared residual ≤ τ·σ² (‖A f − y‖² ≤ τ·m·σ²)."""

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__(name="discrepancy")
        if tau <= 0:
            raise MetadipError("discrepancy needs tau > 0")
        self.tau = tau

    def reset(self, *, sigma=None, reference=None) -> None:
        super().reset()
        if sigma is None or sigma <= 0:
            raise MetadipError(
                "the discrepancy rule needs a noise level: give sigma in the operator spec, or use --stop wmv/holdout"
            )
        self.threshold = self.tau * sigma * sigma

    def update(self, iteration, output, loss, holdout_loss=None, estimate=None) -> bool:
        estimate = output if estimate is None else estimate
        if loss <= self.threshold:
            self._keep(iteration, estimate)
            self.reason = "discrepancy"
            return True
        return False


class Oracle(StoppingRule):
    """EVALUATION ONLY: needs the clean image. Keeps the highest-PSNR iterate; stops after ``patience`` iterations
    without improvement."""

    def __init__(self, patience: int = 300) -> None:
        super().__init__(name="oracle")
        self.patience = patience
        self.needs_reference = True

    def reset(self, *, sigma=None, reference=None) -> None:
        super().reset()
        if reference is None:
            raise MetadipError(
                "the oracle rule needs the clean image (--reference); it is for evaluation only"
            )
        self._reference = reference
        self._best = -math.inf

    def update(self, iteration, output, loss, holdout_loss=None, estimate=None) -> bool:
        estimate = output if estimate is None else estimate
        mse = float(torch.mean((estimate.detach() - self._reference) ** 2))
        score = -mse
        if score > self._best:
            self._best = score
            self._keep(iteration, estimate)
        elif iteration - self.best_iteration >= self.patience:
            self.reason = "oracle"
            return True
        return False


class Converged(StoppingRule):
    """EVALUATION ONLY: run until the reference PSNR has passed its peak — "run each arm to convergence".

    Keeps the highest-PSNR iterate. An iteration counts as progress when its PSNR beats the last progress level
    by more than ``min_gain_db``; the run stops once ``max(patience, fraction × iteration)`` iterations passed
    without progress (so a curve still creeping up late gets a window proportional to its age). The caller's
    iteration budget is the hard cap; ``converged`` says whether this rule, not the cap, ended the run."""

    def __init__(self, patience: int = 500, fraction: float = 0.5, min_gain_db: float = 0.01) -> None:
        super().__init__(name="converged")
        if int(patience) < 1 or not 0 <= float(fraction) < 1 or float(min_gain_db) < 0:
            raise MetadipError("converged: need patience >= 1, 0 <= fraction < 1 and min_gain_db >= 0")
        self.patience = int(patience)
        self.fraction = float(fraction)
        self.min_gain_db = float(min_gain_db)
        self.needs_reference = True

    def window(self, iteration: int) -> int:
        """Iterations without progress that end a run at ``iteration``."""
        return max(self.patience, int(self.fraction * iteration))

    def reset(self, *, sigma=None, reference=None) -> None:
        super().reset()
        if reference is None:
            raise MetadipError("the converged rule needs the clean image; it is for evaluation only")
        self._reference = reference
        self._best = -math.inf
        self._level = -math.inf
        self._progress_iteration = 0
        self.converged = False

    def score(self, estimate: torch.Tensor) -> float:
        return metrics.psnr(estimate.clamp(0, 1), self._reference)

    @property
    def last_progress_iteration(self) -> int:
        """The last iteration that counted as progress (0 before the first)."""
        return self._progress_iteration

    def observe(self, iteration: int, psnr: float) -> bool:
        """The rule on a bare PSNR value (what :meth:`update` feeds it); True = stop now."""
        if psnr > self._level + self.min_gain_db or self._progress_iteration == 0:
            self._level = psnr
            self._progress_iteration = iteration
        if iteration - self._progress_iteration >= self.window(iteration):
            self.reason = "converged"
            self.converged = True
            return True
        return False

    def update(self, iteration, output, loss, holdout_loss=None, estimate=None) -> bool:
        estimate = output if estimate is None else estimate
        psnr = self.score(estimate)
        if psnr > self._best:
            self._best = psnr
            self._keep(iteration, estimate)
        return self.observe(iteration, psnr)


def replay(
    curve, *, patience: int = 500, fraction: float = 0.5, min_gain_db: float = 0.01
) -> tuple[int | None, int]:
    """:class:`Converged` replayed on a PSNR ``curve``: (the 1-based iteration where it stops, None if it runs to
    the end; the last iteration that counted as progress). For a run cut at its cap, ``len(curve) − last
    progress < patience`` means it was still improving."""
    rule = Converged(patience, fraction, min_gain_db)
    rule.reset(reference=torch.zeros(1))
    for index, value in enumerate(curve):
        if rule.observe(index + 1, float(value)):
            return index + 1, rule.last_progress_iteration
    return None, rule.last_progress_iteration


def converged_stop_iteration(curve, **options) -> int | None:
    """Where :class:`Converged` stops on a PSNR ``curve`` (1-based iteration), None if it runs to the end."""
    return replay(curve, **options)[0]


def make_stopping_rule(name: str | StoppingRule, **options) -> StoppingRule:
    """Build a rule by name (``wmv``, ``holdout``, ``discrepancy``, ``budget``, ``oracle``) with its options."""
    if isinstance(name, StoppingRule):
        return name
    factories = {
        "wmv": WindowedVariance,
        "holdout": HoldoutValidation,
        "discrepancy": Discrepancy,
        "budget": Budget,
        "oracle": Oracle,
        "converged": Converged,
    }
    key = str(name).lower()
    if key not in factories:
        raise MetadipError(f"unknown stopping rule {name!r}; valid: {', '.join(STOPPING_RULES)}")
    try:
        return factories[key](**options)
    except TypeError as exc:
        raise MetadipError(f"bad options for stopping rule {key!r}: {exc}") from None
