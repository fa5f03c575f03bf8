"""Shared helpers for the nn tests: small configs and random padded batches."""

from __future__ import annotations

import torch

from sctransformer.nn import TransformerConfig


def small_config(**kw) -> TransformerConfig:
    base = dict(
        vocab_size=97,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        ffn_size=64,
        max_positions=64,
        dropout=0.0,
        attention_dropout=0.0,
        layer_norm_eps=1e-5,
    )
    base.update(kw)
    return TransformerConfig(**base)


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Give every parameter (LayerNorms and biases too) random values so bugs show: LayerNorm
    weights ``1 + 0.2 * noise``, everything else ``scale * noise``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(scale * noise)
    return model


def padded_batch(lengths, vocab_size=97, seed=0, max_len=None):
    """Random tokens (never the pad id 0) right-padded with 0; returns tokens, lengths."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths)
    max_len = max_len or int(lengths.max())
    tokens = torch.randint(1, vocab_size, (len(lengths), max_len), generator=gen)
    tokens[torch.arange(max_len)[None, :] >= lengths[:, None]] = 0
    return tokens, lengths
