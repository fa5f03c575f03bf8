"""The cost log of a training run: tokens, steps and memory before it starts, then its time.

:class:`TrainingCost` is told the plan (cells, steps, the micro-batch and memory estimate from
:mod:`sctransformer.train.budget`), logs it before the first step and, after the first steps,
the seconds per step and the time left, with the levers that change them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import logging as logg
from .budget import GiB, MemoryEstimate

__all__ = ["LONG_RUN_SECONDS", "TrainingCost"]

# a run whose remaining time is estimated above this is announced as a warning (seen at the
# default verbosity), shorter ones at info level
LONG_RUN_SECONDS = 600.0


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


@dataclass
class TrainingCost:
    """Logs what a run will cost before it starts, then its time from the first steps.

    Parameters
    ----------
    lengths
        Tokens per cell.
    steps, batch_size
        Planned optimizer steps and cells per step.
    config
        The model's configuration (named in the levers).
    precision, device
        Resolved precision name and the device.
    max_length
        Token slots per cell (the tokenization's ``max_length``); cells filling them are counted.
    n_truncated
        Cells whose expressed genes did not all fit in ``max_length``, when the caller knows
        (e.g. from the counts); otherwise the cells that fill every slot are reported.
    micro_batch_size, memory_estimate, memory_available
        From :func:`fit_batch_size` / :func:`estimate_training_bytes`.
    """

    lengths: np.ndarray
    steps: int
    batch_size: int
    config: object
    precision: str
    device: str
    max_length: int | None = None
    n_truncated: int | None = None
    micro_batch_size: int | None = None
    memory_estimate: MemoryEstimate | None = None
    memory_available: int | None = None
    _times: list = field(default_factory=list)
    _last: float | None = None
    _reported: bool = False

    def summary(self) -> dict:
        """The numbers that :meth:`before` logs."""
        lengths = np.asarray(self.lengths)
        width = int(self.max_length or (lengths.max() if len(lengths) else 0))
        full = int((lengths >= width).sum()) if width else 0
        return {
            "n_cells": len(lengths),
            "tokens_mean": float(lengths.mean()) if len(lengths) else 0.0,
            "tokens_median": float(np.median(lengths)) if len(lengths) else 0.0,
            "tokens_max": int(lengths.max()) if len(lengths) else 0,
            "max_length": width,
            "n_at_max_length": full,
            "n_truncated": -1 if self.n_truncated is None else int(self.n_truncated),
            "steps": int(self.steps),
            "batch_size": int(self.batch_size),
            "micro_batch_size": int(self.micro_batch_size or self.batch_size),
            "memory_estimate": int(self.memory_estimate.total) if self.memory_estimate else -1,
            "memory_available": int(self.memory_available or -1),
        }

    def before(self) -> dict:
        """Log tokens per cell, cells cut by ``max_length``, steps and memory; return them."""
        s = self.summary()
        cut = (
            f"{s['n_truncated']} cells were cut to max_length={s['max_length']}"
            if s["n_truncated"] >= 0
            else f"{s['n_at_max_length']} cells fill all max_length={s['max_length']} slots "
            "(cut if they express more genes)"
        )
        logg.info(
            f"training cost: {s['n_cells']} cells, {s['tokens_mean']:.0f} tokens per cell "
            f"(median {s['tokens_median']:.0f}, max {s['tokens_max']}); {cut}; "
            f"{s['steps']} steps of {s['batch_size']} cells"
        )
        if self.memory_estimate is not None:
            avail = (
                f" of {self.memory_available / GiB:.1f} GiB available"
                if self.memory_available
                else ""
            )
            passes = (
                f"; each step in passes of {s['micro_batch_size']} cells (gradients accumulated,"
                " the same updates)"
                if s["micro_batch_size"] < s["batch_size"]
                else ""
            )
            logg.info(
                f"    memory: about {self.memory_estimate.total / GiB:.2f} GiB per step{avail}"
                f" ({self.memory_estimate.describe()}){passes}"
            )
        return s

    def step_done(self) -> float | None:
        """Call after each step; after the second, logs seconds per step and the total time.

        The first step is left out of the rate (kernel set-up, allocator warm-up). A remaining
        time above :data:`LONG_RUN_SECONDS` is logged as a warning (shown at the default
        verbosity), with the levers that shorten it. Returns the estimated seconds for the
        remaining steps when it logs, else ``None``.
        """
        now = time.perf_counter()
        if self._last is not None:
            self._times.append(now - self._last)
        self._last = now
        if self._reported or len(self._times) < 2 or self.steps <= 2:
            return None
        self._reported = True
        per_step = float(self._times[-1])
        left = max(0, self.steps - len(self._times))
        remaining = per_step * left
        c = self.config
        gpu = "" if str(self.device).startswith("cuda") else ", a GPU (device='cuda')"
        dropout = (
            ", attention_dropout=0 (a fused attention kernel on CPU)"
            if getattr(c, "attention_dropout", 0) > 0 and str(self.device).startswith("cpu")
            else ""
        )
        log = logg.warning if remaining > LONG_RUN_SECONDS else logg.info
        log(
            f"training: {per_step:.2f} s per step, about {_fmt_seconds(remaining)} for the remaining "
            f"{left} of {self.steps} steps. Levers: max_length "
            f"(tokens per cell; attention grows with its square), the model size "
            f"(hidden_size={c.hidden_size}, num_layers={c.num_layers}), precision (now "
            f"{self.precision!r}){dropout}{gpu}"
        )
        return remaining

    def start(self) -> None:
        """Mark the start of the first step."""
        self._last = time.perf_counter()
