"""The memory a training step needs and the batch that fits, known before training starts.

Training memory is bounded by batch × tokens: attention never keeps a per-head ``L × L`` matrix
for the backward pass (fused kernels, or blocks recomputed in the backward pass, see
:mod:`sctransformer.nn.blockwise`) and the vocabulary logits exist only at the predicted
positions, a block at a time (:func:`sctransformer.train.objectives.token_loss`). What is left
grows linearly with the tokens of a batch; :func:`estimate_training_bytes` is that formula with
constants fitted to measured peaks (``benchmarks/pretrain.py --memory`` prints both side by side).
:func:`fit_batch_size` compares it with the memory available and returns the number of cells
that fit in one forward/backward pass; :func:`plan_passes` is the plan that pretraining and
fine-tuning both follow (passes of that many cells, gradients accumulated); :class:`~sctransformer.train.cost.TrainingCost` logs the
plan and the time measured on the first steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MemoryEstimate",
    "PassPlan",
    "TrainingMemoryError",
    "available_memory",
    "estimate_training_bytes",
    "fit_batch_size",
    "n_parameters",
    "plan_passes",
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


@dataclass
class PassPlan:
    """How each training step of ``batch_size`` cells runs: in passes of ``micro_batch_size``.

    ``estimate`` is the peak of one pass, ``memory`` the bytes it was planned against.
    """

    batch_size: int
    micro_batch_size: int
    estimate: MemoryEstimate
    memory: int

    @property
    def in_passes(self) -> bool:
        """Whether a step needs more than one pass (gradients accumulated over them)."""
        return self.micro_batch_size < self.batch_size


def plan_passes(
    model,
    batch_size: int,
    length: int,
    *,
    objective: str | None = "mlm",
    mask_prob: float = 0.15,
    device: str = "cpu",
    memory: int | None = None,
    micro_batch_size: int | None = None,
    agree=None,
    shards: int = 1,
) -> PassPlan:
    """The passes a training step of ``batch_size`` cells of up to ``length`` tokens runs in.

    Parameters
    ----------
    model
        The module being trained (its ``config`` and parameter count size the estimate).
    batch_size, length, objective, mask_prob, device, memory
        See :func:`fit_batch_size`; ``memory=None`` asks :func:`available_memory`.
    micro_batch_size
        Cells per pass when the caller fixes it; ``None`` fits it to ``memory``.
    agree
        Called with the fitted number of cells, returns the number every process uses (under
        DDP all processes must accumulate alike).
    shards
        Processes the parameters, gradients and optimiser moments are sharded over (FSDP):
        each holds that share of them.

    Raises
    ------
    TrainingMemoryError
        When not even one cell fits (before any weight changes).
    """
    device = str(device)
    memory = available_memory(device) if memory is None else int(memory)
    kw = dict(
        objective=objective,
        mask_prob=mask_prob,
        device=device,
        n_params=-(-sum(p.numel() for p in model.parameters()) // shards),
    )
    if micro_batch_size is None:
        micro_batch_size = fit_batch_size(model.config, batch_size, length, memory=memory, **kw)
    micro = min(micro_batch_size, batch_size)
    if agree is not None:
        micro = int(agree(micro))
    estimate = estimate_training_bytes(model.config, micro, length, **kw)
    return PassPlan(batch_size, micro, estimate, memory)
