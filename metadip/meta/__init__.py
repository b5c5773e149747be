"""Meta-learning of DIP initialisations: the functional inner loop, MAML (second/first order, Meta-SGD) and
Reptile. All three share :func:`metadip.meta.inner.inner_loop`, the online DIP step written functionally."""

from __future__ import annotations

from metadip.meta.inner import InnerConfig, InnerResult, InputPolicy, forward, inner_loop, parameter_dict
from metadip.meta.maml import MAML, resolve_loss_steps
from metadip.meta.reptile import Reptile

__all__ = [
    "MAML",
    "InnerConfig",
    "InnerResult",
    "InputPolicy",
    "Reptile",
    "forward",
    "inner_loop",
    "parameter_dict",
    "resolve_loss_steps",
]
