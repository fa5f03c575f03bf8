"""sct.tl.attention_grn's other estimators (embedding, deletion, attention × gradient) and
condition differences, each against a per-cell reference written out here."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import sctransformer as sct
from _train_utils import untrained_model


@pytest.fixture
def tiny(make_counts):
    """12 cells × 10 genes, rank tokens (≤ 7 genes + <cls>), two cell types."""
    adata = make_counts(12, 10, n_types=2, seed=5)
    sct.pp.tokenize(adata, method="rank", max_length=8)
    return adata


@pytest.fixture
def model(tiny):
    return untrained_model(tiny, seed=4)


def _real_tokens(adata, model):
    pad = model.vocab.pad_id
    return [row[row != pad] for row in adata.obsm["sct_tokens"].astype(np.int64)]


def _gene_col(adata, model):
    """vocabulary id -> var position."""
    ids = model.vocab.encode_genes(list(adata.var_names))
    return {int(t): j for j, t in enumerate(ids) if t >= 0}


def _hidden(model, tokens: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        t = torch.as_tensor(tokens[None])
        return model(t, padding_mask=torch.ones_like(t, dtype=torch.bool)).last_hidden_state[0]


def _dense(adata, key="sct_grn"):
    return adata.varp[key].toarray(), adata.varp[f"{key}_n_cells"].toarray()


def test_embedding_equals_cosine_of_mean_contextual_embeddings(tiny, model):
    sct.tl.attention_grn(tiny, model, method="embedding", top_k=None, min_cells=1)
    col = _gene_col(tiny, model)
    g = tiny.n_vars
    sums = np.zeros((g, model.config.hidden_size))
    n = np.zeros(g)
    pairs = np.zeros((g, g))
    for tokens in _real_tokens(tiny, model):
        h = _hidden(model, tokens).numpy()
        present = [(p, col[int(t)]) for p, t in enumerate(tokens) if int(t) in col]
        for p, j in present:
            sums[j] += h[p]
            n[j] += 1
        for _, a in present:
            for _, b in present:
                pairs[a, b] += 1
    mean = sums / np.maximum(n, 1)[:, None]
    unit = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    ref = unit @ unit.T
    ref = np.where(pairs > 0, ref, 0)
    np.fill_diagonal(ref, 0)
    got, counts = _dense(tiny)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    off = ~np.eye(g, dtype=bool)
    np.testing.assert_array_equal(counts[off & (pairs > 0)], pairs[off & (pairs > 0)])
    assert tiny.uns["sct_grn"]["params"]["method"] == "embedding"


def test_deletion_equals_per_cell_deletion_by_hand(tiny, model):
    sct.tl.attention_grn(tiny, model, method="deletion", top_k=None, min_cells=1)
    col = _gene_col(tiny, model)
    g = tiny.n_vars
    sums, counts = np.zeros((g, g)), np.zeros((g, g))
    for tokens in _real_tokens(tiny, model):
        h = _hidden(model, tokens).numpy()
        for p, t in enumerate(tokens):
            if int(t) not in col:
                continue
            kept = np.delete(tokens, p)
            h2 = _hidden(model, kept).numpy()
            for q, u in enumerate(tokens):
                if q == p or int(u) not in col:
                    continue
                a, b = h[q], h2[q if q < p else q - 1]
                cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
                sums[col[int(t)], col[int(u)]] += 1 - cos
                counts[col[int(t)], col[int(u)]] += 1
    ref = np.where(counts > 0, sums / np.maximum(counts, 1), 0)
    np.fill_diagonal(ref, 0)
    got, n_cells = _dense(tiny)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    nz = got != 0
    np.testing.assert_array_equal(n_cells[nz], counts[nz])
    # the planted structure of deletion: removing a gene moves the others (no zero row)
    assert (ref.sum(1)[counts.sum(1) > 0] > 0).all()


def test_attention_grad_equals_autograd_by_hand(tiny, model):
    sct.tl.attention_grn(
        tiny, model, method="attention_grad", layers="all", top_k=None, min_cells=1
    )
    col = _gene_col(tiny, model)
    g = tiny.n_vars
    is_gene = np.asarray(model.vocab.is_gene)
    sums, counts = np.zeros((g, g)), np.zeros((g, g))
    for tokens in _real_tokens(tiny, model):
        t = torch.as_tensor(tokens[None])
        out = model(
            t,
            padding_mask=torch.ones_like(t, dtype=torch.bool),
            output_attentions=True,
            backend="math",
        )
        logits = model.heads["mlm"](out.last_hidden_state[0])
        logp = torch.log_softmax(logits, -1)
        genes = [p for p, u in enumerate(tokens) if is_gene[u]]
        ll = sum(logp[p, int(tokens[p])] for p in genes)
        grads = torch.autograd.grad(ll, list(out.attentions))
        rel = np.mean(
            [
                (a[0] * gr[0]).clamp(min=0).mean(0).detach().numpy()
                for a, gr in zip(out.attentions, grads, strict=True)
            ],
            axis=0,
        )
        for p, u in enumerate(tokens):
            for q, v in enumerate(tokens):
                if int(u) in col and int(v) in col:
                    sums[col[int(u)], col[int(v)]] += rel[p, q]
                    counts[col[int(u)], col[int(v)]] += 1
    ref = np.where(counts > 0, sums / np.maximum(counts, 1), 0)
    np.fill_diagonal(ref, 0)
    got, _ = _dense(tiny)
    assert np.abs(ref).max() > 1e-4  # a real signal, not all zeros
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=1e-4)
    assert tiny.uns["sct_grn"]["params"]["method"] == "attention_grad"


@pytest.mark.parametrize("method", ["attention", "embedding", "deletion", "attention_grad"])
def test_streaming_equals_one_pass(tiny, model, method):
    kw = dict(method=method, groupby="cell_type", top_k=None, min_cells=1)
    kw.update(compare=("type0", "type1"), n_permutations=5)
    one, many = tiny.copy(), tiny.copy()
    sct.tl.attention_grn(one, model, batch_size=100, chunk_size=100, **kw)
    for k in ("sct_tokens", "sct_values"):  # chunks tokenized on the fly
        del many.obsm[k]
    sct.tl.attention_grn(many, model, batch_size=2, chunk_size=3, **kw)
    for key in ("sct_grn", "sct_grn_n_cells"):
        np.testing.assert_allclose(many.varp[key].toarray(), one.varp[key].toarray(), atol=1e-6)
    for grp in ("type0", "type1"):
        a, b = one.uns["sct_grn"]["groups"][grp], many.uns["sct_grn"]["groups"][grp]
        np.testing.assert_allclose(a.toarray(), b.toarray(), atol=1e-6)
    a, b = one.uns["sct_grn"]["compare"], many.uns["sct_grn"]["compare"]
    assert len(a) > 0
    key = ["source", "target"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key], b[key])
    np.testing.assert_allclose(a["difference"], b["difference"], atol=1e-6)
    np.testing.assert_allclose(a["pvalue"], b["pvalue"])


def test_compare_pvalues_equal_a_plain_permutation_test(tiny, model):
    """Attention differences between two groups, p-values recomputed from per-cell maps."""
    n_perm, seed = 30, 7
    sct.tl.attention_grn(
        tiny,
        model,
        groupby="cell_type",
        compare=("type0", "type1"),
        n_permutations=n_perm,
        normalize="softmax",
        top_k=None,
        min_cells=1,
        seed=seed,
    )
    table = tiny.uns["sct_grn"]["compare"]
    assert len(table) > 0
    col = _gene_col(tiny, model)
    g = tiny.n_vars
    per_cell = []  # (sum map, count map) per cell
    for tokens in _real_tokens(tiny, model):
        t = torch.as_tensor(tokens[None])
        with torch.no_grad():
            out = model(
                t,
                padding_mask=torch.ones_like(t, dtype=torch.bool),
                output_attentions=True,
                backend="math",
            )
        m = out.attentions[-1][0].mean(0).numpy()  # last layer, heads averaged
        s, c = np.zeros((g, g)), np.zeros((g, g))
        for p, u in enumerate(tokens):
            for q, v in enumerate(tokens):
                if int(u) in col and int(v) in col:
                    s[col[int(u)], col[int(v)]] += m[p, q]
                    c[col[int(u)], col[int(v)]] += 1
        per_cell.append((s, c))
    labels = (tiny.obs["cell_type"] == "type1").to_numpy().astype(np.int8)

    def diff(lab):
        sa = sum(per_cell[i][0] for i in np.flatnonzero(lab == 0))
        ca = sum(per_cell[i][1] for i in np.flatnonzero(lab == 0))
        sb = sum(per_cell[i][0] for i in np.flatnonzero(lab == 1))
        cb = sum(per_cell[i][1] for i in np.flatnonzero(lab == 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return sa / ca - sb / cb

    observed = diff(labels)
    rng = np.random.default_rng(seed)
    perm = [diff(rng.permutation(labels)) for _ in range(n_perm)]
    i = tiny.var_names.get_indexer(table["source"])
    j = tiny.var_names.get_indexer(table["target"])
    np.testing.assert_allclose(table["difference"], observed[i, j], atol=1e-5)
    exceed = sum(np.nan_to_num(np.abs(d[i, j]), nan=np.inf) >= np.abs(observed[i, j]) for d in perm)
    np.testing.assert_allclose(table["pvalue"], (1 + exceed) / (1 + n_perm))
    assert ((table["fdr"] >= table["pvalue"] - 1e-12) & (table["fdr"] <= 1)).all()
    assert tiny.uns["sct_grn"]["params"]["compare"] == ["type0", "type1"]


def test_compare_identical_groups_show_no_difference(tiny, model):
    """Group B holds copies of group A's cells: every difference is 0 and every p-value 1."""
    a = tiny[tiny.obs["cell_type"] == "type0"].copy()
    b = a.copy()
    b.obs_names = [f"{n}-copy" for n in b.obs_names]
    a.obs["cond"], b.obs["cond"] = "ctrl", "case"
    both = ad.concat([a, b])
    both.uns = tiny.uns
    sct.tl.attention_grn(
        both, model, groupby="cond", compare=("case", "ctrl"), n_permutations=20, min_cells=1
    )
    table = both.uns["sct_grn"]["compare"]
    assert len(table) > 0
    np.testing.assert_allclose(table["difference"], 0, atol=1e-6)
    np.testing.assert_allclose(table["pvalue"], 1.0)


