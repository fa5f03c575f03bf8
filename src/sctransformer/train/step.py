"""One training step's objective: this process's share of a global batch, in one pass or many.

Random draws (masks) are made over the global batch and then sliced, so every process, and
every pass of gradient accumulation, corrupts its cells exactly as one process computing the
whole batch would.
"""

from __future__ import annotations

import numpy as np
import torch

from .distributed import gradient_sync
from .objectives import OBJECTIVES


class Step(torch.nn.Module):
    """Wraps model + objective so a distributed wrapper sees one forward per step."""

    def __init__(self, model, objective: str) -> None:
        super().__init__()
        self.model = model
        self.objective = OBJECTIVES[objective]

    def forward(self, batch, **kw):
        """``(loss sum, predicted positions)`` of the objective on ``batch``."""
        return self.objective(self.model, batch, **kw)


def share(batch: dict, rank: int, world: int) -> np.ndarray:
    """Rows of the global batch this process computes."""
    return np.arange(len(batch["index"]))[rank::world]


def accumulate(runner, batch, rows, micro, kw, device, dist):
    """One step's gradients in passes of ``micro`` cells of this process's ``rows``.

    Every pass draws its masks from the step's generator state over the global batch and keeps
    its rows (as processes do under DDP), so the masked positions equal a single pass's; each
    pass is trimmed to its longest cell. Gradients of the summed losses accumulate; the caller
    divides them by the global number of predicted positions, returned here with the loss sum.
    """
    gen = kw["gen"]
    state = gen.get_state()
    loss_total = torch.zeros((), device=device)
    n_local = 0
    passes = [rows[i : i + micro] for i in range(0, len(rows), micro)]
    for j, part in enumerate(passes):
        gen.set_state(state)
        last = j == len(passes) - 1
        with gradient_sync(runner, enabled=dist is None or last):
            loss_sum, n = rows_objective(runner, batch, part, kw, device)
            loss_sum.backward()
        loss_total += loss_sum.detach()
        n_local += n
    n_total = torch.tensor(float(n_local), device=device)
    if dist:
        dist.all_reduce(n_total)
    return loss_total, max(float(n_total), 1.0)


def rows_objective(runner, batch, rows, kw, device):
    """The objective on ``rows`` of the global batch, padded only to their longest cell."""
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    width = max(1, int(batch["lengths"][rows_t].max()))
    local = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v[rows_t]
            local[k] = (v[:, :width] if v.ndim == 2 else v).to(device)
        else:
            local[k] = v[rows]
    local["global_shape"] = tuple(batch["tokens"].shape)
    local["rows"] = rows_t
    return runner(local, **kw)


def global_objective(runner, batch, rows, kw, device, dist):
    """Run the objective on this process's rows of the global batch.

    Random draws are made over the global batch's shape and then sliced (``global_shape`` and
    ``rows`` entries), so every process corrupts its cells exactly as a single process would.
    """
    if dist is None:
        b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        return runner(b, **kw)
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    local = {k: (v[rows_t].to(device) if torch.is_tensor(v) else v[rows]) for k, v in batch.items()}
    local["global_shape"] = tuple(batch["tokens"].shape)
    local["rows"] = rows_t
    return runner(local, **kw)
