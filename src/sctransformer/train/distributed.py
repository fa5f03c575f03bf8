"""The process group of a ``torchrun`` launch, as training uses it."""

from __future__ import annotations

import os

import torch


def process_group():
    """``torch.distributed`` when a process group is running, else ``None``."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def init_distributed_from_env() -> bool:
    """Start the process group when launched by ``torchrun`` (gloo on CPU, nccl on GPU)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True
