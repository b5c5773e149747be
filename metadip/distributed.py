"""torch.distributed helpers for ``torchrun``: rank/world from the environment, the meta-batch split, and an
all-reduce SUM of gradient lists.

Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1) :func:`init_distributed` joins the process group
(gloo on CPU, NCCL on CUDA). Each rank takes the global task indices ``i`` of a meta-step with ``i % world ==
rank``, so the union over ranks is exactly the single-process meta-batch; each rank sums its tasks' gradients
divided by the *global* batch size and the SUM all-reduce gives every rank the global mean, so all ranks apply
the same update and stay identical. Rank 0 alone logs and writes files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from metadip.errors import MetadipError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise MetadipError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} is not an integer") from None


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) without
    joining a process group: for work that needs no collectives, such as splitting a list of files."""
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    try:
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise MetadipError(
            f"RANK={os.environ.get('RANK')!r} / LOCAL_RANK={os.environ.get('LOCAL_RANK')!r} must be integers"
        ) from None
    if not 0 <= rank < world:
        raise MetadipError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when ``WORLD_SIZE`` > 1 (idempotent); otherwise a single-process DistInfo."""
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, backend=backend
    )


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """On CUDA each rank uses its ``LOCAL_RANK`` GPU."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def shard(indices: Sequence[int], info: DistInfo) -> list[int]:
    """This rank's share of the global task ``indices`` (positions ``rank, rank + world, …``)."""
    return [k for i, k in enumerate(indices) if i % info.world_size == info.rank]


def all_reduce_sum_(tensors: Sequence[torch.Tensor], info: DistInfo) -> None:
    """In-place SUM over ranks of a list of tensors (flattened into one buffer: a single collective)."""
    if not info.enabled or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def all_reduce_metrics(metrics: dict[str, float], device: torch.device, info: DistInfo) -> dict[str, float]:
    """SUM of each metric over ranks (the keys must agree across ranks; sorted for a fixed order)."""
    if not info.enabled:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return dict(zip(keys, values.tolist(), strict=True))


def broadcast_parameters_(tensors: Sequence[torch.Tensor], info: DistInfo) -> None:
    """Copy rank 0's values into every rank's tensors."""
    if not info.enabled:
        return
    for t in tensors:
        dist.broadcast(t.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
