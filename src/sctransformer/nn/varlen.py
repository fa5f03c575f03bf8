"""Attention over cells packed one after another, without padding (the inference path).

:func:`varlen_attention` runs each cell's attention on its own rows of a packed
``[total_tokens, 3, heads, head_dim]`` projection; :class:`Workspace` holds the scratch buffers
that the layers of one inference call reuse.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from .attention import select_backend

__all__ = ["Workspace", "varlen_attention"]


class Workspace:
    """Scratch buffers reused across the layers of one inference call.

    Multi-megabyte temporaries (attention scores, projections) allocated afresh for every cell
    and layer cost page faults that rival the arithmetic on CPU; reusing them avoids that.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A contiguous ``shape`` tensor with ``like``'s dtype and device; contents undefined."""
        numel = math.prod(shape)
        key = (name, like.dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel or buf.device != like.device:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[key] = buf
        return buf[:numel].view(shape)


def varlen_attention(
    qkv: torch.Tensor,
    cu_seqlens: list[int],
    *,
    causal: bool = False,
    gen_mask: torch.Tensor | None = None,
    backend: str | None = "auto",
    out: torch.Tensor | None = None,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """Attention over cells packed one after another, without padding (inference path).

    Parameters
    ----------
    qkv
        Packed queries, keys and values, ``[total_tokens, 3, heads, head_dim]`` (the fused
        projection's output viewed per head).
    cu_seqlens
        Cumulative lengths ``[0, n_0, n_0 + n_1, ...]``: cell ``i`` owns rows
        ``cu_seqlens[i]:cu_seqlens[i + 1]``.
    causal
        Decoder-only attention (each token reads itself and earlier tokens of its cell).
    gen_mask
        Packed boolean ``[total_tokens]`` for scGPT's generative mask (see
        :func:`~sctransformer.nn.masks.generative_mask`).
    backend
        ``"auto"``, ``"xformers"``, ``"sdpa"`` or ``"math"``.
    out
        Optional ``[total_tokens, heads, head_dim]`` tensor to write the result into.
    workspace
        Optional :class:`Workspace` for the scratch buffers.

    Returns
    -------
    Packed output ``[total_tokens, heads, head_dim]``.
    """
    q, k, v = qkv.unbind(1)
    name = select_backend(backend, q.device, need_weights=False)
    if name == "xformers" and gen_mask is None:
        import xformers.ops as xops
        from xformers.ops.fmha import attn_bias as xbias

        seqlens = [b - a for a, b in itertools.pairwise(cu_seqlens)]
        mask_cls = xbias.BlockDiagonalCausalMask if causal else xbias.BlockDiagonalMask
        result = xops.memory_efficient_attention(
            q[None], k[None], v[None], attn_bias=mask_cls.from_seqlens(seqlens)
        )[0]
        return result if out is None else out.copy_(result)
    if name == "xformers":
        name = "sdpa"  # arbitrary per-cell masks: per-cell dense attention below
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
    workspace = workspace or Workspace()
    # on CPU the fused kernel gains nothing from bf16, while bf16 GEMMs + softmax run ~1.5x faster
    explicit = name == "math" or (q.device.type == "cpu" and q.dtype == torch.bfloat16)
    heads, dim = q.shape[1], q.shape[2]
    scale = 1.0 / math.sqrt(dim)
    for start, stop in itertools.pairwise(cu_seqlens):
        n = stop - start
        qc, kc, vc = (t[start:stop].transpose(0, 1) for t in (q, k, v))  # [H, n, D] views
        mask = None
        if gen_mask is not None:
            eye = torch.eye(n, dtype=torch.bool, device=q.device)
            mask = (~gen_mask[start:stop])[None, :] | eye  # [n, n]
        elif causal and explicit:
            mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril_()
        if not explicit:
            oc = F.scaled_dot_product_attention(
                qc[None], kc[None], vc[None], attn_mask=mask, is_causal=causal and mask is None
            )[0]
        else:
            # one copy to contiguous [3, H, n, D] (GEMM kernels would otherwise clone q, k, v)
            qkv_cell = workspace.get("qkv_cell", (3, heads, n, dim), q)
            qkv_cell.copy_(qkv[start:stop].permute(1, 2, 0, 3))
            qc, kc, vc = qkv_cell.unbind(0)
            scores = workspace.get("scores", (heads, n, n), q)
            torch.baddbmm(scores, qc, kc.transpose(1, 2), beta=0.0, alpha=scale, out=scores)
            if mask is not None:
                scores.masked_fill_(~mask, float("-inf"))
            _softmax_(scores)
            oc = torch.bmm(scores, vc, out=workspace.get("cell_out", (heads, n, dim), q))
        out[start:stop] = oc.transpose(0, 1)
    return out


def _softmax_(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, in place (no multi-megabyte temporary)."""
    return torch.ops.aten._softmax.out(x, -1, False, out=x)
