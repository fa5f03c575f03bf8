"""What a training run costs, said before it starts: peak memory, the batch that fits, the time.

Training memory is bounded by batch × tokens: attention never keeps a per-head ``L × L`` matrix
for the backward pass (fused kernels, or blocks recomputed in the backward pass, see
:mod:`sctransformer.nn.blockwise`) and the vocabulary logits exist only at the predicted
positions, a block at a time (:func:`sctransformer.train.objectives.token_loss`). What is left
grows linearly with the tokens of a batch; :func:`estimate_training_bytes` is that formula with
constants fitted to measured peaks (``benchmarks/pretrain.py --memory`` prints both side by side).
:func:`fit_batch_size` compares it with the memory available and returns the number of cells
that fit in one forward/backward pass, and :class:`TrainingCost` logs tokens, steps, memory and
the time measured on the first steps, with the levers that change them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import logging as logg

__all__ = [
    "MemoryEstimate",
    "TrainingCost",
    "TrainingMemoryError",
    "available_memory",
    "estimate_training_bytes",
    "fit_batch_size",
    "n_parameters",
]

GiB = 2**30
# Bytes saved for the backward pass per token, as multiples of 4 bytes × width: fitted to the
# peak RSS of training steps measured in fresh processes (hidden 128, 4 layers, FFN 256,
# vocabulary 32,790, 1–8 cells of 1,024–2,048 tokens, torch 2.13 CPU; the slope per token
# matched to within 10%, see docs/performance.md).
EMBED_FLOATS_PER_D = 8  # embeddings: token + position + LayerNorm + dropout
LAYER_FLOATS_PER_D = 10  # per layer: qkv, attention output, projections, LayerNorms, masks
LAYER_FLOATS_PER_FFN = 3  # per layer: fc1 output, activation, dropout of the feed-forward
BLOCKWISE_FLOATS_PER_D = 12  # per layer, blockwise attention: block outputs, q/k/v gradients
# transient buffers: a block of attention scores, a block of vocabulary logits (each alive
# about twice: forward value and its gradient)
ATTENTION_BLOCK_COPIES = 2
# torch's math attention (dropout on CPU, small shapes) keeps ~4 score-sized tensors per layer
# (measured: ~240 MiB per layer for 4 heads × 2,048² fp32 scores)
MATH_SCORE_COPIES = 4
LOGIT_BLOCK_COPIES = 1
# what the allocator and the loop add on top (collated batch, autograd bookkeeping)
FIXED_OVERHEAD = 32 * 2**20
# share of the available memory a run may plan to use
HEADROOM = 0.8
# a run whose remaining time is estimated above this is announced as a warning (seen at the
# default verbosity), shorter ones at info level
LONG_RUN_SECONDS = 600.0


class TrainingMemoryError(MemoryError):
    """Raised before training when not even one cell fits in the memory available."""


@dataclass
class MemoryEstimate:
    """Estimated peak bytes of a training step beyond what the process already holds."""

    total: int
    parts: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """The parts in GiB, e.g. ``"weights 0.10, activations 1.20 GiB"``."""
        return ", ".join(f"{k} {v / GiB:.2f}" for k, v in self.parts.items()) + " GiB"


def n_parameters(config) -> int:
    """Parameters of a :class:`~sctransformer.nn.CellTransformer` built from ``config``."""
    d, f, v = config.hidden_size, config.ffn_size, config.vocab_size
    n = v * d + config.max_positions * d + 2 * d  # token, position embeddings, embedding norm
    if config.value_input == "bins":
        n += config.n_value_bins * d
    elif config.value_input == "continuous":
        n += 2 * d * d + 4 * d
    layer = (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
    n += config.num_layers * layer
    for head in config.heads:
        if head == "mlm":
            n += d * d + 3 * d + v  # dense, norm, bias (decoder tied to the embedding)
        elif head == "ntp":
            n += d * v + v
        elif head == "bins":
            n += d * d + 3 * d + d * config.n_value_bins + config.n_value_bins
        elif head == "value":
            n += 2 * (d * d + d) + d + 1
    if config.num_classes:
        n += d * d + d + d * config.num_classes + config.num_classes
    return n


def _blockwise_attention(config, batch: int, length: int, device: str) -> bool:
    from ..nn.blockwise import needs_blockwise

    return needs_blockwise(batch, config.num_heads, length, config.attention_dropout, device)


def _torch_math_attention(config, device: str) -> bool:
    """Dropout on CPU below the blockwise threshold: torch's math path keeps the scores."""
    return config.attention_dropout > 0 and str(device).startswith("cpu")


