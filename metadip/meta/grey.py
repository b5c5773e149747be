"""Turn a colour (RGB) init of a measurement-conditioned network into a grey one.

A grey picture is a colour picture with R = G = B. Fed such a picture, the RGB network's first convolutions see
each per-colour block of z (the image estimate, the normaliser AᴴA1, the Tikhonov image of ``estimate = "both"``)
three times over, so W·[g, g, g] = (W_R + W_G + W_B)·g: summing a first-layer kernel over the colours of each
block gives a one-channel network that computes exactly the same features. The operator-map and noise channels
are not per colour and are copied. The head's three output rows become their mean (their logit corrections are
close to each other on a grey picture, so the grey output is the mean of the colour outputs up to second order).
Every other tensor — and every learned per-tensor inner learning rate — is the same.

This gives a grey θ0 that starts where the colour θ0 stands on grey pictures; ``model.init_from`` of a grey
recipe (``tasks.channels = 1``) uses it, and meta-training then fine-tunes it on grey tasks.
"""

from __future__ import annotations

import torch

from metadip.errors import MetadipError


def convert_input_weight(weight: torch.Tensor, colour_blocks: int, shared: int) -> torch.Tensor:
    """O×(3·blocks + shared)×k×k → O×(blocks + shared)×k×k: each of the ``colour_blocks`` leading RGB blocks of
    z summed over its three colours, the ``shared`` channels after them kept."""
    expected = 3 * colour_blocks + shared
    if weight.shape[1] != expected:
        raise MetadipError(f"first-layer weight has {weight.shape[1]} input channels, expected {expected}")
    summed = [weight[:, 3 * b : 3 * b + 3].sum(dim=1, keepdim=True) for b in range(colour_blocks)]
    return torch.cat([*summed, weight[:, 3 * colour_blocks :]], dim=1)


def rgb_to_grey_state(
    state: dict[str, torch.Tensor],
    grey_shapes: dict[str, torch.Size],
    colour_blocks: int,
    shared: int,
) -> dict[str, torch.Tensor]:
    """A grey network's state dict from an RGB one's (see the module docstring).

    ``grey_shapes``: name → shape of the grey network's tensors; ``colour_blocks`` per-colour blocks lead its
    z, followed by ``shared`` channels (operator maps, noise). Tensors whose shapes agree are copied; input
    convolutions (second dimension 3·blocks + shared → blocks + shared) are summed per block; the output head
    (first dimension 3 → 1) is averaged. Any other mismatch is refused: the weights would mean something else.
    """
    if set(state) != set(grey_shapes):
        missing = sorted(set(state) ^ set(grey_shapes))
        raise MetadipError(f"the colour and grey networks have different tensors: {', '.join(missing[:4])}")
    rgb_in, grey_in = 3 * colour_blocks + shared, colour_blocks + shared
    converted = {}
    for name, tensor in state.items():
        target = tuple(grey_shapes[name])
        shape = tuple(tensor.shape)
        if shape == target:
            value = tensor.clone()
        elif len(shape) == 4 and shape[1] == rgb_in and target == (shape[0], grey_in, *shape[2:]):
            value = convert_input_weight(tensor, colour_blocks, shared)
        elif shape and shape[0] == 3 and target == (1, *shape[1:]):
            value = tensor.mean(dim=0, keepdim=True)
        else:
            raise MetadipError(f"cannot convert {name} from colour {shape} to grey {target}")
        converted[name] = value
    return converted
