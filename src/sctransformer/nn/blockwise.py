"""Math attention in blocks of queries, each recomputed in the backward pass.

On CPU torch has no fused attention kernel with dropout; its math fallback keeps several
``[B, H, L, L]`` tensors per layer until the backward pass. :func:`needs_blockwise` says when
the sdpa backend of :func:`sctransformer.nn.attention.attention` runs
:func:`blockwise_attention` instead: peak memory is then one block's scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .masks import to_additive

__all__ = ["BLOCK_ELEMENTS", "DIRECT_ELEMENTS", "blockwise_attention", "needs_blockwise"]

# elements of one query block's score tensor [B, H, block, L] (fp32: 32 MiB)
BLOCK_ELEMENTS = 8 * 2**20
# up to this many score elements [B, H, L, L] (fp32: 64 MiB) torch's own math path runs as it
# is: faster than recomputing blocks, and a bounded few hundred MiB per layer
DIRECT_ELEMENTS = 2**24


def _block_size(batch: int, heads: int, length: int, block_elements: int) -> int:
    return max(1, min(length, block_elements // max(1, batch * heads * length)))


def _math_block(q, k, v, allowed, dropout_p):
    """:func:`_math`'s output with fewer temporaries (scale and mask applied in place)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float().mul_(1.0 / math.sqrt(q.shape[-1]))
    if allowed is not None:
        scores = scores.add_(to_additive(allowed, scores.dtype))
    probs = torch.softmax(scores, dim=-1)
    used = F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs
    return torch.matmul(used.to(v.dtype), v)


def blockwise_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor | None,
    dropout_p: float,
    *,
    block_elements: int | None = None,
) -> torch.Tensor:
    """Math attention (with dropout) over blocks of queries, recomputed in the backward pass.

    Same arithmetic as the math backend; each block of queries is wrapped in
    :func:`torch.utils.checkpoint.checkpoint`, which stores only its inputs (views of ``q``,
    ``k``, ``v``) and restores the random state when it recomputes the block, so the backward
    pass sees the same dropout pattern as the forward pass. Peak memory holds one block's
    ``[B, H, block, L]`` scores instead of every layer's ``[B, H, L, L]`` probabilities.

    Parameters
    ----------
    q, k, v
        ``[B, H, L, D]``.
    allowed
        Boolean may-attend mask broadcastable to ``[B, H, L, L]`` or ``None``.
    dropout_p
        Dropout on the attention probabilities.
    block_elements
        Elements of one block's score tensor (default :data:`BLOCK_ELEMENTS`, 32 MiB of fp32);
        sets the block size.

    Returns
    -------
    ``[B, H, L, D]`` attention output.
    """
    from torch.utils.checkpoint import checkpoint

    batch, heads, length, _ = q.shape
    size = _block_size(batch, heads, length, block_elements or BLOCK_ELEMENTS)
    if size >= length:
        return checkpoint(_math_block, q, k, v, allowed, dropout_p, use_reentrant=False)
    outs = []
    for start in range(0, length, size):
        stop = min(length, start + size)
        block_mask = allowed
        if allowed is not None and allowed.shape[-2] > 1:
            block_mask = allowed[..., start:stop, :]
        outs.append(
            checkpoint(
                _math_block,
                q[:, :, start:stop],
                k,
                v,
                block_mask,
                dropout_p,
                use_reentrant=False,
            )
        )
    return torch.cat(outs, dim=2)


def needs_blockwise(batch: int, heads: int, length: int, dropout_p: float, device) -> bool:
    """Whether sdpa training runs :func:`blockwise_attention` for this shape.

    On CPU torch's flash kernel does not implement dropout (torch 2.13: with ``dropout_p > 0``
    the profiler shows ``_scaled_dot_product_attention_math``), and its math fallback keeps the
    whole ``[B, H, L, L]`` probabilities for the backward pass; above
    :data:`DIRECT_ELEMENTS` score elements attention runs in recomputed blocks instead.
    """
    return (
        dropout_p > 0
        and torch.device(device).type == "cpu"
        and batch * heads * length * length > DIRECT_ELEMENTS
    )
