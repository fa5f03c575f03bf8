"""Checkpoints during pretraining, and resuming from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sctransformer as sct
from _train_utils import tiny_config, vocab_of


def _data(make_counts):
    adata = make_counts(n_cells=72, n_genes=120, seed=1)
    sct.pp.tokenize(adata, method="bin", max_length=40)
    return adata


def _config(adata):
    # dropout on: resuming must also reproduce the dropout masks of the remaining steps
    return tiny_config(
        vocab_of(adata),
        40,
        dropout=0.1,
        attention_dropout=0.1,
        value_input="bins",
        heads=["mlm", "bins"],
    )


def _run(adata, **kw):
    return sct.tl.pretrain(
        adata,
        model=_config(adata),
        epochs=2,
        batch_size=16,
        lr=3e-3,
        seed=5,
        device="cpu",
        precision="fp32",
        **kw,
    )


@pytest.mark.slow
def test_resume_equals_uninterrupted(make_counts, tmp_path):
    ckpt = tmp_path / "ckpt"
    full_data = _data(make_counts)
    full = _run(full_data, checkpoint_dir=str(ckpt), checkpoint_every=4)
    full_hist = full_data.uns["sct_pretrain"]["history"]
    assert len(full_hist) == 10  # 72 cells, batches of 16, two epochs
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-4", "step-8"]

    resumed_data = _data(make_counts)
    resumed = _run(resumed_data, resume_from=str(ckpt / "step-4"))
    resumed_hist = resumed_data.uns["sct_pretrain"]["history"]

    cols = ["step", "epoch", "loss", "lr", "n_predicted"]
    assert list(resumed_hist["step"]) == list(range(1, 11))
    np.testing.assert_allclose(
        resumed_hist[cols].to_numpy(float), full_hist[cols].to_numpy(float), rtol=1e-6
    )
    full_state, resumed_state = full.state_dict(), resumed.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        torch.testing.assert_close(resumed_state[key], value, atol=1e-6, rtol=0, msg=key)
    # the run moved away from its initial weights, so equality is not trivial
    fresh = _config(full_data)
    torch.manual_seed(5)
    init = sct.nn.CellTransformer(fresh).state_dict()
    assert max((init[k] - v).abs().max().item() for k, v in full_state.items()) > 1e-3


def test_checkpoint_folder_is_a_loadable_model(make_counts, tmp_path):
    adata = _data(make_counts)
    model = _run(adata, max_steps=2, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    step = tmp_path / "step-2"
    assert {"model", "trainer_state.pt", "history.json"} <= {p.name for p in step.iterdir()}
    loaded = sct.models.load(step / "model")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.metadata["objective"] == "mlm"
    assert loaded.tokenize_params["method"] == "bin"


def test_resume_from_a_model_folder_is_refused(make_counts, tmp_path):
    adata = _data(make_counts)
    model = _run(adata, max_steps=1)
    sct.models.save(model, tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="trainer_state"):
        _run(_data(make_counts), resume_from=str(tmp_path / "m"))


def test_checkpoint_every_needs_a_folder(make_counts):
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _run(_data(make_counts), checkpoint_every=2)
