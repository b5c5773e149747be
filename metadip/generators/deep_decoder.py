"""Deep Decoder (Heckel & Hand, ICLR 2019): an under-parameterised, convolution-free image generator.

Each of the ``L`` layers is ``conv 1×1 → bilinear upsample ×2 (not after the last layer) → ReLU →
channel normalisation`` (BatchNorm, affine, batch statistics), followed by a 1×1 conv to the output
channels and a sigmoid. The input ``z`` is a small tensor of ``channels[0]`` channels at
``ceil(H / 2**(L-1))`` × ``ceil(W / 2**(L-1))``; ``forward`` upsamples it ``2**(L-1)`` times and centre-crops
to ``size``. As in the authors' code the convolutions have no bias (``need_bias=False``; BatchNorm
supplies the shift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metadip.errors import MetadipError
from metadip.generators.skip import (
    UPSAMPLE_MODES,
    _per_scale,
    batch_norm,
    canonical_act,
    canonical_pad,
    make_activation,
    make_conv,
)


class _Layer(nn.Module):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int,
        bias: bool,
        pad_mode: str,
        act: str,
        upsample: str | None,
    ) -> None:
        super().__init__()
        self.conv = make_conv(in_ch, out_ch, kernel, bias=bias, pad_mode=pad_mode)
        self.act = make_activation(act)
        self.norm = batch_norm(out_ch)
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.upsample == "bilinear":
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        elif self.upsample == "nearest":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.norm(self.act(x))


class DeepDecoder(nn.Module):
    """``net(z, size=(H, W))`` with ``z`` of shape ``B×channels[0]×ceil(H/2^(L-1))×ceil(W/2^(L-1))``.

    ``channels`` is a per-layer list or an int (then ``num_layers`` layers, default 5). For complex
    (2-channel real/imag) outputs pass ``need_sigmoid=False`` (linear head).
    """

    kind = "deep-decoder"

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int = 3,
        channels: int | Sequence[int] = 64,
        num_layers: int | None = None,
        kernel_size: int = 1,
        upsample_mode: str = "bilinear",
        act: str = "relu",
        pad_mode: str = "reflection",
        need_sigmoid: bool = True,
        need_bias: bool = False,
        name: str = "custom",
    ) -> None:
        super().__init__()
        if num_layers is None:
            num_layers = 5 if isinstance(channels, (int, float)) else len(channels)
        num_layers = int(num_layers)
        if num_layers < 1:
            raise MetadipError(f"num_layers must be at least 1, got {num_layers}")
        chans = _per_scale(channels, num_layers, "channels")
        if min(chans) < 1 or int(out_channels) < 1:
            raise MetadipError("channel counts must be positive")
        if in_channels is None:
            in_channels = chans[0]
        upsample_mode = str(upsample_mode).lower()
        if upsample_mode not in UPSAMPLE_MODES:
            raise MetadipError(f"unknown upsample mode {upsample_mode!r}; valid: {', '.join(UPSAMPLE_MODES)}")
        act = canonical_act(act)
        pad_mode = canonical_pad(pad_mode)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.num_layers = num_layers
        self.need_sigmoid = bool(need_sigmoid)
        self._config = {
            "name": str(name),
            "kind": self.kind,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "channels": chans,
            "num_layers": num_layers,
            "kernel_size": int(kernel_size),
            "upsample_mode": upsample_mode,
            "act": act,
            "pad_mode": pad_mode,
            "need_sigmoid": self.need_sigmoid,
            "need_bias": bool(need_bias),
        }
        layers = []
        prev = self.in_channels
        for i, ch in enumerate(chans):
            layers.append(
                _Layer(
                    prev,
                    ch,
                    kernel=int(kernel_size),
                    bias=bool(need_bias),
                    pad_mode=pad_mode,
                    act=act,
                    upsample=upsample_mode if i < num_layers - 1 else None,
                )
            )
            prev = ch
        self.layers = nn.Sequential(*layers)
        self.head = make_conv(prev, self.out_channels, 1, bias=bool(need_bias), pad_mode=pad_mode)

    @property
    def config(self) -> dict:
        """JSON-serialisable arguments; ``build_generator(net.config)`` rebuilds this architecture."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @property
    def factor(self) -> int:
        return 2 ** (self.num_layers - 1)

    def input_shape(self, height: int, width: int) -> tuple[int, int, int]:
        f = self.factor
        return (self.in_channels, math.ceil(int(height) / f), math.ceil(int(width) / f))

    def forward(self, z: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if z.dim() != 4 or z.shape[1] != self.in_channels:
            raise MetadipError(
                f"deep decoder expects z of shape B×{self.in_channels}×h×w, got {tuple(z.shape)}"
            )
        full_h, full_w = z.shape[-2] * self.factor, z.shape[-1] * self.factor
        out_h, out_w = (full_h, full_w) if size is None else (int(size[0]), int(size[1]))
        if out_h > full_h or out_w > full_w or out_h < 1 or out_w < 1:
            raise MetadipError(
                f"output size {out_h}×{out_w} does not fit in the {full_h}×{full_w} output "
                f"of z {tuple(z.shape[-2:])}; build z with net.input_shape({out_h}, {out_w})"
            )
        x = self.head(self.layers(z))
        if self.need_sigmoid:
            x = torch.sigmoid(x)
        if (full_h, full_w) != (out_h, out_w):
            top, left = (full_h - out_h) // 2, (full_w - out_w) // 2
            x = x[:, :, top : top + out_h, left : left + out_w]
        return x

    def extra_repr(self) -> str:
        c = self._config
        return f"name={c['name']!r}, in={c['in_channels']}, out={c['out_channels']}, channels={c['channels']}"
