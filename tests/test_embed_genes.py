"""sct.tl.embed_genes against a plain per-cell reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sctransformer as sct
from _train_utils import untrained_model


@pytest.fixture(scope="module")
def genes_data():
    from conftest import nb_counts

    adata = nb_counts(n_cells=48, n_genes=90, seed=3)
    x = adata.X.toarray()
    x[:, 5] = 0  # GENE5 is expressed by no cell
    adata.X = sp.csr_matrix(x)
    sct.settings.progress_bars = False
    sct.pp.tokenize(adata, method="rank", max_length=32)
    return adata


@pytest.fixture(scope="module")
def model(genes_data):
    return untrained_model(genes_data, seed=2)


def _reference(model, adata, cells):
    """Mean last-layer state of each vocabulary gene over ``cells``, one forward per cell."""
    tokens = np.asarray(adata.obsm["sct_tokens"])
    lengths = adata.obs["sct_n_tokens"].to_numpy()
    is_gene = np.asarray(model.vocab.is_gene)
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    with torch.no_grad():
        for i in cells:
            t = tokens[i, : lengths[i]]
            h = model(torch.as_tensor(t, dtype=torch.long)[None]).last_hidden_state[0].numpy()
            for tok, state in zip(t, h, strict=True):
                if is_gene[tok]:
                    sums[int(tok)] = sums.get(int(tok), 0) + state.astype(np.float64)
                    counts[int(tok)] = counts.get(int(tok), 0) + 1
    ids = model.vocab.encode_genes(list(adata.var_names))
    out = np.zeros((adata.n_vars, model.config.hidden_size))
    n = np.zeros(adata.n_vars, dtype=int)
    for j, tok in enumerate(ids):
        if tok in counts:
            out[j] = sums[tok] / counts[tok]
            n[j] = counts[tok]
    return out, n


def test_gene_embeddings_equal_per_cell_reference(genes_data, model):
    adata = genes_data.copy()
    sct.tl.embed_genes(adata, model, groupby="cell_type", batch_size=5, precision="fp32")
    d = model.config.hidden_size
    assert adata.varm["sct_gene"].shape == (adata.n_vars, d)
    assert adata.varm["sct_gene"].dtype == np.float32
    ref, n_ref = _reference(model, adata, range(adata.n_obs))
    np.testing.assert_allclose(adata.varm["sct_gene"], ref, atol=1e-5)
    np.testing.assert_array_equal(adata.var["sct_gene_n_cells"], n_ref)

    # the gene no cell expresses: zeros and no contributing cells
    j = adata.var_names.get_loc("GENE5")
    assert adata.var["sct_gene_n_cells"].iloc[j] == 0
    assert not adata.varm["sct_gene"][j].any()
    assert (adata.var["sct_gene_n_cells"] > 0).sum() > 30

    # per-group matrices equal the reference over that group's cells
    groups = adata.uns["sct_gene"]["groups"]
    assert sorted(groups) == sorted(adata.obs["cell_type"].cat.categories)
    for g, m in groups.items():
        assert m.shape == (adata.n_vars, d)
        cells = np.flatnonzero(adata.obs["cell_type"].to_numpy() == g)
        np.testing.assert_allclose(m, _reference(model, adata, cells)[0], atol=1e-5)

    # static embeddings are the token embedding rows of each gene
    ids = model.vocab.encode_genes(list(adata.var_names))
    static = model.embeddings.token.weight.detach().numpy()
    found = ids >= 0
    np.testing.assert_array_equal(adata.varm["sct_gene_static"][found], static[ids[found]])
    assert not adata.varm["sct_gene_static"][~found].any()
    params = adata.uns["sct_gene"]["params"]
    assert all(v is not None for v in params.values())
    assert params["groupby"] == "cell_type" and params["model"] == "test-model"


def test_gene_embeddings_independent_of_batch_size_and_copy(genes_data, model):
    adata = genes_data.copy()
    a = sct.tl.embed_genes(adata, model, batch_size=1, precision="fp32", copy=True)
    b = sct.tl.embed_genes(adata, model, batch_size=64, chunk_size=7, precision="fp32", copy=True)
    np.testing.assert_allclose(a.varm["sct_gene"], b.varm["sct_gene"], atol=1e-5)
    assert "sct_gene" not in adata.varm and "sct_gene" not in adata.uns
    assert "groups" not in a.uns["sct_gene"]
    assert a.uns["sct_gene"]["params"]["groupby"] == ""


def test_gene_embeddings_bad_input(genes_data, model):
    adata = genes_data.copy()
    with pytest.raises(ValueError, match="not_a_column"):
        sct.tl.embed_genes(adata, model, groupby="not_a_column")
    with pytest.raises(ValueError, match="layer"):
        sct.tl.embed_genes(adata, model, layer=5)
    assert "sct_gene" not in adata.varm and "sct_gene" not in adata.uns
