"""Ulyanov et al. (2018) "skip" encoder–decoder, the Deep Image Prior network.

Layer order follows the reference ``models/skip.py`` of the deep-image-prior repository, so the default
configuration (5 scales × 128 channels, 4 skip channels, 32-channel input, RGB output) has exactly 2,217,831
parameters and registers them in the reference's order. Per scale ``i``::

    skip_i   = act(BN(conv_k1(x)))                            # n_skip[i] channels, full resolution
    d        = act(BN(conv_k3(act(BN(conv_k3_stride2(x))))))  # n_down[i] channels, half resolution
    d        = up2(scale_{i+1}(d))   (deepest scale: up2(d))
    scale_i  = act(BN(conv_1x1(act(BN(conv_k3(BN(cat(skip_i, d))))))))   # n_up[i] channels

and the head is ``sigmoid(conv_1x1(scale_0(z)))``. ``residual=True``: ``sigmoid(logit(z[:C]) +
conv_1x1(scale_0(z)))`` for a measurement-conditioned z whose first C channels are an image estimate;
``offset=True``: the same sum, but the body sees only z's noise channels (from channel 2C on — the estimate and
the normaliser are not its input), so the network is random DIP's around a fixed estimate. Both start with a zero
head, i.e. at the estimate. BatchNorm always normalises with batch statistics (``track_running_stats=False``):
DIP runs on a batch of one in training mode, and clones made with ``torch.func.functional_call`` then share no
state. Any image size works: ``forward`` reflect-pads ``z`` to a
multiple of ``2**num_scales`` and crops the output back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metadip.errors import MetadipError

ACTIVATIONS = ("leakyrelu", "relu", "elu", "silu", "none")
PAD_MODES = ("reflection", "zero", "replicate")
UPSAMPLE_MODES = ("bilinear", "nearest")
DOWNSAMPLE_MODES = ("stride", "avg", "max")

_PAD_ALIASES = {
    "reflection": "reflection",
    "reflect": "reflection",
    "zero": "zero",
    "zeros": "zero",
    "replicate": "replicate",
}
_TORCH_PAD = {"reflection": "reflect", "zero": "zeros", "replicate": "replicate"}
_ACT_ALIASES = {
    "leakyrelu": "leakyrelu",
    "leaky_relu": "leakyrelu",
    "relu": "relu",
    "elu": "elu",
    "silu": "silu",
    "swish": "silu",
    "none": "none",
    "identity": "none",
}


RESIDUAL_EPS = 1e-3
#: With ``offset=True`` z starts with this many image-sized blocks that the network body does not see: the image
#: estimate (its logit is the output's offset) and the normaliser (metadip.conditioning's layout).
OFFSET_HIDDEN = 2


def canonical_pad(pad_mode: str) -> str:
    key = str(pad_mode).lower()
    if key not in _PAD_ALIASES:
        raise MetadipError(f"unknown pad mode {pad_mode!r}; valid: {', '.join(PAD_MODES)}")
    return _PAD_ALIASES[key]


def canonical_act(act: str) -> str:
    key = str(act).lower()
    if key not in _ACT_ALIASES:
        raise MetadipError(f"unknown activation {act!r}; valid: {', '.join(ACTIVATIONS)}")
    return _ACT_ALIASES[key]


def make_activation(act: str) -> nn.Module:
    """In place where possible (always applied to a fresh BatchNorm / upsampling output, whose backward does
    not need it): ~3–5 % faster per DIP iteration on CPU, and it works under ``functional_call`` with
    ``create_graph=True``."""
    act = canonical_act(act)
    if act == "leakyrelu":
        return nn.LeakyReLU(0.2, inplace=True)
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "elu":
        return nn.ELU(inplace=True)
    if act == "silu":
        return nn.SiLU()
    return nn.Identity()


def make_conv(
    in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, bias: bool = True, pad_mode: str = "reflection"
) -> nn.Conv2d:
    """A 'same' convolution (odd kernels); the padding is done by the conv itself (``padding_mode``), and
    1×1 convolutions get no padding layer at all (the reference adds a no-op ``ReflectionPad2d(0)``)."""
    if kernel % 2 != 1:
        raise MetadipError(f"kernel sizes must be odd, got {kernel}")
    pad = (kernel - 1) // 2
    mode = _TORCH_PAD[canonical_pad(pad_mode)] if pad > 0 else "zeros"
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=pad, bias=bias, padding_mode=mode)


def batch_norm(channels: int, affine: bool = True) -> nn.BatchNorm2d:
    """BatchNorm that always uses the statistics of the current batch and holds no buffers."""
    return nn.BatchNorm2d(channels, affine=affine, track_running_stats=False)


def _per_scale(value: Any, n: int, what: str) -> list[int]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [int(value)] * n
    values = [int(v) for v in value]
    if len(values) != n:
        raise MetadipError(f"{what} has {len(values)} entries but the network has {n} scales")
    return values


def reflect_pad(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Reflection padding of any size: pads in rounds when a side is larger than the image minus one
    (``F.pad`` with ``mode='reflect'`` needs pad < size)."""
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        if (h == 1 and (top or bottom)) or (w == 1 and (left or right)):  # nothing to reflect
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        t, b = min(top, h - 1), min(bottom, h - 1)
        l, r = min(left, w - 1), min(right, w - 1)
        x = F.pad(x, (l, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - l, right - r
    return x


class _Scale(nn.Module):
    """One scale of the skip net; ``inner`` is the next (coarser) scale or None at the deepest one.

    Submodules are registered in the reference's order (skip, down, inner, concat BN, up), so the parameter
    list of the whole net lines up one-to-one with the reference ``nn.Sequential`` implementation.
    """

    def __init__(
        self,
        in_ch: int,
        n_down: int,
        n_up: int,
        n_skip: int,
        inner: _Scale | None,
        inner_out: int,
        *,
        k_down: int,
        k_up: int,
        k_skip: int,
        act: str,
        pad_mode: str,
        bias: bool,
        upsample_mode: str,
        downsample_mode: str,
        need_1x1_up: bool,
    ) -> None:
        super().__init__()
        if n_skip > 0:
            self.skip = nn.Sequential(
                make_conv(in_ch, n_skip, k_skip, bias=bias, pad_mode=pad_mode),
                batch_norm(n_skip),
                make_activation(act),
            )
        else:
            self.skip = None
        if downsample_mode == "stride":
            first = [make_conv(in_ch, n_down, k_down, stride=2, bias=bias, pad_mode=pad_mode)]
        else:
            pool = nn.AvgPool2d(2, 2) if downsample_mode == "avg" else nn.MaxPool2d(2, 2)
            first = [make_conv(in_ch, n_down, k_down, bias=bias, pad_mode=pad_mode), pool]
        self.down = nn.Sequential(
            *first,
            batch_norm(n_down),
            make_activation(act),
            make_conv(n_down, n_down, k_down, bias=bias, pad_mode=pad_mode),
            batch_norm(n_down),
            make_activation(act),
        )
        self.inner = inner
        deep_out = inner_out if inner is not None else n_down
        self.concat_bn = batch_norm(n_skip + deep_out)
        up: list[nn.Module] = [
            make_conv(n_skip + deep_out, n_up, k_up, bias=bias, pad_mode=pad_mode),
            batch_norm(n_up),
            make_activation(act),
        ]
        if need_1x1_up:
            up += [
                make_conv(n_up, n_up, 1, bias=bias, pad_mode=pad_mode),
                batch_norm(n_up),
                make_activation(act),
            ]
        self.up = nn.Sequential(*up)
        self.upsample_mode = upsample_mode

    def forward(self, x: Tensor) -> Tensor:
        d = self.down(x)
        if self.inner is not None:
            d = self.inner(d)
        if self.upsample_mode == "bilinear":
            d = F.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            d = F.interpolate(d, scale_factor=2.0, mode="nearest")
        if self.skip is not None:
            d = torch.cat([self.skip(x), d], dim=1)
        return self.up(self.concat_bn(d))


class SkipNet(nn.Module):
    """The DIP "skip" encoder–decoder. ``net(z, size=(H, W))`` with ``z`` of shape ``B×in_channels×H×W``.

    ``channels_down`` / ``channels_up`` / ``channels_skip`` are per-scale lists (finest first) or ints (then
    ``num_scales`` says how many scales, default 5). Kernel sizes may also be per-scale lists.
    For complex (2-channel real/imag) outputs pass ``need_sigmoid=False``: the head is then a linear 1×1 conv.
    """

    kind = "skip"

    def __init__(
        self,
        in_channels: int = 32,
        out_channels: int = 3,
        channels_down: int | Sequence[int] = 128,
        channels_up: int | Sequence[int] = 128,
        channels_skip: int | Sequence[int] = 4,
        num_scales: int | None = None,
        kernel_down: int | Sequence[int] = 3,
        kernel_up: int | Sequence[int] = 3,
        kernel_skip: int = 1,
        upsample_mode: str = "bilinear",
        downsample_mode: str = "stride",
        act: str = "leakyrelu",
        pad_mode: str = "reflection",
        need_sigmoid: bool = True,
        need_bias: bool = True,
        need_1x1_up: bool = True,
        residual: bool = False,
        offset: bool = False,
        name: str = "custom",
    ) -> None:
        super().__init__()
        lists = [
            v
            for v in (channels_down, channels_up, channels_skip, kernel_down, kernel_up)
            if not isinstance(v, (int, float))
        ]
        if num_scales is None:
            num_scales = len(lists[0]) if lists else 5
        num_scales = int(num_scales)
        if num_scales < 1:
            raise MetadipError(f"num_scales must be at least 1, got {num_scales}")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise MetadipError("in_channels and out_channels must be positive")
        down = _per_scale(channels_down, num_scales, "channels_down")
        up = _per_scale(channels_up, num_scales, "channels_up")
        skip = _per_scale(channels_skip, num_scales, "channels_skip")
        k_down = _per_scale(kernel_down, num_scales, "kernel_down")
        k_up = _per_scale(kernel_up, num_scales, "kernel_up")
        if min(down) < 1 or min(up) < 1 or min(skip) < 0:
            raise MetadipError("channel counts must be positive (skip channels may be 0)")
        upsample_mode = str(upsample_mode).lower()
        if upsample_mode not in UPSAMPLE_MODES:
            raise MetadipError(f"unknown upsample mode {upsample_mode!r}; valid: {', '.join(UPSAMPLE_MODES)}")
        downsample_mode = str(downsample_mode).lower()
        if downsample_mode not in DOWNSAMPLE_MODES:
            raise MetadipError(
                f"unknown downsample mode {downsample_mode!r}; valid: {', '.join(DOWNSAMPLE_MODES)}"
            )
        pad_mode = canonical_pad(pad_mode)
        act = canonical_act(act)

        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.num_scales = num_scales
        self.need_sigmoid = bool(need_sigmoid)
        self._config = {
            "name": str(name),
            "kind": self.kind,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "channels_down": down,
            "channels_up": up,
            "channels_skip": skip,
            "num_scales": num_scales,
            "kernel_down": k_down,
            "kernel_up": k_up,
            "kernel_skip": int(kernel_skip),
            "upsample_mode": upsample_mode,
            "downsample_mode": downsample_mode,
            "act": act,
            "pad_mode": pad_mode,
            "need_sigmoid": self.need_sigmoid,
            "need_bias": bool(need_bias),
            "need_1x1_up": bool(need_1x1_up),
            "residual": bool(residual),
            **({"offset": True} if offset else {}),  # only when set: older configs (and their hashes) stay as they were
        }
        if residual and offset:
            raise MetadipError("residual and offset are two ways to use z's image estimate: choose one")
        if offset and self.in_channels <= OFFSET_HIDDEN * self.out_channels:
            raise MetadipError(
                f"offset=True needs more than {OFFSET_HIDDEN}×out_channels input channels "
                "(image estimate and normaliser, then the network's own noise channels)"
            )
        if offset and not self.need_sigmoid:
            raise MetadipError("offset=True needs a sigmoid output (the network's output is added to a logit)")
        if residual and self.in_channels < self.out_channels:
            raise MetadipError("residual=True needs at least out_channels input channels")
        if residual and not self.need_sigmoid:
            raise MetadipError("residual=True needs a sigmoid output (the correction is added to a logit)")
        self.residual = bool(residual)
        self.offset = bool(offset)
        #: leading z channels the network body never sees (offset: the image estimate and the normaliser)
        self.hidden_channels = OFFSET_HIDDEN * self.out_channels if self.offset else 0

        inner: _Scale | None = None
        for i in reversed(range(num_scales)):
            in_ch = self.in_channels - self.hidden_channels if i == 0 else down[i - 1]
            inner = _Scale(
                in_ch,
                down[i],
                up[i],
                skip[i],
                inner,
                up[i + 1] if i + 1 < num_scales else 0,
                k_down=k_down[i],
                k_up=k_up[i],
                k_skip=int(kernel_skip),
                act=act,
                pad_mode=pad_mode,
                bias=bool(need_bias),
                upsample_mode=upsample_mode,
                downsample_mode=downsample_mode,
                need_1x1_up=bool(need_1x1_up),
            )
        self.body = inner
        self.head = make_conv(up[0], self.out_channels, 1, bias=bool(need_bias), pad_mode=pad_mode)
        if self.residual or self.offset:
            # Start as the identity on the image channels of z: the head learns a correction in logit space.
            for module in self.head.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.zeros_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    @property
    def config(self) -> dict:
        """JSON-serialisable arguments; ``build_generator(net.config)`` rebuilds this architecture."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @property
    def factor(self) -> int:
        return 2**self.num_scales

    def input_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape of ``z`` for an ``height × width`` output: the image size itself (padding happens inside)."""
        return (self.in_channels, int(height), int(width))

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size ``z`` is padded to: a multiple of ``2**num_scales``, and at least twice that so the
        deepest scale is 2×2 (a 3×3 reflection-padded conv cannot run on 1×1)."""
        f = self.factor
        return (max(math.ceil(height / f) * f, 2 * f), max(math.ceil(width / f) * f, 2 * f))

    def forward(self, z: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if z.dim() != 4 or z.shape[1] != self.in_channels:
            raise MetadipError(f"skip net expects z of shape B×{self.in_channels}×H×W, got {tuple(z.shape)}")
        h, w = z.shape[-2:]
        out_h, out_w = (h, w) if size is None else (int(size[0]), int(size[1]))
        if out_h > h or out_w > w or out_h < 1 or out_w < 1:
            raise MetadipError(f"output size {out_h}×{out_w} does not fit in z of size {h}×{w}")
        ph, pw = self.padded_size(h, w)
        top, left = (ph - h) // 2, (pw - w) // 2
        x = z
        if (ph, pw) != (h, w):
            x = reflect_pad(z, top, ph - h - top, left, pw - w - left)
        x = self.head(self.body(x[:, self.hidden_channels :]))
        if self.residual or self.offset:
            # Measurement-conditioned inputs carry an image estimate in their first out_channels channels;
            # the network predicts a correction of its logit (see metadip.conditioning). With ``offset`` the
            # network sees only z's noise channels, so it is random DIP's network around the estimate.
            base = z[:, : self.out_channels]
            if (ph, pw) != (h, w):
                base = reflect_pad(base, top, ph - h - top, left, pw - w - left)
            x = torch.sigmoid(x + torch.logit(base.clamp(RESIDUAL_EPS, 1 - RESIDUAL_EPS)))
        elif self.need_sigmoid:
            x = torch.sigmoid(x)
        if (ph, pw) != (out_h, out_w):
            x = x[:, :, top : top + out_h, left : left + out_w]
        return x

    def extra_repr(self) -> str:
        c = self._config
        return (
            f"name={c['name']!r}, in={c['in_channels']}, out={c['out_channels']}, scales={c['num_scales']}, "
            f"down={c['channels_down']}, up={c['channels_up']}, skip={c['channels_skip']}"
        )