def estimate_training_bytes(
    config,
    batch_size: int,
    length: int,
    *,
    objective: str | None = "mlm",
    mask_prob: float = 0.15,
    device: str = "cpu",
    n_params: int | None = None,
) -> MemoryEstimate:
    """Peak bytes one training step of ``batch_size`` cells of ``length`` tokens adds.

    Parameters
    ----------
    config
        The model's :class:`~sctransformer.nn.TransformerConfig`.
    batch_size, length
        Cells in one forward/backward pass and the longest of them (batches are padded to it).
    objective
        ``"mlm"``/``"generative"`` (vocabulary logits at ``mask_prob`` of the tokens), ``"ntp"``
        (at every token), or ``None`` (a classifier: no vocabulary logits).
    device
        Training device; on CPU attention dropout runs blockwise (one block of scores alive).
    n_params
        Parameter count when it differs from ``config``'s (e.g. a model with extra heads).

    Returns
    -------
    :class:`MemoryEstimate` with parts ``optimizer`` (gradients and AdamW moments),
    ``activations`` (saved for the backward pass, linear in ``batch_size × length``),
    ``attention`` (one block of scores) and ``logits`` (one block of vocabulary logits).
    The estimate is for fp32; bf16 autocast keeps some activations in half width (less).
    """
    d, f, heads = config.hidden_size, config.ffn_size, config.num_heads
    tokens = batch_size * length
    params = n_parameters(config) if n_params is None else n_params
    blockwise = _blockwise_attention(config, batch_size, length, device)
    per_layer = LAYER_FLOATS_PER_D * d + LAYER_FLOATS_PER_FFN * f
    if blockwise:
        per_layer += BLOCKWISE_FLOATS_PER_D * d
    per_token = 4 * (EMBED_FLOATS_PER_D * d + config.num_layers * per_layer)
    parts = {
        "optimizer": 12 * params,  # fp32 gradients + AdamW's two moments
        "activations": tokens * per_token,
    }
    if blockwise:
        from ..nn.blockwise import BLOCK_ELEMENTS

        block = min(batch_size * heads * length * length, BLOCK_ELEMENTS)
        parts["attention"] = ATTENTION_BLOCK_COPIES * 4 * block
    elif _torch_math_attention(config, device):  # small: every layer keeps its probabilities
        scores = batch_size * heads * length * length
        parts["attention"] = config.num_layers * MATH_SCORE_COPIES * 4 * scores
    else:  # fused kernels keep one row statistic per head and token
        parts["attention"] = 4 * 4 * batch_size * heads * length
    vocab = config.vocab_size if objective is not None else 0
    if vocab:
        from .objectives import LOGIT_ELEMENTS

        predicted = tokens if objective == "ntp" else math.ceil(mask_prob * tokens)
        rows = min(predicted, max(1, LOGIT_ELEMENTS // vocab))
        parts["logits"] = LOGIT_BLOCK_COPIES * 4 * rows * vocab
    else:
        parts["logits"] = 0
    parts["overhead"] = FIXED_OVERHEAD
    return MemoryEstimate(total=int(sum(parts.values())), parts=parts)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory(device: str = "cpu") -> int:
    """Bytes that a new allocation on ``device`` can use now.

    CUDA: free device memory. CPU: ``MemAvailable`` of ``/proc/meminfo``, lowered to what the
    control group's limit leaves (``memory.max`` − ``memory.current``, cgroup v2) when that is
    smaller; without ``/proc`` the physical memory.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        import os

        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _read_int("/sys/fs/cgroup/memory.max")
    used = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        avail = min(avail, max(0, limit - used))
    return int(avail)


def fit_batch_size(
    config,
    batch_size: int,
    length: int,
    *,
    objective: str | None = "mlm",
    mask_prob: float = 0.15,
    device: str = "cpu",
    memory: int | None = None,
    n_params: int | None = None,
) -> int:
    """The most cells (≤ ``batch_size``) of ``length`` tokens one training pass fits in memory.

    Parameters
    ----------
    config, batch_size, length, objective, mask_prob, device, n_params
        See :func:`estimate_training_bytes`.
    memory
        Bytes the run may use; ``None``: :func:`available_memory` now. 80% of it is planned.

    Returns
    -------
    ``batch_size`` when it fits, else the largest number of cells that does (the caller splits
    each batch into passes of that many cells and accumulates gradients).

    Raises
    ------
    TrainingMemoryError
        When not even one cell fits; the message names the longest cell that would.
    """
    memory = available_memory(device) if memory is None else int(memory)
    budget = HEADROOM * memory

    def need(b: int, n: int = length) -> int:
        kw = dict(objective=objective, mask_prob=mask_prob, device=device, n_params=n_params)
        return estimate_training_bytes(config, b, n, **kw).total

    if need(batch_size) <= budget:
        return batch_size
    lo, hi = 0, batch_size  # need(lo) fits (lo = 0 means "none known"), need(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid)
    if lo == 0:
        fits = [n for n in (4096, 2048, 1024, 512, 256, 128) if n < length and need(1, n) <= budget]
        hint = (
            f"tokenize with max_length={fits[0]} (sct.pp.tokenize(..., max_length={fits[0]}))"
            if fits
            else "use a smaller model (hidden_size, num_layers)"
        )
        raise TrainingMemoryError(
            f"training one cell of {length} tokens needs about {need(1) / GiB:.1f} GiB but "
            f"{memory / GiB:.1f} GiB is available on {device}; {hint}, or train on a GPU"
        )
    return lo


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
