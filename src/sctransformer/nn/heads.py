"""Output heads: gene id, value bin, continuous value, next token, cell class."""

from __future__ import annotations

import torch
from torch import nn

from .config import TransformerConfig
from .layers import _ACTIVATIONS

__all__ = ["BinHead", "ClassifierHead", "MaskedTokenHead", "NextTokenHead", "ValueDecoder"]


class MaskedTokenHead(nn.Module):
    """BERT's masked-token head: dense → activation → LayerNorm → tied decoder + bias.

    The decoder reuses the token embedding matrix (weight tying, as in BERT and Geneformer), so
    the head owns only ``dense``, ``norm`` and ``bias``.
    """

    def __init__(self, config: TransformerConfig, token_embedding: nn.Embedding) -> None:
        super().__init__()
        d = config.hidden_size
        self.dense = nn.Linear(d, d)
        self.activation = _ACTIVATIONS[config.activation]
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        # a plain list keeps the shared matrix out of this module's state dict
        self._tied = [token_embedding]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary, ``[..., vocab_size]``."""
        x = self.norm(self.activation(self.dense(hidden)))
        return nn.functional.linear(x, self._tied[0].weight, self.bias)


class BinHead(nn.Module):
    """Classifies each token's value bin: dense → activation → LayerNorm → Linear(d, n_bins)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.dense = nn.Linear(d, d)
        self.activation = _ACTIVATIONS[config.activation]
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(d, config.n_value_bins)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Bin logits, ``[..., n_value_bins]``."""
        return self.decoder(self.norm(self.activation(self.dense(hidden))))


class ValueDecoder(nn.Module):
    """scGPT's expression decoder: Linear → LeakyReLU → Linear → LeakyReLU → Linear(d, 1).

    ``fc`` has scGPT's layout (``fc.0``, ``fc.2``, ``fc.4``) so its weights load directly.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.fc = nn.Sequential(
            nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, 1)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Predicted value per token, ``[...]``."""
        return self.fc(hidden).squeeze(-1)


class NextTokenHead(nn.Module):
    """Decoder-only next-token logits: Linear(d, vocab_size)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits for the token after each position, ``[..., vocab_size]``."""
        return self.decoder(hidden)


class ClassifierHead(nn.Module):
    """Cell-class logits from a pooled cell vector: dense → activation → dropout → Linear."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.dense = nn.Linear(d, d)
        self.activation = _ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(d, config.num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` from ``pooled`` ``[B, d]``."""
        return self.decoder(self.dropout(self.activation(self.dense(pooled))))
