"""The front-door contract, function by function: the keys written, the parameters recorded
(model name, sha256, version, device and seed) and backed AnnData where streaming is promised."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import sctransformer as sct
from conftest import nb_counts
from test_annotate import no_none, tiny_model

RECORDED = {"model", "weights_sha256", "version", "device", "seed"}


@pytest.fixture(scope="module")
def setup():
    adata = nb_counts(90, 80, seed=3)
    model = sct.models.resolve(tiny_model(adata, max_length=40))
    return adata, model


def _params(entry) -> dict:
    assert isinstance(entry, dict) and "params" in entry
    params = entry["params"]
    assert no_none(params)
    return params


def _check_recorded(params, model, seed):
    assert RECORDED <= set(params), RECORDED - set(params)
    assert params["model"] == model.name == "test-tiny"
    assert params["weights_sha256"] == model.sha256
    assert params["version"] == sct.__version__
    assert params["device"] == "cpu"
    assert params["seed"] == seed


def test_tokenize_keys(setup):
    adata, model = setup
    out = sct.pp.tokenize(adata, vocab=model, copy=True, key_added="tk")
    assert {"tk_tokens", "tk_values"} <= set(out.obsm) and "tk_n_tokens" in out.obs
    assert set(out.uns["tk"]) == {"params", "vocab"} and no_none(out.uns["tk"]["params"])
    assert "tk" not in adata.uns  # copy=True leaves the input alone


def test_embed_cells_keys_and_params(setup):
    adata, model = setup
    out = sct.tl.embed_cells(adata, model, device="cpu", seed=7, copy=True, key_added="X_e")
    assert out.obsm["X_e"].shape == (adata.n_obs, model.config.hidden_size)
    params = _params(out.uns["e_embed"])
    _check_recorded(params, model, 7)
    assert params["pooling"] == "cls" and params["layer"] == -1
    assert "X_e" not in adata.obsm


def test_embed_genes_keys_and_params(setup):
    adata, model = setup
    out = sct.tl.embed_genes(adata, model, device="cpu", seed=2, copy=True)
    assert {"sct_gene", "sct_gene_static"} <= set(out.varm)
    assert "sct_gene_n_cells" in out.var
    _check_recorded(_params(out.uns["sct_gene"]), model, 2)


def test_annotate_keys_and_params(setup):
    adata, model = setup
    out, _ = sct.tl.annotate(
        adata, model, labels_key="cell_type", method="knn", device="cpu", seed=4, copy=True
    )
    assert {"sct_label", "sct_label_score"} <= set(out.obs)
    assert "sct_label_proba" in out.obsm
    _check_recorded(_params(out.uns["sct_label"]), model, 4)


def test_attention_grn_keys_and_params(setup):
    adata, model = setup
    out = sct.tl.attention_grn(adata, model, device="cpu", seed=5, copy=True)
    assert {"sct_grn", "sct_grn_n_cells"} <= set(out.varp)
    _check_recorded(_params(out.uns["sct_grn"]), model, 5)


def test_perturb_keys_and_params(setup):
    adata, model = setup
    gene = str(adata.var_names[int(np.argmax(np.asarray((adata.X > 0).sum(0)).ravel()))])
    out = sct.tl.in_silico_perturb(adata, model, genes=[gene], device="cpu", seed=6, copy=True)
    assert "sct_perturb_shift" in out.obsm
    assert set(out.uns["sct_perturb"]) == {"table", "params"}
    _check_recorded(_params(out.uns["sct_perturb"]), model, 6)


def test_benchmark_keys_and_params(setup):
    adata, model = setup
    out = sct.tl.benchmark(
        adata, labels_key="cell_type", methods=["majority", "sct_knn"], model=model,
        device="cpu", seed=8, cv=2, copy=True,
    )  # fmt: skip
    assert {"table", "params"} <= set(out.uns["sct_benchmark"])
    assert "sct_benchmark_split" in out.obs
    _check_recorded(_params(out.uns["sct_benchmark"]), model, 8)


def test_pretrain_params(setup):
    adata, _ = setup
    a = adata.copy()
    sct.pp.tokenize(a, method="rank", max_length=32)
    model = sct.tl.pretrain(a, max_steps=2, batch_size=8, device="cpu", seed=9)
    assert isinstance(model, sct.models.Model)
    params = _params(a.uns["sct_pretrain"])
    assert params["seed"] == 9 and params["version"] == sct.__version__
    assert params["weights_sha256"] == model.sha256


@pytest.fixture
def backed(setup, tmp_path):
    adata, model = setup
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return ad.read_h5ad(path, backed="r"), adata, model


def test_backed_embed_cells_streams_and_equals_in_memory(backed):
    on_disk, adata, model = backed
    ref = sct.tl.embed_cells(adata, model, device="cpu", copy=True)
    got = sct.tl.embed_cells(on_disk, model, device="cpu", chunk_size=16, copy=True)
    np.testing.assert_allclose(got.obsm["X_sct"], ref.obsm["X_sct"], rtol=1e-5, atol=1e-5)


def test_backed_annotate_and_grn_equal_in_memory(backed):
    on_disk, adata, model = backed
    ann = sct.tl.annotate(adata, model, labels_key="cell_type", method="knn", device="cpu")
    ref = ann.predict_proba(adata, device="cpu")
    got = ann.predict_proba(on_disk, device="cpu", chunk_size=16)
    np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), atol=1e-6)
    g_ref = sct.tl.attention_grn(adata, model, device="cpu", copy=True)
    g_got = sct.tl.attention_grn(on_disk, model, device="cpu", chunk_size=16, copy=True)
    np.testing.assert_allclose(
        g_got.varp["sct_grn"].toarray(), g_ref.varp["sct_grn"].toarray(), atol=1e-5
    )


def test_model_from_a_folder_is_named_after_it(setup, tmp_path):
    _, model = setup
    plain = sct.models.Model(model.module, vocab=model.vocab, tokenize_params=model.tokenize_params)
    sct.models.save(plain, tmp_path / "my-model")
    assert sct.models.load(tmp_path / "my-model").name == "my-model"


def test_gene_match_keywords_are_named_in_the_error(setup):
    adata, model = setup
    other = adata[:, :30].copy()
    other.var_names = [f"OTHER{i}" for i in range(27)] + list(adata.var_names[27:30])
    with pytest.raises(ValueError, match="min_gene_fraction="):
        sct.tl.embed_cells(other, model, device="cpu", min_genes=0)
    with pytest.raises(ValueError, match="min_genes="):
        sct.tl.embed_cells(other, model, device="cpu", min_gene_fraction=0.0)
    assert "X_sct" not in other.obsm
