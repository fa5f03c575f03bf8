"""Inference under ``torchrun``: each rank embeds a contiguous slice of the cells, rank 0
gathers the slices in the original order (or adds up the ranks' sums) and writes; the other
ranks write nothing.

A slice is read through the same token path as one process (stored tokens, or tokenized chunk
by chunk), so a backed file is streamed on every rank. The result equals a one-process run.
"""

from __future__ import annotations

import os

import numpy as np


def world_size() -> int:
    """Processes launched together (``WORLD_SIZE`` set by ``torchrun``); 1 otherwise."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init() -> tuple[int, int]:
    """``(rank, world size)``, starting the process group (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    from ..train.distributed import init_distributed_from_env

    if not init_distributed_from_env():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def rank_slice(n: int, rank: int, size: int) -> tuple[int, int]:
    """The cells ``[lo, hi)`` of ``rank``: contiguous, sizes differing by at most one."""
    bounds = np.linspace(0, n, size + 1).round().astype(int)
    return int(bounds[rank]), int(bounds[rank + 1])


_CPU_GROUP: list = []


def cpu_group():
    """A gloo group for the CPU-side exchanges (``None``: the default group is gloo already)."""
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    if not _CPU_GROUP:
        _CPU_GROUP.append(dist.new_group(backend="gloo"))  # every rank calls this, in turn
    return _CPU_GROUP[0]


def gather_rows(local: np.ndarray, rank: int, size: int) -> np.ndarray | None:
    """Every rank's rows stacked in rank order on rank 0 (``None`` elsewhere)."""
    import torch.distributed as dist

    parts = [None] * size if rank == 0 else None
    dist.gather_object(local, parts, dst=0, group=cpu_group())
    return np.concatenate(parts, axis=0) if rank == 0 else None


def sum_to_rank0(values: np.ndarray, rank: int) -> np.ndarray:
    """``values`` summed over the ranks (float64), on rank 0; other ranks get their own back."""
    import torch
    import torch.distributed as dist

    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    dist.reduce(t, dst=0, op=dist.ReduceOp.SUM, group=cpu_group())
    return t.numpy() if rank == 0 else values


def add_to_rank0(tensors, rank: int) -> None:
    """Sum each CPU tensor over the ranks into rank 0's, in place, its dtype kept (through
    :func:`sum_to_rank0`'s float64, exact for integer counts below 2**53). The other ranks'
    tensors may change and are not to be read afterwards.
    """
    import torch

    for t in tensors:
        t.copy_(torch.from_numpy(sum_to_rank0(t.numpy(), rank)))


def local_device() -> str:
    """The device of ``device="auto"`` on a rank: ``cuda:LOCAL_RANK`` with CUDA, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"
