"""sct.tl.embed_cells: agreement with the model's forward pass, invariances, storage, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import sctransformer as sct
from _train_utils import tokenized_pbmc, untrained_model


@pytest.fixture(scope="module")
def pbmc_tok():
    """120 pbmc68k cells, rank-tokenized (64 tokens, <cls> first)."""
    adata = tokenized_pbmc(max_length=64)
    return adata[::6].copy()


@pytest.fixture(scope="module")
def model(pbmc_tok):
    return untrained_model(pbmc_tok)


def _embed(adata, model, **kw):
    kw = {"precision": "fp32", "device": "cpu", **kw}
    return sct.tl.embed_cells(adata, model, copy=True, **kw).obsm["X_sct"]


def _forward_states(model, adata, layer=None):
    """Per-cell reference with the padded forward pass, one cell at a time."""
    tokens = np.asarray(adata.obsm["sct_tokens"])
    lengths = adata.obs["sct_n_tokens"].to_numpy()
    out = []
    with torch.no_grad():
        for row, n in zip(tokens, lengths, strict=True):
            t = torch.as_tensor(row[:n], dtype=torch.long)[None]
            res = model(t, output_hidden_states=layer is not None)
            h = res.last_hidden_state if layer is None else res.hidden_states[layer]
            out.append(h[0])
    return out


def test_cls_embedding_equals_forward(pbmc_tok, model):
    emb = _embed(pbmc_tok, model, pooling="cls")
    assert emb.dtype == np.float32 and emb.shape == (pbmc_tok.n_obs, 32)
    ref = np.stack([h[0].numpy() for h in _forward_states(model, pbmc_tok)])
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_mean_pooling_excludes_special_tokens(pbmc_tok, model):
    emb = _embed(pbmc_tok, model, pooling="mean")
    states = _forward_states(model, pbmc_tok)
    tokens = np.asarray(pbmc_tok.obsm["sct_tokens"])
    assert (tokens[:, 0] == model.vocab.cls_id).all()
    genes_only = np.stack([h[1:].mean(0).numpy() for h in states])  # <cls> left out
    with_cls = np.stack([h.mean(0).numpy() for h in states])
    np.testing.assert_allclose(emb, genes_only, atol=1e-5)
    assert np.abs(emb - with_cls).max() > 1e-3


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_layer_minus_two_equals_forward_hidden_state(pbmc_tok, model, pooling):
    adata = pbmc_tok[:40].copy()
    emb = _embed(adata, model, pooling=pooling, layer=-2)
    # a 2-layer model: hidden_states = (embeddings, layer 1, layer 2); -2 is layer 1's output
    states = _forward_states(model, adata, layer=1)
    ref = np.stack([(h[0] if pooling == "cls" else h[1:].mean(0)).numpy() for h in states])
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    np.testing.assert_allclose(_embed(adata, model, pooling=pooling, layer=1), emb, atol=1e-6)
    assert np.abs(_embed(adata, model, pooling=pooling) - emb).max() > 1e-3


def test_independent_of_batch_size_and_cell_order(pbmc_tok, model):
    ref = _embed(pbmc_tok, model, batch_size=64)
    for batch_size in (1, 7, 200):
        np.testing.assert_allclose(_embed(pbmc_tok, model, batch_size=batch_size), ref, atol=1e-5)
    perm = np.random.default_rng(0).permutation(pbmc_tok.n_obs)
    shuffled = _embed(pbmc_tok[perm].copy(), model, batch_size=16)
    np.testing.assert_allclose(shuffled, ref[perm], atol=1e-5)


def test_tokens_in_obsm_or_on_the_fly(pbmc_tok, model):
    with_tokens = sct.tl.embed_cells(pbmc_tok, model, precision="fp32", device="cpu", copy=True)
    raw = pbmc_tok.copy()
    for key in list(raw.obsm):
        del raw.obsm[key]
    del raw.uns["sct"]
    on_the_fly = sct.tl.embed_cells(raw, model, precision="fp32", device="cpu", copy=True)
    assert with_tokens.uns["sct_embed"]["params"]["tokens_reused"] is True
    assert on_the_fly.uns["sct_embed"]["params"]["tokens_reused"] is False
    np.testing.assert_allclose(on_the_fly.obsm["X_sct"], with_tokens.obsm["X_sct"], atol=1e-5)
    assert "sct_tokens" not in raw.obsm  # tokenizing on the fly writes no tokens


def test_backed_anndata_in_chunks(pbmc_tok, model, tmp_path):
    import anndata as ad

    raw = pbmc_tok.copy()
    for key in list(raw.obsm):
        del raw.obsm[key]
    del raw.uns["sct"]
    ref = _embed(raw, model)
    raw.write_h5ad(tmp_path / "cells.h5ad")
    # in-place results need a writable file (a read-only one is refused)
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r+")
    assert backed.isbacked
    sct.tl.embed_cells(backed, model, chunk_size=25, batch_size=8, precision="fp32", device="cpu")
    np.testing.assert_allclose(backed.obsm["X_sct"], ref, atol=1e-5)
    backed.file.close()


def test_copy_key_added_and_params(pbmc_tok, model):
    adata = pbmc_tok.copy()
    before = set(adata.obsm), set(adata.uns)
    out = sct.tl.embed_cells(adata, model, key_added="X_tiny", device="cpu", copy=True)
    assert (set(adata.obsm), set(adata.uns)) == before  # the original is untouched
    assert "X_tiny" in out.obsm and "tiny_embed" in out.uns and "X_sct" not in out.obsm
    assert sct.tl.embed_cells(adata, model, device="cpu", precision="fp32") is None
    assert adata.obsm["X_sct"].shape == (adata.n_obs, 32)
    params = adata.uns["sct_embed"]["params"]
    assert all(v is not None for v in params.values()), params
    assert params["model"] == "test-model"
    assert re.fullmatch(r"[0-9a-f]{64}", params["weights_sha256"])
    assert params["version"] == sct.__version__
    assert params["device"] == "cpu"
    assert params["pooling"] == "cls" and params["layer"] == -1
    # the h5ad can hold every entry
    adata.write_h5ad(_tmp_h5ad(adata))


def _tmp_h5ad(adata):
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp()) / "out.h5ad"


def test_bf16_agrees_with_fp32(pbmc_tok, model):
    # random weights of scale 0.3 in every parameter: larger activations than a trained model
    adata = pbmc_tok
    for pooling in ("cls", "mean"):
        fp32 = _embed(adata, model, pooling=pooling, precision="fp32")
        bf16 = _embed(adata, model, pooling=pooling, precision="bf16")
        cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
        print(f"bf16 vs fp32 ({pooling}): min cosine {cos.min():.5f}")
        assert cos.min() >= 0.999, cos.min()
        assert np.abs(fp32 - bf16).max() > 0  # bf16 really ran


def test_bad_input_raises_and_leaves_adata_unchanged(pbmc_tok, model):
    adata = pbmc_tok[:20].copy()
    before = (set(adata.obsm), set(adata.uns), set(adata.obs.columns))
    bad = [
        ({"layer": 0}, "layer"),
        ({"layer": 3}, "layer"),
        ({"layer": -3}, "layer"),
        ({"pooling": "max"}, "pooling"),
        ({"batch_size": 0}, "batch_size"),
    ]
    for kw, match in bad:
        with pytest.raises(ValueError, match=match):
            sct.tl.embed_cells(adata, model, device="cpu", **kw)
        assert (set(adata.obsm), set(adata.uns), set(adata.obs.columns)) == before
    with pytest.raises(ValueError, match="empty"):
        sct.tl.embed_cells(adata[:0].copy(), model, device="cpu")
    with pytest.raises(ValueError, match="device"):
        sct.tl.embed_cells(adata, model, device="cuda:7" if not torch.cuda.is_available() else "")
    assert (set(adata.obsm), set(adata.uns), set(adata.obs.columns)) == before


def test_cls_pooling_on_a_model_without_cls():
    adata = tokenized_pbmc(max_length=32, add_cls=False)[:10].copy()
    model = untrained_model(adata)
    before = (set(adata.obsm), set(adata.uns))
    with pytest.raises(ValueError, match="cls"):
        sct.tl.embed_cells(adata, model, pooling="cls", device="cpu")
    assert (set(adata.obsm), set(adata.uns)) == before
    # the default then is mean pooling
    sct.tl.embed_cells(adata, model, device="cpu")
    assert adata.uns["sct_embed"]["params"]["pooling"] == "mean"


def test_auto_precision_is_decided_once_and_recorded(pbmc_tok, model, monkeypatch):
    # "auto" is resolved once per call: every batch gets the same named precision, and params
    # record that name rather than "auto"
    from sctransformer.nn import precision as prec

    decided = {"n": 0}
    real = prec.resolve_precision

    def counting(precision, *args, **kw):
        decided["n"] += precision == "auto"
        return real(precision, *args, **kw)

    seen = []
    module = sct.models.resolve(model).module
    encode = type(module).encode

    def spy(self, *args, precision="fp32", **kw):
        seen.append(precision)
        return encode(self, *args, precision=precision, **kw)

    monkeypatch.setattr(prec, "resolve_precision", counting)
    monkeypatch.setattr(type(module), "encode", spy)
    out = sct.tl.embed_cells(
        pbmc_tok, model, precision="auto", device="cpu", batch_size=16, chunk_size=50, copy=True
    )
    recorded = out.uns["sct_embed"]["params"]["precision"]
    assert recorded in ("fp32", "bf16")
    assert len(seen) >= 3 and set(seen) == {recorded}  # several chunks and batches, one name
    assert decided["n"] == 1
    with pytest.raises(ValueError, match="precision='fp64' is not supported"):
        sct.tl.embed_cells(pbmc_tok, model, precision="fp64", device="cpu", copy=True)
