"""Transformer encoder layer with a fused QKV projection, post- or pre-LayerNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .config import TransformerConfig
from .varlen import Workspace, varlen_attention

__all__ = ["EncoderLayer", "FeedForward", "SelfAttention"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _cast(t: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    return t if t is None or dtype is None or t.dtype == dtype else t.to(dtype)


def _linear(x: torch.Tensor, layer: nn.Linear, dtype: torch.dtype | None) -> torch.Tensor:
    return F.linear(x, _cast(layer.weight, dtype), _cast(layer.bias, dtype))


def _linear_into(
    x: torch.Tensor, layer: nn.Linear, dtype: torch.dtype | None, out: torch.Tensor
) -> torch.Tensor:
    """``x @ W.T + b`` written into a reused buffer (saves a large fresh allocation)."""
    return torch.addmm(_cast(layer.bias, dtype), x, _cast(layer.weight, dtype).t(), out=out)


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm, dtype: torch.dtype | None) -> torch.Tensor:
    w, b = _cast(norm.weight, dtype), _cast(norm.bias, dtype)
    return F.layer_norm(x, norm.normalized_shape, w, b, norm.eps)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection of width ``3 * hidden``.

    The rows of ``qkv.weight`` are ``[W_q; W_k; W_v]``: torch's ``in_proj_weight`` and scGPT's
    ``Wqkv`` load as they are; BERT's separate query/key/value load by concatenation. One GEMM
    instead of three also runs faster.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.dropout_p = config.attention_dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None,
        key_padding: torch.Tensor | None,
        causal: bool,
        backend: str | None,
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Padded attention on ``x`` ``[B, L, d]``; returns output and optional probabilities."""
        b, length, d = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, D]
        out, probs = attention(
            q,
            k,
            v,
            mask=mask,
            key_padding=key_padding,
            causal=causal,
            backend=backend,
            need_weights=need_weights,
            dropout_p=self.dropout_p if self.training else 0.0,
        )
        return self.out(out.transpose(1, 2).reshape(b, length, d)), probs

    def forward_packed(
        self,
        x: torch.Tensor,
        cu_seqlens: list[int],
        *,
        causal: bool,
        gen_mask: torch.Tensor | None,
        backend: str | None,
        dtype: torch.dtype | None,
        workspace: Workspace,
    ) -> torch.Tensor:
        """Attention on packed tokens ``x`` ``[T, d]`` (cells back to back, no padding).

        Returns the output projection in a workspace buffer named ``"proj"``.
        """
        t, d = x.shape
        qkv = _linear_into(x, self.qkv, dtype, workspace.get("qkv", (t, 3 * d), x))
        heads = workspace.get("heads", (t, self.num_heads, self.head_dim), x)
        varlen_attention(
            qkv.view(t, 3, self.num_heads, self.head_dim),
            cu_seqlens,
            causal=causal,
            gen_mask=gen_mask,
            backend=backend,
            out=heads,
            workspace=workspace,
        )
        return _linear_into(heads.view(t, d), self.out, dtype, workspace.get("proj", (t, d), x))


class FeedForward(nn.Module):
    """Position-wise ``fc2(act(fc1(x)))``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.ffn_size)
        self.fc2 = nn.Linear(config.ffn_size, config.hidden_size)
        self.activation = _ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Apply to ``x`` ``[..., d]``; ``dtype`` casts the weights (inference path)."""
        return _linear(self.activation(_linear(x, self.fc1, dtype)), self.fc2, dtype)


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, each with residual, dropout and LayerNorm.

    ``norm="post"`` (BERT, Geneformer, scGPT): ``x = LN(x + f(x))``.
    ``norm="pre"``: ``x = x + f(LN(x))`` (the model adds a final LayerNorm).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        key_padding: torch.Tensor | None = None,
        causal: bool = False,
        backend: str | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Padded forward on ``[B, L, d]``; returns the new hidden states and optional probs."""
        kwargs = dict(
            mask=mask,
            key_padding=key_padding,
            causal=causal,
            backend=backend,
            need_weights=need_weights,
        )
        if self.pre_norm:
            a, probs = self.attention(self.attention_norm(x), **kwargs)
            x = x + self.dropout(a)
            return x + self.dropout(self.ffn(self.ffn_norm(x))), probs
        a, probs = self.attention(x, **kwargs)
        x = self.attention_norm(x + self.dropout(a))
        return self.ffn_norm(x + self.dropout(self.ffn(x))), probs

    def forward_packed(
        self,
        x: torch.Tensor,
        cu_seqlens: list[int],
        *,
        causal: bool = False,
        gen_mask: torch.Tensor | None = None,
        backend: str | None = None,
        dtype: torch.dtype | None = None,
        workspace: Workspace | None = None,
    ) -> torch.Tensor:
        """Inference forward on packed tokens ``[T, d]``; ``dtype`` casts the weights.

        Same arithmetic as :meth:`forward`, with large temporaries reused from ``workspace`` and
        residuals and activations applied in place.
        """
        ws = workspace or Workspace()
        t, d = x.shape

        def attn(h):
            return self.attention.forward_packed(
                h,
                cu_seqlens,
                causal=causal,
                gen_mask=gen_mask,
                backend=backend,
                dtype=dtype,
                workspace=ws,
            )

        def ffn(h):
            inner = _linear_into(
                h, self.ffn.fc1, dtype, ws.get("ffn", (t, self.ffn.fc1.out_features), h)
            )
            inner = inner.relu_() if self.ffn.activation is F.relu else self.ffn.activation(inner)
            return _linear_into(inner, self.ffn.fc2, dtype, ws.get("proj", (t, d), h))

        if self.pre_norm:
            x = x + attn(_layer_norm(x, self.attention_norm, dtype))
            return x.add_(ffn(_layer_norm(x, self.ffn_norm, dtype)))
        x = _layer_norm(attn(x).add_(x), self.attention_norm, dtype)
        return _layer_norm(ffn(x).add_(x), self.ffn_norm, dtype)
