"""The optimiser, learning-rate schedule and per-step seeding shared by every training loop.

Pretraining (:mod:`sctransformer.train.loop`) and classifier fine-tuning
(:mod:`sctransformer.train.finetune`) take their AdamW, warm-up + decay schedule and seeding
from here, so both are reproducible the same way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .options import TrainConfig


def schedule(step: int, total: int, warmup: int, kind: str = "cosine") -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to zero (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def optimizer(model: torch.nn.Module, cfg: TrainConfig, total: int, *, lr_of=None):
    """AdamW (no weight decay on biases and norms) and its warm-up + cosine-decay schedule over
    ``total`` steps. ``lr_of(parameter)`` gives a parameter its own base rate (default
    ``cfg.lr``), e.g. a new head faster than a pretrained encoder.
    """
    named = list(model.named_parameters())
    groups: dict[tuple[float, float], list] = {}
    for n, p in named:
        decay = cfg.weight_decay if p.ndim > 1 and "norm" not in n.lower() else 0.0
        rate = cfg.lr if lr_of is None else float(lr_of(p))
        groups.setdefault((decay, rate), []).append(p)
    opt = torch.optim.AdamW(
        [{"params": ps, "weight_decay": d, "lr": r} for (d, r), ps in groups.items()],
        lr=cfg.lr,
    )
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: schedule(s, total, warmup, cfg.lr_schedule)
    )
    return opt, sched


def seed_step(seed: int, step: int) -> torch.Generator:
    """Seed step ``step``'s dropout (torch's global generator) and return its masking
    generator, so a step's randomness depends on (seed, step) only: resume is exact.
    """
    torch.manual_seed(seed * 1_000_003 + step)
    return torch.Generator().manual_seed(seed * 1_000_033 + step)
