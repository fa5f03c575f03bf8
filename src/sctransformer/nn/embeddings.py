"""Input embeddings: gene token, learned position and expression value."""

from __future__ import annotations

import torch
from torch import nn

from .config import TransformerConfig

__all__ = ["CellEmbeddings", "ContinuousValueEncoder"]


class ContinuousValueEncoder(nn.Module):
    """scGPT's value encoder: clamp → Linear(1, d) → ReLU → Linear(d, d) → LayerNorm.

    Clamping keeps rare huge counts from dominating the embedding.
    """

    def __init__(self, hidden_size: int, clamp: float, eps: float) -> None:
        super().__init__()
        self.clamp = clamp
        self.linear1 = nn.Linear(1, hidden_size)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """Embed float ``values`` of any shape ``[...]`` into ``[..., hidden]``."""
        x = values.float().clamp(max=self.clamp).unsqueeze(-1)
        return self.norm(self.linear2(self.activation(self.linear1(x))))


class CellEmbeddings(nn.Module):
    """Sum of token, position and value embeddings, with the norms the config asks for.

    ``token_norm`` (scGPT's gene-encoder LayerNorm) normalises the token embedding alone;
    ``norm`` (BERT's LayerNorm) normalises the sum. Works on padded ``[B, L]`` or packed ``[T]``
    inputs alike, since every operation is per token.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.config = config
        self.token = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_positions, d) if config.max_positions else None
        if config.value_input == "bins":
            self.value = nn.Embedding(config.n_value_bins, d)
        elif config.value_input == "continuous":
            self.value = ContinuousValueEncoder(d, config.value_clamp, eps)
        else:
            self.value = None
        self.token_norm = nn.LayerNorm(d, eps=eps) if config.token_embedding_norm else None
        self.norm = nn.LayerNorm(d, eps=eps) if config.embedding_norm else None
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        tokens: torch.Tensor,
        values: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed ``tokens`` (with ``values`` and ``positions`` of the same shape when used)."""
        x = self.token(tokens)
        if self.token_norm is not None:
            x = self.token_norm(x)
        if self.position is not None:
            if positions is None:
                raise ValueError("positions are required when max_positions > 0")
            if positions.numel() and int(positions.max()) >= self.config.max_positions:
                raise ValueError(
                    f"sequence of {int(positions.max()) + 1} tokens is longer than "
                    f"max_positions={self.config.max_positions}; truncate the cells"
                )
            x = x + self.position(positions)
        if self.value is not None:
            if values is None:
                raise ValueError(
                    f"value_input={self.config.value_input!r} needs values alongside the tokens"
                )
            if values.shape != tokens.shape:
                raise ValueError(
                    f"values have shape {tuple(values.shape)}, tokens {tuple(tokens.shape)}"
                )
            if isinstance(self.value, nn.Embedding):
                x = x + self.value(values.long().clamp(0, self.config.n_value_bins - 1))
            else:
                x = x + self.value(values)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)
