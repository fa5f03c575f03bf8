"""Classifier fine-tuning fits the machine: passes of fewer cells, or an error before training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import sctransformer as sct
import sctransformer.train.budget as budget
from _train_utils import tiny_config, tokenized_pbmc, vocab_of
from sctransformer._tokens import read_tokens
from sctransformer.nn import CellTransformer
from sctransformer.train.budget import HEADROOM, TrainingMemoryError, estimate_training_bytes
from sctransformer.train.finetune import finetune_classifier, with_classifier

BATCH = 12


@pytest.fixture(scope="module")
def cells():
    """60 cells of different lengths (some fill the 256 slots), three labels."""
    adata = tokenized_pbmc(max_length=256)[:60].copy()
    assert len(np.unique(adata.obs["sct_n_tokens"])) > 10
    vocab = vocab_of(adata)
    data = read_tokens(adata, "sct", pad_id=vocab.pad_id)
    torch.manual_seed(0)
    encoder = CellTransformer(tiny_config(vocab, 256, num_layers=1))
    net = with_classifier(encoder, 3, seed=0)
    return net, data, np.arange(60) % 3, vocab


def _finetune(net, data, y, vocab, **kw):
    """Fine-tune ``net`` itself (callers pass a copy) with dropout off, fp32, two epochs."""
    settings = dict(
        freeze=False, pooling="cls", layer=-1, epochs=2, batch_size=BATCH, lr=1e-3,
        encoder_lr=1e-4, weight_decay=0.01, class_weight=True, validation_fraction=0.2,
        patience=0, device="cpu", seed=0,
    )  # fmt: skip
    return finetune_classifier(net, data, y, is_gene=vocab.is_gene, **{**settings, **kw})


def _memory_for(net, data, cells: int) -> int:
    """Bytes in which exactly ``cells`` of the longest cells fit one training pass."""
    n_params = sum(p.numel() for p in net.parameters())
    longest = int(data.lengths.max())

    def need(b):
        return estimate_training_bytes(net.config, b, longest, objective=None, n_params=n_params)

    return int(need(cells).total / HEADROOM) + 1


def test_small_memory_runs_passes_with_the_same_result(cells, monkeypatch, capsys):
    net, data, y, vocab = cells
    ref, ref_history = _finetune(copy.deepcopy(net), data, y, vocab)
    memory = _memory_for(net, data, 5)
    asked = []
    monkeypatch.setattr(budget, "available_memory", lambda device="cpu": asked.append(1) or memory)
    monkeypatch.setattr(sct.settings, "verbosity", 2)
    got, history = _finetune(copy.deepcopy(net), data, y, vocab)
    assert asked  # the plan asked how much memory there is
    err = capsys.readouterr().err
    assert "fine-tune memory" in err and "each step in passes of 5 cells" in err
    np.testing.assert_allclose(history["train_loss"], ref_history["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(history["val_loss"], ref_history["val_loss"], rtol=1e-5)
    # relative to each tensor's scale: the head's first layer is divided by the embeddings'
    # spread when the standardisation is folded into it, so its entries are large
    want = ref.state_dict()
    for name, p in got.state_dict().items():
        q = want[name]
        scale = max(float(q.abs().max()), 1e-3)
        assert float((p - q).abs().max()) <= 1e-5 * scale, name


def test_memory_limit_argument_plans_the_passes(cells, monkeypatch, capsys):
    net, data, y, vocab = cells
    monkeypatch.setattr(sct.settings, "verbosity", 2)
    _finetune(copy.deepcopy(net), data, y, vocab, memory_limit=_memory_for(net, data, 4))
    assert "each step in passes of 4 cells" in capsys.readouterr().err


def test_impossible_memory_raises_before_any_weight_changes(cells, monkeypatch):
    net, data, y, vocab = cells
    net = copy.deepcopy(net)
    before = copy.deepcopy(net.state_dict())
    monkeypatch.setattr(budget, "available_memory", lambda device="cpu": 2**20)
    with pytest.raises(TrainingMemoryError, match="GiB is available"):
        _finetune(net, data, y, vocab, epochs=1)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_frozen_encoder_needs_no_plan(cells, monkeypatch):
    """Only the head trains (on fixed vectors): a tiny memory does not stop it."""
    net, data, y, vocab = cells
    monkeypatch.setattr(budget, "available_memory", lambda device="cpu": 2**20)
    _, history = _finetune(copy.deepcopy(net), data, y, vocab, freeze=True, epochs=1)
    assert len(history) == 1
