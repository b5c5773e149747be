"""Generator networks f_θ(z) for Deep Image Prior: the Ulyanov skip net and the Deep Decoder.

```python
net = build_generator("skip-slim", out_channels=3)     # or "skip", "deep-decoder", or a config dict
z = make_input(InputRecipe(channels=net.in_channels), net.input_shape(H, W))
x = net(z, size=(H, W))                                 # 1×3×H×W in [0, 1]
build_generator(net.config)                             # the same architecture again
```

Output channels: 1 (grey), 3 (RGB), or 2 for complex images (real/imaginary parts). Complex outputs are not
confined to [0, 1], so build them with ``need_sigmoid=False`` (linear 1×1 head); :func:`build_generator` does
that by default when ``out_channels == 2`` unless ``need_sigmoid`` is given explicitly.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from torch import Tensor, nn

from metadip.errors import MetadipError
from metadip.generators.deep_decoder import DeepDecoder
from metadip.generators.inputs import INPUT_KINDS, InputRecipe, jitter, make_input
from metadip.generators.skip import SkipNet

__all__ = [
    "DEFAULT_ARCH",
    "INPUT_KINDS",
    "KINDS",
    "PRESETS",
    "DeepDecoder",
    "InputRecipe",
    "SkipNet",
    "build_generator",
    "count_parameters",
    "default_input_recipe",
    "jitter",
    "make_input",
    "prepare_for_speed",
    "use_channels_last",
]

KINDS: dict[str, type[nn.Module]] = {"skip": SkipNet, "deep-decoder": DeepDecoder}

PRESETS: dict[str, dict[str, Any]] = {
    # Ulyanov et al. 2018, the DIP denoising / inpainting net: 5 scales × 128, 4 skip channels.
    "skip": {
        "kind": "skip",
        "in_channels": 32,
        "num_scales": 5,
        "channels_down": 128,
        "channels_up": 128,
        "channels_skip": 4,
        "upsample_mode": "bilinear",
        "downsample_mode": "stride",
        "act": "leakyrelu",
        "pad_mode": "reflection",
        "need_bias": True,
        "need_1x1_up": True,
    },
    # The same design, 4 scales × 32 channels: ~10× cheaper per iteration on CPU. The default.
    "skip-slim": {
        "kind": "skip",
        "in_channels": 32,
        "num_scales": 4,
        "channels_down": 32,
        "channels_up": 32,
        "channels_skip": 4,
        "upsample_mode": "bilinear",
        "downsample_mode": "stride",
        "act": "leakyrelu",
        "pad_mode": "reflection",
        "need_bias": True,
        "need_1x1_up": True,
    },
    # Heckel & Hand 2019: 5 layers × 64 channels, 1×1 convs, bilinear upsampling, ReLU, channel norm.
    "deep-decoder": {
        "kind": "deep-decoder",
        "num_layers": 5,
        "channels": 64,
        "kernel_size": 1,
        "upsample_mode": "bilinear",
        "act": "relu",
        "pad_mode": "reflection",
        "need_bias": False,
    },
}

DEFAULT_ARCH = "skip-slim"


def _valid_keys(cls: type[nn.Module]) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def build_generator(
    arch: str | dict = DEFAULT_ARCH, out_channels: int | None = None, **overrides: Any
) -> nn.Module:
    """Build a generator from a preset name or a config dict (``net.config``), with keyword overrides.

    ``out_channels`` defaults to the config's value, else 3. A dict whose ``name`` is a preset may be partial
    (missing keys come from the preset); a dict with only ``kind`` uses that class's defaults.
    """
    if isinstance(arch, str):
        key = arch.strip().lower()
        if key not in PRESETS:
            raise MetadipError(f"unknown generator {arch!r}; presets: {', '.join(PRESETS)}")
        cfg = {"name": key, **copy.deepcopy(PRESETS[key])}
    elif isinstance(arch, dict):
        given = copy.deepcopy(arch)
        name = str(given.get("name", "custom"))
        kind = given.get("kind")
        base: dict[str, Any] = {}
        if name in PRESETS and (kind is None or PRESETS[name]["kind"] == kind):
            base = copy.deepcopy(PRESETS[name])
        elif kind is None:
            raise MetadipError(
                f"generator config needs a 'kind' ({', '.join(KINDS)}) or a preset 'name' "
                f"({', '.join(PRESETS)})"
            )
        cfg = {**base, **given, "name": name}
    else:
        raise MetadipError(f"generator must be a preset name or a config dict, got {type(arch).__name__}")
    cfg.update(overrides)
    # A per-scale list given as an override sets the depth unless the depth is overridden too.
    for depth_key, list_keys in (
        ("num_scales", ("channels_down", "channels_up", "channels_skip", "kernel_down", "kernel_up")),
        ("num_layers", ("channels",)),
    ):
        lengths = [len(overrides[k]) for k in list_keys if isinstance(overrides.get(k), (list, tuple))]
        if lengths and depth_key not in overrides and depth_key in cfg:
            cfg[depth_key] = lengths[0]
    if out_channels is not None:
        cfg["out_channels"] = out_channels
    cfg.setdefault("out_channels", 3)
    if "need_sigmoid" not in cfg:  # presets leave it open: sigmoid for images, linear for real/imag pairs
        cfg["need_sigmoid"] = int(cfg["out_channels"]) != 2
    kind = str(cfg.pop("kind"))
    if kind not in KINDS:
        raise MetadipError(f"unknown generator kind {kind!r}; valid: {', '.join(KINDS)}")
    cls = KINDS[kind]
    valid = _valid_keys(cls)
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise MetadipError(
            f"unknown {kind} generator option(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    try:
        return cls(**cfg)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, MetadipError):
            raise
        raise MetadipError(f"invalid {kind} generator config: {exc}") from None


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def default_input_recipe(net_or_config: nn.Module | dict, seed: int = 0) -> InputRecipe:
    """The DIP paper's input for this architecture: U(0, 1)·0.1 with the network's input channels."""
    config = net_or_config if isinstance(net_or_config, dict) else net_or_config.config
    if "in_channels" not in config:
        config = build_generator(config).config
    return InputRecipe(kind="uniform", channels=int(config["in_channels"]), scale=0.1, seed=seed)


# channels_last (NHWC), measured on a 2-core Xeon with torch 2.13 (evaluate/results/speed.md): faster for
# every preset at every size measured, 64–256 px (1.08–1.18× for the skip nets, 1.5–1.6× for the deep
# decoder), and in a spot check at 32 px (1.04× skip-slim, 1.2× deep decoder). Smaller images were not
# measured and stay NCHW. On CUDA it is the usual cuDNN recommendation; not measured here (no GPU).
CHANNELS_LAST_MIN_PIXELS_CPU = 32 * 32


def use_channels_last(device: str | torch.device, height: int, width: int) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and height * width >= CHANNELS_LAST_MIN_PIXELS_CPU


def prepare_for_speed(
    net: nn.Module, z: Tensor, device: str | torch.device | None = None, channels_last: bool | None = None
) -> tuple[nn.Module, Tensor]:
    """Move ``net`` (in place) and ``z`` to ``device`` and pick the faster memory format.

    ``channels_last=None`` decides with :func:`use_channels_last` from the output size (z's size for the skip
    net, the upsampled size for the deep decoder). Returns ``(net, z)``; outputs are numerically the same up
    to floating-point reordering.
    """
    device = torch.device(device) if device is not None else z.device
    if channels_last is None:
        factor = getattr(net, "factor", 1) if isinstance(net, DeepDecoder) else 1
        channels_last = use_channels_last(device, z.shape[-2] * factor, z.shape[-1] * factor)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(device=device, memory_format=fmt)
    z = z.to(device=device).contiguous(memory_format=fmt)
    return net, z
