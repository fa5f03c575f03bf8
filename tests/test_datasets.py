"""Bundled data sets: shapes, labels, and the count reconstruction of pbmc68k."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import sctransformer as sct


def test_pbmc68k_counts_shape_and_labels(pbmc):
    assert pbmc.shape == (700, 765)
    assert pbmc.obs["bulk_labels"].nunique() == 10
    assert "X_umap" in pbmc.obsm
    assert sp.issparse(pbmc.X) and (pbmc.X != pbmc.layers["counts"]).nnz == 0
    assert pbmc.var_names.is_unique


def test_pbmc68k_counts_are_a_faithful_reconstruction(pbmc):
    x = sp.csr_matrix(pbmc.X, dtype=np.float64)
    # integer counts, and each cell's smallest nonzero count is one
    assert np.array_equal(x.data, np.round(x.data)) and x.data.min() >= 1
    per_cell_min = np.minimum.reduceat(x.data, x.indptr[:-1])
    assert (per_cell_min == 1).all()
    # log1p(counts / total * scale) is scanpy's .raw, with one scale per cell
    raw = sp.csr_matrix(sc.datasets.pbmc68k_reduced().raw.X, dtype=np.float64)
    raw.eliminate_zeros()
    raw.sort_indices()
    np.testing.assert_array_equal(raw.indptr, x.indptr)
    np.testing.assert_array_equal(raw.indices, x.indices)
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    totals = np.asarray(x.sum(axis=1)).ravel()
    ratio = np.expm1(raw.data) / (x.data / totals[rows])
    per_cell = np.array([np.median(ratio[rows == i]) for i in range(x.shape[0])])
    # scanpy stores .raw rounded to 3 decimals: agreement is to that rounding, in every cell
    err = np.abs(np.log1p(x.data / totals[rows] * per_cell[rows]) - raw.data)
    assert err.max() < 2e-3 and np.median(err) < 5e-4
    # and not by accident: counts off by one would break it
    shifted = np.abs(np.log1p((x.data + 1) / totals[rows] * per_cell[rows]) - raw.data)
    assert (shifted > 1e-2).mean() > 0.99


def test_pbmc68k_tokenizes_without_warnings(pbmc):
    sct.pp.tokenize(pbmc, method="rank")
    assert pbmc.uns["sct"]["params"]["n_cells_without_tokens"] == 0


@pytest.mark.slow
def test_celltypist_sample():
    adata = sct.datasets.celltypist_sample()
    assert adata.shape == (559, 32786)
    assert adata.var_names.is_unique
    data = adata.X.data
    assert np.array_equal(data, np.round(data)) and data.min() > 0
    assert adata.uns["dataset"]["name"] == "celltypist_sample"
