"""The online DIP recipe: how :func:`metadip.dip.fit` runs from an init — optimiser, learning rate(s), Adam
constants, input jitter, EMA of the outputs, iteration budget, stopping rule and its settings, what adapts, loss.

One typed object, :class:`DipRecipe`, for every place that used to spell it: a checkpoint's sidecar stores it
under ``inner`` (:meth:`DipRecipe.to_dict` writes the keys sidecars have always held, so every sidecar
metadip has written reads back to the same JSON), meta-training exports it
(:func:`metadip.pretrain.export.online_recipe`), ``reconstruct`` and ``dip.fit`` run it, and the random arm uses
:data:`PAPER`, the DIP paper's recipe.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from metadip.adaptation import check_mode
from metadip.errors import MetadipError
from metadip.optim import OPTIMIZERS
from metadip.stopping import DEFAULT_STOP, STOPPING_RULES, StoppingRule, make_stopping_rule

#: Online losses (:func:`metadip.dip.fit`): the data fit, or Stein's unbiased risk estimate.
LOSSES = ("mse", "sure")
#: What a recipe that names no adaptation mode / loss runs (every sidecar written before they existed).
DEFAULT_ADAPT = "all"
DEFAULT_LOSS = "mse"


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MetadipError(f"online recipe: {key} must be a finite number, got {value!r}")
    return float(value)


def _integer(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MetadipError(f"online recipe: {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _choice(value: Any, key: str, valid: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in valid:
        raise MetadipError(f"online recipe: unknown {key} {value!r}; valid: {', '.join(valid)}")
    return text


@dataclass(frozen=True)
class DipRecipe:
    """The online recipe an init expects (the sidecar's ``inner``). The defaults are :data:`PAPER`'s.

    optimizer: ``adam`` | ``sgd`` (momentum 0.9). lr: its learning rate; lr_per_tensor: a learning rate per
    network tensor by name (Meta-SGD inits; tensors it does not name use ``lr``). betas / eps: Adam's constants
    (None: torch's defaults, 0.9 / 0.999 and 1e-8). reg_noise_std: σ of the input jitter added to z at every
    iteration (0: none). ema: weight of the exponential moving average of the outputs that is returned (0: the
    last output). iterations: the recommended budget. stop: the recommended stopping rule
    (:mod:`metadip.stopping`); stop_options: settings per rule name, e.g. ``{"holdout": {"patience": 60}}``.
    adapt: what the optimiser moves (:mod:`metadip.adaptation`); loss: ``mse`` | ``sure`` — None: not stated,
    :data:`DEFAULT_ADAPT` / :data:`DEFAULT_LOSS` apply. meta_inner_steps: the inner-loop length K the init was
    meta-trained with (a record; nothing reads it).

    Optional fields are None when the sidecar does not hold the key, so :meth:`to_dict` writes back exactly the
    keys it was read from (in the order metadip has always written them).
    """

    optimizer: str = "adam"
    lr: float = 0.01
    reg_noise_std: float = 1.0 / 30.0
    ema: float = 0.99
    iterations: int = 3000
    stop: str = DEFAULT_STOP
    stop_options: dict[str, dict[str, Any]] | None = None
    meta_inner_steps: int | None = None
    adapt: str | None = None
    loss: str | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    lr_per_tensor: dict[str, float] | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "optimizer", _choice(self.optimizer, "optimizer", OPTIMIZERS))
        lr = _number(self.lr, "lr")
        if lr <= 0:
            raise MetadipError(f"online recipe: lr must be > 0, got {self.lr!r}")
        put(self, "lr", lr)
        jitter = _number(self.reg_noise_std, "reg_noise_std")
        if jitter < 0:
            raise MetadipError(f"online recipe: reg_noise_std must be >= 0, got {self.reg_noise_std!r}")
        put(self, "reg_noise_std", jitter)
        ema = _number(self.ema, "ema")
        if not 0 <= ema < 1:
            raise MetadipError(f"online recipe: ema must be in [0, 1), got {self.ema!r}")
        put(self, "ema", ema)
        put(self, "iterations", _integer(self.iterations, "iterations", 1))
        put(self, "stop", _choice(self.stop, "stop", STOPPING_RULES))
        if self.stop_options is not None:
            options = self.stop_options
            if not isinstance(options, Mapping) or not all(isinstance(v, Mapping) for v in options.values()):
                raise MetadipError(
                    f"online recipe: stop_options must map rule names to settings, got {self.stop_options!r}"
                )
            put(self, "stop_options", {str(rule): dict(settings) for rule, settings in options.items()})
        if self.meta_inner_steps is not None:
            put(self, "meta_inner_steps", _integer(self.meta_inner_steps, "meta_inner_steps", 0))
        if self.adapt is not None:
            try:
                put(self, "adapt", check_mode(self.adapt))
            except MetadipError as exc:
                raise MetadipError(f"online recipe: {exc}") from None
        if self.loss is not None:
            put(self, "loss", _choice(self.loss, "loss", LOSSES))
        if self.betas is not None:
            if isinstance(self.betas, (str, bytes)) or len(self.betas) != 2:
                raise MetadipError(f"online recipe: betas must be two numbers, got {self.betas!r}")
            betas = tuple(_number(b, "betas") for b in self.betas)
            if not all(0 <= b < 1 for b in betas):
                raise MetadipError(f"online recipe: betas must lie in [0, 1), got {self.betas!r}")
            put(self, "betas", betas)
        if self.eps is not None:
            eps = _number(self.eps, "eps")
            if eps <= 0:
                raise MetadipError(f"online recipe: eps must be > 0, got {self.eps!r}")
            put(self, "eps", eps)
        if self.lr_per_tensor is not None:
            if not isinstance(self.lr_per_tensor, Mapping):
                raise MetadipError("online recipe: lr_per_tensor must map tensor names to learning rates")
            rates = {str(name): _number(rate, f"lr_per_tensor[{name!r}]") for name, rate in self.lr_per_tensor.items()}
            if any(rate <= 0 for rate in rates.values()):
                raise MetadipError("online recipe: every lr_per_tensor value must be > 0")
            put(self, "lr_per_tensor", rates)

    # -- the sidecar form ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON the sidecar holds under ``inner``: every field in declaration order, the optional ones only
        when set; ``betas`` as a list."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "betas":
                value = list(value)
            elif f.name == "stop_options":
                value = {rule: dict(settings) for rule, settings in value.items()}
            elif f.name == "lr_per_tensor":
                value = dict(value)
            data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DipRecipe:
        """Read a sidecar's ``inner``. A key it lacks takes :data:`PAPER`'s value (as ``reconstruct`` always
        did); an unknown key is a MetadipError."""
        if not isinstance(data, Mapping):
            raise MetadipError(f"online recipe must be a mapping, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise MetadipError(f"unknown online recipe key(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        return cls(**dict(data))

    # -- using it ------------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> DipRecipe:
        """A copy with ``changes`` (validated like the original)."""
        return dataclasses.replace(self, **changes)

    def override(self, *, iterations: int | None = None, lr: float | None = None, loss: str | None = None) -> DipRecipe:
        """The recipe with a caller's overrides (None: keep the recipe's): a learning rate replaces the per-tensor
        ones too."""
        changes: dict[str, Any] = {}
        if iterations is not None:
            changes["iterations"] = iterations
        if lr is not None:
            changes.update(lr=lr, lr_per_tensor=None)
        if loss is not None:
            changes["loss"] = loss
        return self.replace(**changes) if changes else self

    def stopping_rule(self, name: str | StoppingRule | None = None) -> StoppingRule:
        """The rule ``name`` (default: the recipe's ``stop``) with the recipe's settings for it; a rule object is
        returned as is."""
        if isinstance(name, StoppingRule):
            return name
        chosen = name or self.stop
        return make_stopping_rule(chosen, **(self.stop_options or {}).get(chosen, {}))


#: The DIP paper's recipe (Ulyanov et al.): Adam lr 0.01, input jitter σ = 1/30, EMA 0.99 of the outputs; the
#: 3000-iteration budget and the hold-out stopping rule are metadip's. The random-init arm runs it.
PAPER = DipRecipe()
