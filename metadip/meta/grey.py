"""Turn a colour (RGB) init of a measurement-conditioned network into a grey one.

A grey picture is a colour picture with R = G = B. Fed such a picture, the RGB network's first convolutions see
each per-colour block of z (the image estimate, back-projection or Tikhonov image, and the normaliser AᴴA1) three
times over, so W·[g, g, g] = (W_R + W_G + W_B)·g: summing a first-layer kernel over the colours of each
block gives a one-channel network that computes exactly the same features. The operator-map and noise channels
are not per colour and are copied. The head's three output rows become their mean (their logit corrections are
close to each other on a grey picture, so the grey output is the mean of the colour outputs up to second order).
Every other tensor — and every learned per-tensor inner learning rate — is the same.

This gives a grey θ0 that starts where the colour θ0 stands on grey pictures; ``model.init_from`` of a grey
recipe (``tasks.channels = 1``) uses it, and meta-training then fine-tunes it on grey tasks.

The same rule turns a grey init into a two-channel one for complex pictures (real and imaginary parts,
``tasks.channels = 2``): each first-layer kernel of a per-channel block is split evenly over the two channels and
the head's row is repeated, so the two-channel θ0 computes the grey θ0's output on both channels of a picture
whose parts are equal; fine-tuning on complex phantoms then teaches it the phase.
"""

from __future__ import annotations

import torch

from metadip.errors import MetadipError


def convert_input_weight(
    weight: torch.Tensor, colour_blocks: int, shared: int, source_channels: int = 3, target_channels: int = 1
) -> torch.Tensor:
    """O×(S·blocks + shared)×k×k → O×(T·blocks + shared)×k×k: each of the ``colour_blocks`` leading per-channel
    blocks of z summed over its S = ``source_channels`` channels, then split evenly over T = ``target_channels``
    (so a picture whose T channels are equal sees the same features as the S-channel net on equal channels);
    the ``shared`` channels after them kept. RGB → grey is S = 3, T = 1."""
    expected = source_channels * colour_blocks + shared
    if weight.shape[1] != expected:
        raise MetadipError(f"first-layer weight has {weight.shape[1]} input channels, expected {expected}")
    s, t = source_channels, target_channels
    blocks = [weight[:, s * b : s * b + s].sum(dim=1, keepdim=True) / t for b in range(colour_blocks)]
    return torch.cat([*(block.repeat(1, t, 1, 1) for block in blocks), weight[:, s * colour_blocks :]], dim=1)


def change_channels_state(
    state: dict[str, torch.Tensor],
    target_shapes: dict[str, torch.Size],
    colour_blocks: int,
    shared: int,
    source_channels: int = 3,
    target_channels: int = 1,
) -> dict[str, torch.Tensor]:
    """A ``target_channels`` network's state dict from a ``source_channels`` one's (see the module docstring).

    ``target_shapes``: name → shape of the target network's tensors; ``colour_blocks`` per-channel blocks lead
    its z, followed by ``shared`` channels (operator maps, noise). Tensors whose shapes agree are copied; input
    convolutions (second dimension S·blocks + shared → T·blocks + shared) go through
    :func:`convert_input_weight`; the output head (first dimension S → T) is the mean of its S rows, repeated.
    Exact for pictures whose channels are all equal. Any other mismatch is refused: the weights would mean
    something else.
    """
    if set(state) != set(target_shapes):
        missing = sorted(set(state) ^ set(target_shapes))
        raise MetadipError(f"the two networks have different tensors: {', '.join(missing[:4])}")
    s, t = source_channels, target_channels
    source_in, target_in = s * colour_blocks + shared, t * colour_blocks + shared
    converted = {}
    for name, tensor in state.items():
        target = tuple(target_shapes[name])
        shape = tuple(tensor.shape)
        if shape == target:
            value = tensor.clone()
        elif len(shape) == 4 and shape[1] == source_in and target == (shape[0], target_in, *shape[2:]):
            value = convert_input_weight(tensor, colour_blocks, shared, s, t)
        elif shape and shape[0] == s and target == (t, *shape[1:]):
            value = tensor.mean(dim=0, keepdim=True).repeat(t, *([1] * (len(shape) - 1)))
        else:
            raise MetadipError(f"cannot convert {name} from {s} channels {shape} to {t} channels {target}")
        converted[name] = value
    return converted


def rgb_to_grey_state(
    state: dict[str, torch.Tensor],
    grey_shapes: dict[str, torch.Size],
    colour_blocks: int,
    shared: int,
) -> dict[str, torch.Tensor]:
    """A grey network's state dict from an RGB one's: :func:`change_channels_state` with 3 → 1 channels."""
    return change_channels_state(state, grey_shapes, colour_blocks, shared, 3, 1)