def _snapshot(adata):
    return (adata.X.copy(), adata.obs.copy(), set(adata.obsm), set(adata.varp), set(adata.uns))


def _assert_same(adata, snap):
    x, obs, obsm, varp, uns = snap
    assert (adata.X != x).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert set(adata.obsm) == obsm and set(adata.varp) == varp and set(adata.uns) == uns


def _one_cell_group(a):
    a.obs["grp"] = pd.Categorical(["x"] * (a.n_obs - 1) + ["lonely"])
    return {"groupby": "grp"}


BAD = {
    "method": (lambda a: {"method": "pearson"}, "method="),
    "min_cells_above_cells": (lambda a: {"min_cells": 13}, "above the 12 cells"),
    "min_cells_zero": (lambda a: {"min_cells": 0}, "min_cells must be"),
    "group_with_one_cell": (_one_cell_group, "single cell"),
    "compare_without_groupby": (lambda a: {"compare": ("type0", "type1")}, "compare needs"),
    "compare_unknown_group": (
        lambda a: {"groupby": "cell_type", "compare": ("type0", "nope")},
        "not in obs",
    ),
    "compare_same_group": (
        lambda a: {"groupby": "cell_type", "compare": ("type0", "type0")},
        "same group",
    ),
    "n_permutations_zero": (
        lambda a: {"groupby": "cell_type", "compare": ("type0", "type1"), "n_permutations": 0},
        "n_permutations",
    ),
    "heads_for_embedding": (lambda a: {"method": "embedding", "heads": "all"}, "heads="),
    "two_layers_for_deletion": (lambda a: {"method": "deletion", "layers": "all"}, "one layer"),
    "deletion_cells_zero": (lambda a: {"method": "deletion", "deletion_cells": 0}, "deletion"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_errors_and_writes_nothing(tiny, model, case):
    make, match = BAD[case]
    kwargs = make(tiny)
    snap = _snapshot(tiny)
    with pytest.raises(ValueError, match=match):
        sct.tl.attention_grn(tiny, model, **kwargs)
    _assert_same(tiny, snap)


@pytest.mark.parametrize("method", ["embedding", "deletion", "attention_grad"])
def test_gene_outside_vocabulary_errors_for_every_method(tiny, model, make_counts, method):
    other = make_counts(6, 11, seed=1)  # GENE10 is not in the model's vocabulary
    snap = _snapshot(other)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        sct.tl.attention_grn(other, model, method=method, genes=["GENE1", "GENE10"])
    _assert_same(other, snap)


def test_default_min_cells_is_five_percent_of_cells_and_drops_rare_pairs(make_counts):
    adata = make_counts(60, 10, n_types=2, seed=2)
    sct.pp.tokenize(adata, method="rank", max_length=5)  # 4 genes per cell: rare pairs
    model = untrained_model(adata, seed=1)
    every = adata.copy()
    sct.tl.attention_grn(every, model, top_k=None, min_cells=1)
    sct.tl.attention_grn(adata, model, top_k=None)
    assert adata.uns["sct_grn"]["params"]["min_cells"] == 3  # 5% of 60 cells
    n_all = every.varp["sct_grn_n_cells"].toarray()
    assert ((n_all > 0) & (n_all < 3)).any(), "the data should hold rare pairs"
    w_all, w = every.varp["sct_grn"].toarray(), adata.varp["sct_grn"].toarray()
    keep = n_all >= 3
    np.testing.assert_allclose(w[keep], w_all[keep], atol=1e-7)
    assert (w[~keep] == 0).all()


@pytest.fixture
def twins(make_counts):
    """GENE1 and GENE2 in every cell, and a model without positions that cannot tell them
    apart (same token embedding): a planted pair whose effects are known without a model run."""
    adata = make_counts(16, 10, n_types=2, seed=8)
    x = adata.X.toarray()
    x[:, 1], x[:, 2] = 1000, 900  # always the top two genes
    adata.X = sp.csr_matrix(x)
    sct.pp.tokenize(adata, method="rank", max_length=8, gene_medians="none")
    model = untrained_model(adata, seed=3, max_positions=0)
    ids = model.vocab.encode_genes(["GENE1", "GENE2"])
    with torch.no_grad():
        model.embeddings.token.weight[ids[1]] = model.embeddings.token.weight[ids[0]]
    return adata, model


@pytest.mark.parametrize("method", ["attention", "embedding", "deletion", "attention_grad"])
def test_twin_genes_get_the_same_edges(twins, method):
    adata, model = twins
    kw = {"normalize": "softmax"} if method == "attention" else {}
    sct.tl.attention_grn(adata, model, method=method, top_k=None, min_cells=1, **kw)
    w, n = _dense(adata)
    others = [j for j in range(adata.n_vars) if j not in (1, 2) and n[1, j] > 0]
    assert others and n[1, 2] == adata.n_obs
    # the twins are exchangeable: same row and same column against every other gene
    np.testing.assert_allclose(w[1, others], w[2, others], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(w[others, 1], w[others, 2], rtol=1e-4, atol=1e-6)
    if method == "embedding":
        # identical contextual states in every cell: cosine similarity exactly 1, the top edge
        assert w[1, 2] == pytest.approx(1.0, abs=1e-5)
        assert w[1, 2] >= w[1, others].max()
