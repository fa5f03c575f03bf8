"""Helpers for the training, embedding and checkpoint tests: tiny configs and models."""

from __future__ import annotations

import numpy as np
import torch

import sctransformer as sct
from _nn_utils import randomize_
from sctransformer.nn import CellTransformer, TransformerConfig
from sctransformer.tokenizers import GeneVocab


def vocab_of(adata, key: str = "sct") -> GeneVocab:
    return GeneVocab.from_json(adata.uns[key]["vocab"])


def tiny_config(vocab: GeneVocab, width: int, **kw) -> TransformerConfig:
    base = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        ffn_size=64,
        max_positions=width,
        dropout=0.0,
        attention_dropout=0.0,
        layer_norm_eps=1e-5,
        pad_token_id=vocab.pad_id,
    )
    base.update(kw)
    return TransformerConfig(**base)


def untrained_model(adata, *, key: str = "sct", seed: int = 0, **kw) -> CellTransformer:
    """A model for ``adata``'s tokens with random weights, set up as ``tl.pretrain`` would."""
    vocab = vocab_of(adata, key)
    params = dict(adata.uns[key]["params"])
    width = adata.obsm[f"{key}_tokens"].shape[1]
    torch.manual_seed(seed)
    model = CellTransformer(tiny_config(vocab, width, **kw))
    randomize_(model, seed, scale=0.3)
    model.vocab = vocab
    model.tokenize_params = {
        k: v for k, v in params.items() if k not in ("version", "n_genes_matched")
    }
    model.metadata = {"name": "test-model"}
    return model.eval()


def tokenized_pbmc(max_length: int = 64, **kw):
    sct.settings.progress_bars = False
    adata = sct.datasets.pbmc68k_counts()
    sct.pp.tokenize(adata, method="rank", max_length=max_length, **kw)
    return adata


def loss_drop(history, n: int = 5) -> tuple[float, float]:
    loss = np.asarray(history["loss"], dtype=float)
    assert np.isfinite(loss).all()
    return float(loss[:n].mean()), float(loss[-n:].mean())
