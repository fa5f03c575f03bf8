"""Bad input: a clear error (or warning) naming the problem, and the AnnData left as it was."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sctransformer as sct
from sctransformer.tokenizers import GeneVocab


def snapshot(adata: AnnData) -> dict:
    x = adata.X
    return {
        "obsm": sorted(adata.obsm.keys()),
        "obs": list(adata.obs.columns),
        "var": list(adata.var.columns),
        "uns": sorted(adata.uns.keys()),
        "layers": sorted(adata.layers.keys()),
        "X": x.toarray().copy() if sp.issparse(x) else np.array(x, copy=True),
    }


def assert_unchanged(adata: AnnData, before: dict) -> None:
    after = snapshot(adata)
    for k in ("obsm", "obs", "var", "uns", "layers"):
        assert after[k] == before[k], k
    np.testing.assert_array_equal(after["X"], before["X"])


def fails(adata: AnnData, match: str, **kw) -> None:
    before = snapshot(adata)
    with pytest.raises(ValueError, match=match):
        sct.pp.tokenize(adata, **kw)
    assert_unchanged(adata, before)


def test_negative_values(counts):
    counts.X = counts.X.copy()
    counts.X.data[3] = -1.5
    fails(counts, "negative values.*raw counts", method="rank")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(counts, bad):
    counts.X.data[7] = bad
    fails(counts, "NaN or infinite", method="bin")


def test_log_normalised_data_warns_for_rank(counts):
    x = counts.X.toarray().astype(np.float64)
    counts.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4))
    before = counts.X.copy()
    with pytest.warns(UserWarning, match="log-normalised"):
        sct.pp.tokenize(counts, method="rank")
    assert (counts.X != before).nnz == 0


def test_scaled_non_integer_data_warns(counts):
    counts.X = counts.X * 1000.5
    with pytest.warns(UserWarning, match="not integer counts.*normalised or scaled"):
        sct.pp.tokenize(counts, method="bin")


@pytest.mark.parametrize(
    ("method", "kw"), [("rank", {}), ("bin", {"include_zeros": True}), ("adaptive_bin", {})]
)
def test_cells_without_counts_warn(counts, method, kw):
    x = counts.X.toarray()
    x[[3, 10]] = 0
    counts.X = sp.csr_matrix(x)
    with pytest.warns(UserWarning, match=r"2 cell\(s\) have no counts.*filter_cells"):
        sct.pp.tokenize(counts, method=method, **kw)
    n = counts.obs["sct_n_tokens"].to_numpy()
    assert n[3] == n[10] == 1  # <cls> only, even where zeros are included
    assert (np.delete(n, [3, 10]) > 1).all()
    assert counts.uns["sct"]["params"]["n_cells_without_tokens"] == 2


@pytest.mark.parametrize("method", ["rank", "bin", "adaptive_bin", "value", "sentence"])
def test_all_cells_empty(counts, method):
    counts.X = sp.csr_matrix(counts.shape, dtype=np.float32)
    fails(counts, "no cell has any expressed gene", method=method)


def test_duplicate_gene_names(counts):
    names = list(counts.var_names)
    names[5] = names[2]
    counts.var_names = names
    fails(counts, r"duplicate gene names.*var_names_make_unique", method="rank")


def test_symbols_against_ensembl_vocab(counts):
    vocab = GeneVocab.from_genes([f"ENSG{j:011d}" for j in range(500)])
    fails(counts, r"Ensembl IDs.*gene symbols.*gene_key", method="rank", vocab=vocab)


def test_too_few_genes_in_vocab(counts):
    vocab = GeneVocab.from_genes(counts.var_names[:30])
    fails(counts, r"only 30 of 300 genes \(10.0%\).*min_gene_fraction", method="bin", vocab=vocab)


def test_unknown_method(counts):
    fails(counts, r"unknown method 'ranks'.*'rank'", method="ranks")


def test_method_required(counts):
    fails(counts, "method is required")


def test_empty_anndata():
    adata = AnnData(np.zeros((0, 10), dtype=np.float32))
    fails(adata, r"empty \(0 cells", method="rank")
    adata = AnnData(np.zeros((4, 0), dtype=np.float32))
    fails(adata, r"empty \(4 cells × 0 genes", method="rank")


@pytest.mark.parametrize(("kw", "n"), [({}, 1), ({"add_eos": True}, 2)])
def test_max_length_leaves_no_room(counts, kw, n):
    fails(
        counts,
        f"max_length=1 leaves no room.*max_length >= {n + 1}",
        method="rank",
        max_length=1,
        **kw,
    )


def test_missing_layer(counts):
    fails(counts, r"layer 'counts' not found", method="rank", layer="counts")


def test_missing_gene_key(counts):
    fails(counts, r"'ensembl' not found in adata.var", method="rank", gene_key="ensembl")


def test_missing_batch_key(counts):
    fails(counts, r"'batch' not found in adata.obs.*donor", method="rank", batch_key="batch")


def test_missing_batch_values(counts):
    counts.obs["donor"] = counts.obs["donor"].astype(object)
    counts.obs.loc[counts.obs_names[:3], "donor"] = np.nan
    fails(counts, r"3 missing values", method="bin", batch_key="donor")


def test_bad_gene_medians(counts):
    fails(counts, "gene_medians='mean'", method="rank", gene_medians="mean")
    fails(counts, "names none of the data's genes", method="rank", gene_medians={"X": 1.0})
    fails(counts, "vocabulary has no gene medians", method="rank", gene_medians="vocab")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"method": "rank", "select": "random"}, "select='random' is not available"),
        ({"method": "bin", "select": "best"}, "select='best'"),
        ({"method": "rank", "include_zeros": True}, "include_zeros=True is meaningless"),
        ({"method": "adaptive_bin", "n_bins": 1}, "n_bins must be at least 2"),
        ({"method": "value", "target_sum": 0}, "must be positive"),
    ],
)
def test_bad_options(counts, kw, match):
    fails(counts, match, **kw)


def test_backed_error_leaves_file_alone(counts, tmp_path):
    import anndata

    counts.X.data[0] = -3
    counts.write_h5ad(tmp_path / "bad.h5ad")
    backed = anndata.read_h5ad(tmp_path / "bad.h5ad", backed="r")
    try:
        with pytest.raises(ValueError, match="negative"):
            sct.pp.tokenize(backed, method="rank", copy=True)
        assert list(backed.obsm) == []
    finally:
        backed.file.close()


def test_gene_names_with_missing_values(counts):
    counts.var["symbol"] = pd.Series(list(counts.var_names), index=counts.var_names, dtype=object)
    counts.var.iloc[4, 0] = None
    fails(counts, r"var\['symbol'\] has 1 missing", method="rank", gene_key="symbol")
