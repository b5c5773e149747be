"""What the online DIP stage adapts — the *adaptation mode* an init is meta-trained through and shipped with.

Standard DIP adapts every weight; from a good θ0 that also fits the noise fast (the init peaks early and low).
Restricting what adapts online keeps the strong prior in the frozen part and leaves few degrees of freedom to
memorise noise with (Deep Random Projector, Li et al. CVPR 2023: optimise the input and the normalisation
affines of a frozen network). Modes:

* ``all`` — every network parameter (standard DIP; the random arm's mode);
* ``norm`` — only the BatchNorm affine parameters (scale and shift per channel, ~1–2 % of the weights);
* ``input`` — the network input z and the BatchNorm affines (DRP's recipe); z becomes a per-run parameter.

The meta-learner's inner loop (``metadip.meta.inner``) and the online loop (``metadip.dip.fit``) adapt exactly
the same set: :func:`adapted_names` is the one definition both use.
"""

from __future__ import annotations

from torch import nn

from metadip.errors import MetadipError

ADAPT_MODES = ("all", "norm", "input")
#: Key of the network input in a parameter dict when the input adapts (``input`` mode).
Z_KEY = "__z__"


def check_mode(mode: str) -> str:
    mode = str(mode).strip().lower()
    if mode not in ADAPT_MODES:
        raise MetadipError(f"unknown adaptation mode {mode!r}; valid: {', '.join(ADAPT_MODES)}")
    return mode


def norm_parameter_names(net: nn.Module) -> list[str]:
    """Names of the affine parameters of every normalisation layer (BatchNorm / GroupNorm / LayerNorm)."""
    names = []
    for module_name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
            for param_name, _ in module.named_parameters(recurse=False):
                names.append(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def adapted_names(net: nn.Module, mode: str) -> list[str]:
    """The network parameters that adapt online in ``mode`` (in ``named_parameters`` order)."""
    mode = check_mode(mode)
    every = [name for name, _ in net.named_parameters()]
    if mode == "all":
        return every
    norms = set(norm_parameter_names(net))
    if not norms:
        raise MetadipError(f"adaptation mode {mode!r} needs normalisation layers; this network has none")
    return [name for name in every if name in norms]


def adapts_input(mode: str) -> bool:
    """Whether the network input z is optimised too."""
    return check_mode(mode) == "input"
