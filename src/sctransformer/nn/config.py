"""Model configuration: one dataclass that covers the architectures of the literature."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

_CHOICES = {
    "activation": ("relu", "gelu"),
    "norm": ("post", "pre"),
    "value_input": ("none", "bins", "continuous"),
    "attention_backend": ("auto", "xformers", "sdpa", "math"),
}
_HEADS = ("mlm", "bins", "value", "ntp")


@dataclass
class TransformerConfig:
    """Architecture of a :class:`~sctransformer.nn.CellTransformer`.

    The defaults describe a small encoder. Geneformer is ``norm="post"``, ``activation="relu"``,
    ``max_positions=2048``, ``value_input="none"``, ``embedding_norm=True``; scGPT is
    ``max_positions=0``, ``value_input="continuous"``, ``token_embedding_norm=True``,
    ``embedding_norm=False``.
    """

    vocab_size: int
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_size: int = 512
    activation: Literal["relu", "gelu"] = "relu"
    dropout: float = 0.02
    # 0 lets torch's fused attention kernel train on CPU (it has no dropout there): several
    # times faster, and no L x L tensor kept for the backward pass
    attention_dropout: float = 0.0
    norm: Literal["post", "pre"] = "post"
    layer_norm_eps: float = 1e-12
    # 0 disables learned absolute positions (scGPT has none; Geneformer has 2048 or 4096).
    max_positions: int = 2048
    value_input: Literal["none", "bins", "continuous"] = "none"
    n_value_bins: int = 51  # size of the value embedding when value_input == "bins"
    value_clamp: float = 512.0  # scGPT clamps continuous inputs before its value encoder
    pad_token_id: int = 0
    # LayerNorm on the token embedding alone (scGPT's gene encoder).
    token_embedding_norm: bool = False
    # LayerNorm on the sum of embeddings (BERT / Geneformer).
    embedding_norm: bool = True
    attention_backend: Literal["auto", "xformers", "sdpa", "math"] = "auto"
    # Output heads to build: "mlm" (masked gene id, tied to the token embedding), "bins" (value
    # bin class), "value" (continuous value, scGPT's expression decoder), "ntp" (next token).
    heads: list[str] = field(default_factory=lambda: ["mlm"])
    # Cell classes of the classifier head on the pooled cell vector; 0 builds no classifier.
    num_classes: int = 0
    # Free-form notes (e.g. where converted weights came from); JSON-serialisable values only.
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not supported; use one of {list(allowed)}"
                )
        for name in ("hidden_size", "num_heads", "ffn_size", "n_value_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("max_positions", "num_classes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.layer_norm_eps <= 0 or self.value_clamp <= 0:
            raise ValueError("layer_norm_eps and value_clamp must be positive")
        self.heads = list(self.heads)
        unknown_heads = [h for h in self.heads if h not in _HEADS]
        if unknown_heads:
            raise ValueError(f"heads {unknown_heads} are not supported; use some of {list(_HEADS)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        for name in ("vocab_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict:
        """Every field as a plain dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        """A configuration from :meth:`to_dict`'s output; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known keys: {sorted(known)}")
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        """The configuration as JSON text, also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> TransformerConfig:
        """A configuration from JSON text or a file of it."""
        s = str(text_or_path)
        text = s if s.lstrip().startswith("{") else Path(s).read_text()
        return cls.from_dict(json.loads(text))
