"""Scaled dot-product attention with a backend chosen per call.

Backends
--------
``"xformers"``
    ``xformers.ops.memory_efficient_attention`` (CUDA only, optional dependency). Cells of
    different lengths are packed into one sequence with a ``BlockDiagonalMask`` so no compute is
    spent on padding.
``"sdpa"``
    :func:`torch.nn.functional.scaled_dot_product_attention`, available everywhere. Its fused
    kernels never store the ``L × L`` probabilities for the backward pass, but on CPU torch has
    no fused kernel with attention dropout and silently falls back to its math path, which keeps
    several ``[B, H, L, L]`` tensors per layer until the backward pass (about 1 GiB per cell of
    2,048 tokens in a 4-layer, 4-head model). Training with dropout on CPU therefore runs
    attention in blocks of queries, each recomputed during the backward pass
    (:func:`~sctransformer.nn.blockwise.blockwise_attention`), once the scores would exceed
    :data:`~sctransformer.nn.blockwise.DIRECT_ELEMENTS`: peak memory is one block's scores, not
    the whole matrix. Recomputing costs time (the dropout pattern is drawn twice); ``attention_dropout=0`` lets torch's fused flash kernel run,
    several times faster on CPU and with no ``L × L`` tensor at all.
``"math"``
    Explicit ``softmax(Q Kᵀ / √d + mask) V``. The only backend that also returns the per-head
    attention probabilities (fused kernels never materialise them); attention-based gene networks
    and head plots need them.
``"auto"``
    xformers on CUDA when importable, sdpa otherwise, and math whenever probabilities are asked for.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .blockwise import blockwise_attention, needs_blockwise
from .masks import to_additive

__all__ = ["AttentionResult", "attention", "select_backend", "xformers_available"]

BACKENDS = ("auto", "xformers", "sdpa", "math")


class AttentionResult(NamedTuple):
    """Output of :func:`attention`: ``output`` ``[B, H, L, D]``, ``probs`` ``[B, H, L, L]`` or None."""

    output: torch.Tensor
    probs: torch.Tensor | None


@functools.cache
def xformers_available() -> bool:
    """Whether ``xformers`` can be imported (checked once, lazily)."""
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return True


def select_backend(backend: str | None, device: torch.device | str, need_weights: bool) -> str:
    """Resolve ``backend`` (``None`` means ``"auto"``) to a concrete backend name.

    Raises
    ------
    ValueError
        If the backend is unknown, cannot return probabilities while they are requested, or
        xformers is requested where it cannot run.
    """
    backend = backend or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not supported; use one of {BACKENDS}")
    device = torch.device(device)
    if need_weights:
        if backend not in ("auto", "math"):
            raise ValueError(
                f"attention probabilities are only returned by the 'math' backend, not {backend!r}; "
                "use backend='math' or 'auto'"
            )
        return "math"
    if backend == "auto":
        return "xformers" if device.type == "cuda" and xformers_available() else "sdpa"
    if backend == "xformers" and (device.type != "cuda" or not xformers_available()):
        raise ValueError(
            "attention backend 'xformers' needs a CUDA device and the xformers package "
            "(pip install 'sctransformer[gpu]'); use 'sdpa' elsewhere"
        )
    return backend


def _combined_mask(
    mask: torch.Tensor | None, key_padding: torch.Tensor | None, causal: bool, length: int, device
) -> torch.Tensor | None:
    """Boolean may-attend mask combining an explicit mask, key padding and causality."""
    out = mask
    if key_padding is not None:
        kp = key_padding[:, None, None, :]
        out = kp if out is None else out & kp
    if causal:
        idx = torch.arange(length, device=device)
        # the diagonal stays allowed so that no row is empty (padding queries in left padding)
        lower = (idx[None, :] <= idx[:, None])[None, None]
        out = (
            lower
            if out is None
            else (out & lower) | torch.eye(length, dtype=torch.bool, device=device)
        )
    return out


def _math(q, k, v, allowed, dropout_p):
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if allowed is not None:
        scores = scores + to_additive(allowed, scores.dtype)
    probs = torch.softmax(scores, dim=-1)
    used = F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs
    return torch.matmul(used.to(v.dtype), v), probs


def _prefix_lengths(key_padding: torch.Tensor) -> torch.Tensor | None:
    """Lengths if every row of ``key_padding`` is a prefix of ``True`` (right padding), else None."""
    lengths = key_padding.sum(-1)
    idx = torch.arange(key_padding.shape[-1], device=key_padding.device)
    if torch.equal(idx[None, :] < lengths[:, None], key_padding):
        return lengths
    return None


def _xformers(q, k, v, key_padding, causal, allowed, dropout_p):
    """Xformers kernel; ``allowed`` (dense mask) or ``key_padding``/``causal``, not both."""
    import xformers.ops as xops
    from xformers.ops.fmha import attn_bias as xbias

    batch, heads, length, dim = q.shape
    lengths = _prefix_lengths(key_padding) if key_padding is not None else None
    if allowed is None and (key_padding is None or lengths is not None):
        if lengths is None:
            lengths = torch.full((batch,), length, device=q.device)
        # pack the real tokens of every cell into one sequence; block-diagonal attention
        seqlens = [int(n) for n in lengths.tolist()]
        valid = (torch.arange(length, device=q.device)[None, :] < lengths[:, None]).reshape(-1)

        def pack(t):
            return t.transpose(1, 2).reshape(batch * length, heads, dim)[valid][None]

        mask_cls = xbias.BlockDiagonalCausalMask if causal else xbias.BlockDiagonalMask
        out_packed = xops.memory_efficient_attention(
            pack(q), pack(k), pack(v), attn_bias=mask_cls.from_seqlens(seqlens), p=dropout_p
        )[0]
        out = q.new_zeros(batch * length, heads, dim)
        out[valid] = out_packed
        return out.view(batch, length, heads, dim).transpose(1, 2)
    if allowed is None:
        allowed = _combined_mask(None, key_padding, causal, length, q.device)
    # xformers wants a dense bias whose last dimension is stored padded to a multiple of 8
    padded = (length + 7) // 8 * 8
    storage = torch.zeros(batch, heads, length, padded, dtype=q.dtype, device=q.device)
    bias = storage[..., :length]
    bias.copy_(to_additive(allowed.expand(batch, heads, length, length), q.dtype))
    out = xops.memory_efficient_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, p=dropout_p
    )
    return out.transpose(1, 2)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    key_padding: torch.Tensor | None = None,
    causal: bool = False,
    backend: str | None = "auto",
    need_weights: bool = False,
    dropout_p: float = 0.0,
) -> AttentionResult:
    """Multi-head scaled dot-product attention.

    Parameters
    ----------
    q, k, v
        Tensors of shape ``[batch, heads, length, head_dim]``.
    mask
        Optional boolean may-attend mask broadcastable to ``[batch, heads, length, length]``
        (see :mod:`sctransformer.nn.masks`).
    key_padding
        Optional boolean ``[batch, length]``, ``True`` for real tokens; padding keys are never read.
        Passing padding this way (rather than folded into ``mask``) lets the xformers backend pack
        cells instead of computing on padding.
    causal
        Also forbid attending to later positions.
    backend
        ``"auto"``, ``"xformers"``, ``"sdpa"`` or ``"math"`` (see module docs); ``None`` = auto.
    need_weights
        Return the attention probabilities (forces the math backend).
    dropout_p
        Dropout on the attention probabilities (pass 0 in evaluation).

    Returns
    -------
    :class:`AttentionResult` with ``output`` ``[batch, heads, length, head_dim]`` and ``probs``
    ``[batch, heads, length, length]`` (float32) when ``need_weights``, else ``None``.
    """
    name = select_backend(backend, q.device, need_weights)
    length = q.shape[-2]
    if name == "xformers":
        if mask is None:
            return AttentionResult(_xformers(q, k, v, key_padding, causal, None, dropout_p), None)
        allowed = _combined_mask(mask, key_padding, causal, length, q.device)
        return AttentionResult(_xformers(q, k, v, None, False, allowed, dropout_p), None)
    if name == "sdpa":
        batch, heads = q.shape[0], q.shape[1]
        if torch.is_grad_enabled() and needs_blockwise(batch, heads, length, dropout_p, q.device):
            allowed = _combined_mask(mask, key_padding, causal, length, q.device)
            return AttentionResult(blockwise_attention(q, k, v, allowed, dropout_p), None)
        if mask is None and key_padding is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
            return AttentionResult(out, None)
        allowed = _combined_mask(mask, key_padding, causal, length, q.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
        return AttentionResult(out, None)
    allowed = _combined_mask(mask, key_padding, causal, length, q.device)
    out, probs = _math(q, k, v, allowed, dropout_p)
    return AttentionResult(out, probs if need_weights else None)
