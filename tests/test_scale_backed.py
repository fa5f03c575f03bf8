"""Backed AnnData: every streaming task gives the in-memory result; read-only files refuse writes."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

import sctransformer as sct
from _train_utils import untrained_model
from conftest import nb_counts

KW = {"precision": "fp32", "device": "cpu", "min_genes": 10}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    sct.settings.progress_bars = False
    adata = nb_counts(160, 200, seed=3)
    path = tmp_path_factory.mktemp("backed") / "cells.h5ad"
    adata.write_h5ad(path)
    tok = adata.copy()
    sct.pp.tokenize(tok, method="rank", max_length=24)
    return adata, path, untrained_model(tok)


def backed(path, tmp_path, mode="r+"):
    copy = tmp_path / "copy.h5ad"
    copy.write_bytes(path.read_bytes())
    return ad.read_h5ad(copy, backed=mode)


def test_tokenize_backed_equals_in_memory(setup, tmp_path):
    adata, path, _ = setup
    mem = adata.copy()
    sct.pp.tokenize(mem, method="rank", max_length=24)
    b = backed(path, tmp_path)
    sct.pp.tokenize(b, method="rank", max_length=24, chunk_size=37)  # chunks cut cells oddly
    np.testing.assert_array_equal(b.obsm["sct_tokens"], mem.obsm["sct_tokens"])
    np.testing.assert_array_equal(b.obsm["sct_values"], mem.obsm["sct_values"])
    assert b.uns["sct"]["vocab"] == mem.uns["sct"]["vocab"]


def test_embed_cells_and_genes_backed_equal_in_memory(setup, tmp_path):
    adata, path, model = setup
    mem = adata.copy()
    sct.tl.embed_cells(mem, model, **KW)
    sct.tl.embed_genes(mem, model, **KW)
    b = backed(path, tmp_path)
    sct.tl.embed_cells(b, model, chunk_size=50, **KW)
    sct.tl.embed_genes(b, model, chunk_size=50, **KW)
    np.testing.assert_allclose(b.obsm["X_sct"], mem.obsm["X_sct"], atol=1e-5)
    np.testing.assert_allclose(b.varm["sct_gene"], mem.varm["sct_gene"], atol=1e-5)
    np.testing.assert_array_equal(b.var["sct_gene_n_cells"], mem.var["sct_gene_n_cells"])
    assert b.isbacked and b.obsm["X_sct"].shape == (160, 32)


def test_annotate_prediction_backed_equals_in_memory(setup, tmp_path):
    adata, path, model = setup
    ref = adata.copy()
    annotator = sct.tl.annotate(
        ref, model, labels_key="cell_type", method="linear", device="cpu", min_genes=10
    )
    mem = adata.copy()
    sct.tl.annotate(mem, annotator, device="cpu", min_genes=10)
    b = backed(path, tmp_path)
    sct.tl.annotate(b, annotator, device="cpu", min_genes=10, chunk_size=45)
    pd.testing.assert_series_equal(b.obs["sct_label"], mem.obs["sct_label"])
    np.testing.assert_allclose(
        np.asarray(b.obsm["sct_label_proba"]), np.asarray(mem.obsm["sct_label_proba"]), atol=1e-5
    )


def test_attention_grn_backed_equals_in_memory(setup, tmp_path):
    adata, path, model = setup
    mem = adata.copy()
    sct.tl.attention_grn(mem, model, groupby="cell_type", device="cpu", min_genes=10)
    b = backed(path, tmp_path)
    sct.tl.attention_grn(b, model, groupby="cell_type", device="cpu", min_genes=10, chunk_size=33)
    _assert_same(b.uns["sct_grn"], mem.uns["sct_grn"], "uns['sct_grn']")


def _assert_same(a, b, where):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            if k != "params":
                _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5)
    elif hasattr(a, "toarray"):
        np.testing.assert_allclose(a.toarray(), b.toarray(), atol=1e-5, err_msg=where)
    elif isinstance(a, np.ndarray) and a.dtype.kind == "f":
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=where)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)


def _file_keys(path):
    with h5py.File(path, "r") as f:
        return {g: sorted(f[g].keys()) for g in ("obs", "obsm", "uns", "var", "varm")}


@pytest.mark.parametrize("task", ["tokenize", "embed_cells", "embed_genes", "annotate", "grn"])
def test_read_only_backed_refuses_to_write(setup, tmp_path, task):
    _, path, model = setup
    b = backed(path, tmp_path, mode="r")
    before, obsm, uns = _file_keys(b.filename), set(b.obsm), set(b.uns)
    run = {
        "tokenize": lambda: sct.pp.tokenize(b, method="rank"),
        "embed_cells": lambda: sct.tl.embed_cells(b, model, **KW),
        "embed_genes": lambda: sct.tl.embed_genes(b, model, **KW),
        "annotate": lambda: sct.tl.annotate(b, model, labels_key="cell_type", device="cpu"),
        "grn": lambda: sct.tl.attention_grn(b, model, device="cpu", min_genes=10),
    }[task]
    with pytest.raises(ValueError, match=r"read-only \(backed='r'\).*backed='r\+'.*copy=True"):
        run()
    assert set(b.obsm) == obsm and set(b.uns) == uns
    b.file.close()
    assert _file_keys(b.filename) == before


def test_read_only_backed_with_copy_returns_results(setup, tmp_path):
    adata, path, model = setup
    b = backed(path, tmp_path, mode="r")
    out = sct.tl.embed_cells(b, model, copy=True, **KW)
    mem = sct.tl.embed_cells(adata.copy(), model, copy=True, **KW)
    np.testing.assert_allclose(out.obsm["X_sct"], mem.obsm["X_sct"], atol=1e-5)
    assert "X_sct" not in b.obsm


def test_zarr_store_streams_and_equals_in_memory(setup, tmp_path):
    adata, _, model = setup
    store = tmp_path / "cells.zarr"
    with pytest.warns(UserWarning, match="zarr v2"):  # anndata's notice about its default
        adata.write_zarr(store)
    z = sct.open_zarr(store)
    assert type(z.X).__name__ == "_CSRDataset"  # the matrix stays in the store
    mem = adata.copy()
    sct.tl.embed_cells(mem, model, **KW)
    sct.tl.embed_genes(mem, model, **KW)
    sct.tl.embed_cells(z, model, chunk_size=50, **KW)
    sct.tl.embed_genes(z, model, chunk_size=50, **KW)
    np.testing.assert_allclose(z.obsm["X_sct"], mem.obsm["X_sct"], atol=1e-5)
    np.testing.assert_allclose(z.varm["sct_gene"], mem.varm["sct_gene"], atol=1e-5)
    sct.pp.tokenize(mem, method="rank", max_length=24)
    sct.pp.tokenize(z, method="rank", max_length=24, chunk_size=37)
    np.testing.assert_array_equal(z.obsm["sct_tokens"], mem.obsm["sct_tokens"])


def test_zarr_store_that_is_not_csr_or_anndata_is_refused(setup, tmp_path):
    adata, _, _ = setup
    import zarr

    empty = tmp_path / "empty.zarr"
    zarr.open_group(empty, mode="w")
    with pytest.raises(ValueError, match=r"not an AnnData zarr store.*write_zarr"):
        sct.open_zarr(empty)
    csc = adata.copy()
    csc.X = csc.X.tocsc()
    with pytest.warns(UserWarning, match="zarr v2"):
        csc.write_zarr(tmp_path / "csc.zarr")
    with pytest.raises(ValueError, match=r"csc_matrix.*store it as CSR"):
        sct.open_zarr(tmp_path / "csc.zarr")
