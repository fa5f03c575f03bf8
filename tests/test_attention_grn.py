"""sct.tl.attention_grn: attention probabilities, streaming sums, outputs and input errors."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import rankdata

import sctransformer as sct
from _train_utils import untrained_model
from sctransformer.tl._attention_accum import AttentionSums, rank_normalize, raw_scores


@pytest.fixture
def small(make_counts):
    """40 cells × 30 genes, rank tokens (≤ 15 genes + <cls>), two cell types."""
    adata = make_counts(40, 30, n_types=2, seed=3)
    sct.pp.tokenize(adata, method="rank", max_length=16)
    return adata


@pytest.fixture
def model(small):
    return untrained_model(small, seed=1)


def _hand_attention(model, tokens, mask):
    """Per layer, ``softmax(Q Kᵀ / √d + mask)`` recomputed from the weights, layer by layer."""
    x = model.embeddings(tokens, None, torch.arange(tokens.shape[1]).expand_as(tokens))
    additive = torch.zeros(mask.shape).masked_fill(~mask, -math.inf)[:, None, None, :]
    probs, scores = [], []
    for layer in model.layers:
        att = layer.attention
        b, n, d = x.shape
        h = layer.attention_norm(x) if layer.pre_norm else x
        w_q, w_k, w_v = att.qkv.weight.split(d)
        b_q, b_k, b_v = att.qkv.bias.split(d)

        def heads(t, att=att, b=b, n=n):
            return t.view(b, n, att.num_heads, att.head_dim).transpose(1, 2)

        q, k, v = heads(h @ w_q.T + b_q), heads(h @ w_k.T + b_k), heads(h @ w_v.T + b_v)
        s = q @ k.transpose(-1, -2) / math.sqrt(att.head_dim)
        p = torch.softmax(s + additive, dim=-1)
        scores.append(s)
        probs.append(p)
        out = att.out((p @ v).transpose(1, 2).reshape(b, n, d))
        if layer.pre_norm:
            x = x + out
            x = x + layer.ffn(layer.ffn_norm(x))
        else:
            x = layer.attention_norm(x + out)
            x = layer.ffn_norm(x + layer.ffn(x))
    return probs, scores


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_math_probabilities_equal_softmax_recomputed_by_hand(small, norm):
    model = untrained_model(small, seed=2, norm=norm)
    tokens = torch.as_tensor(small.obsm["sct_tokens"][:6].astype(np.int64))
    mask = tokens != model.vocab.pad_id
    assert (~mask).any(), "the batch should contain padding"
    with torch.no_grad():
        out = model(tokens, padding_mask=mask, output_attentions=True, output_hidden_states=True)
        hand, hand_scores = _hand_attention(model, tokens, mask)
        for i in range(model.config.num_layers):
            torch.testing.assert_close(out.attentions[i], hand[i], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(
                raw_scores(model, out.hidden_states, i), hand_scores[i], atol=1e-4, rtol=1e-4
            )


def test_rows_sum_to_one_over_real_tokens(small, model):
    tokens = torch.as_tensor(small.obsm["sct_tokens"][:8].astype(np.int64))
    mask = tokens != model.vocab.pad_id
    with torch.no_grad():
        out = model(tokens, padding_mask=mask, output_attentions=True)
    for p in out.attentions:
        real_rows = p.permute(0, 2, 1, 3)[mask]  # [real queries, H, L]
        torch.testing.assert_close(real_rows.sum(-1), torch.ones(real_rows.shape[:2]))
        assert (p.masked_select(~mask[:, None, None, :]) == 0).all()


def _per_cell_reference(adata, model, *, normalize, layers, genes=None):
    """The network computed the slow way: one cell at a time, positions mapped to genes."""
    names = list(adata.var_names)
    vocab = model.vocab
    track = names if genes is None else genes
    col = {vocab[g]: i for i, g in enumerate(track)}
    g = len(track)
    sums, counts = np.zeros((g, g)), np.zeros((g, g))
    for c in range(adata.n_obs):
        n = int(adata.obs["sct_n_tokens"].iloc[c])
        tok = torch.as_tensor(adata.obsm["sct_tokens"][c, :n].astype(np.int64))[None]
        with torch.no_grad():
            out = model(tok, output_attentions=True)
        per_layer = []
        ids = tok[0].tolist()
        gene_pos = [p for p, t in enumerate(ids) if vocab.is_gene[t]]
        for li in layers:
            p = out.attentions[li][0].double().numpy()  # [H, n, n]
            if normalize == "rank":
                r = np.zeros_like(p)
                for h in range(p.shape[0]):
                    sub = p[h][np.ix_(gene_pos, gene_pos)]
                    rows = np.apply_along_axis(rankdata, 1, sub) - 1
                    both = np.apply_along_axis(rankdata, 0, rows) - 1
                    r[h][np.ix_(gene_pos, gene_pos)] = both / max(len(gene_pos) - 1, 1)
                p = r
            per_layer.append(p.mean(0))
        m = np.mean(per_layer, axis=0)
        for a in gene_pos:
            for b in gene_pos:
                if ids[a] in col and ids[b] in col:
                    sums[col[ids[a]], col[ids[b]]] += m[a, b]
                    counts[col[ids[a]], col[ids[b]]] += 1
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), 0), counts


@pytest.mark.parametrize("normalize", ["softmax", "rank"])
def test_network_equals_per_cell_reference(small, model, normalize):
    sct.tl.attention_grn(
        small,
        model,
        normalize=normalize,
        layers="all",
        top_k=None,
        batch_size=7,
        device="cpu",
        min_cells=1,
    )
    ref, counts = _per_cell_reference(small, model, normalize=normalize, layers=[0, 1])
    np.fill_diagonal(ref, 0)
    got = small.varp["sct_grn"].toarray()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    n = small.varp["sct_grn_n_cells"].toarray()
    off = ~np.eye(len(ref), dtype=bool)
    np.testing.assert_array_equal(n[off & (counts > 0)], counts[off & (counts > 0)])


def test_rank_normalize_matches_rankdata_with_ties():
    x = torch.tensor(
        [[[[0.1, 0.5, 0.5, 9.0], [0.3, 0.2, 0.1, 9.0], [0.2, 0.2, 0.2, 9.0], [0.0] * 4]]]
    )
    used = torch.tensor([[True, True, True, False]])
    r = rank_normalize(x.double(), used)[0, 0, :3, :3].numpy()
    rows = np.apply_along_axis(rankdata, 1, x[0, 0, :3, :3].numpy()) - 1
    ref = (np.apply_along_axis(rankdata, 0, rows) - 1) / 2
    np.testing.assert_allclose(r, ref)


@pytest.mark.parametrize("ties", [False, True])
def test_average_ranks_match_rankdata_per_row(ties):
    from sctransformer.tl._attention_accum import average_ranks

    g = torch.Generator().manual_seed(1)
    x = (
        torch.randint(0, 6, (3, 2, 9, 30), generator=g).double()
        if ties
        else torch.rand(3, 2, 9, 30, generator=g, dtype=torch.float64)
    )
    valid = torch.rand(3, 1, 1, 30, generator=g) > 0.3
    got = average_ranks(x, valid).numpy()
    for b, h, i in np.ndindex(3, 2, 9):
        keep = valid[b, 0, 0].numpy()
        want = (rankdata(x[b, h, i].numpy()[keep]) - 1) / (keep.sum() - 1)
        np.testing.assert_allclose(got[b, h, i][keep], want, rtol=0, atol=1e-12)


def test_streaming_over_batches_equals_one_pass(small, model):
    one = small.copy()
    sct.tl.attention_grn(
        one, model, groupby="cell_type", top_k=None, batch_size=1000, chunk_size=1000
    )
    many = small.copy()
    for k in ("sct_tokens", "sct_values"):  # chunks are tokenized on the fly
        del many.obsm[k]
    sct.tl.attention_grn(many, model, groupby="cell_type", top_k=None, batch_size=3, chunk_size=7)
    assert many.uns["sct_grn"]["params"]["tokens_reused"] is False
    np.testing.assert_allclose(
        many.varp["sct_grn"].toarray(), one.varp["sct_grn"].toarray(), atol=1e-6
    )
    for g in one.uns["sct_grn"]["groups"]:
        a, b = one.uns["sct_grn"]["groups"][g], many.uns["sct_grn"]["groups"][g]
        np.testing.assert_allclose(a.toarray(), b.toarray(), atol=1e-6)
    np.testing.assert_array_equal(
        one.varp["sct_grn_n_cells"].toarray(), many.varp["sct_grn_n_cells"].toarray()
    )
    np.testing.assert_allclose(
        one.uns["sct_grn"]["head_scores"]["scores"],
        many.uns["sct_grn"]["head_scores"]["scores"],
        rtol=1e-5,
    )


def test_sums_of_two_halves_equal_sums_of_all():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 2, 5, 5, generator=gen)
    gene_index = torch.tensor([[0, 1, 2, -1, -1]] * 3 + [[2, 3, 0, 1, -1]] * 3)
    groups = torch.tensor([0, 1, 0, 1, 0, 1])
    full = AttentionSums(2, 2, 4, 1, 1)
    full.add(maps, gene_index, groups)
    halves = AttentionSums(2, 2, 4, 1, 1)
    for part in (slice(0, 2), slice(2, 6)):
        h = AttentionSums(2, 2, 4, 1, 1)
        h.add(maps[part], gene_index[part], groups[part])
        halves.merge(h)
    for a, b in zip(full.result(), halves.result(), strict=True):
        np.testing.assert_allclose(a, b)


def test_absent_gene_contributes_nothing_to_sums():
    maps = torch.full((1, 1, 4, 4), 1000.0)
    acc = AttentionSums(1, 1, 3, 1, 1)
    acc.add(maps, torch.tensor([[0, 1, -1, -1]]), torch.tensor([0]))  # gene 2 absent
    sums, counts = acc.result()
    assert (sums[0, 0, 2] == 0).all() and (sums[0, 0, :, 2] == 0).all()
    assert (counts[0, 2] == 0).all() and (counts[0, :, 2] == 0).all()
    assert counts[0, 0, 1] == 1


def test_cells_without_a_gene_leave_its_edges_unchanged(small, model):
    """Adding cells in which gene g is absent changes no weight or count involving g."""
    gene = str(small.var_names[int(np.argmax(np.asarray((small.X > 0).sum(0)).ravel()))])
    base = small.copy()
    sct.tl.attention_grn(base, model, normalize="softmax", top_k=None, min_cells=1)
    extra = small.copy()
    x = extra.X.toarray()
    x[:, small.var_names.get_loc(gene)] = 0
    extra.X = sp.csr_matrix(x)
    for k in list(extra.obsm):  # tokenized again without the gene
        del extra.obsm[k]
    extra.obs_names = [f"{n}-b" for n in extra.obs_names]
    both = ad.concat([small, extra])
    sct.tl.attention_grn(both, model, normalize="softmax", top_k=None, min_cells=1)
    j = small.var_names.get_loc(gene)
    for key in ("sct_grn", "sct_grn_n_cells"):
        a, b = base.varp[key].toarray(), both.varp[key].toarray()
        np.testing.assert_allclose(a[j], b[j], atol=1e-6)
        np.testing.assert_allclose(a[:, j], b[:, j], atol=1e-6)
    # while edges among other genes did see the extra cells
    assert both.varp["sct_grn_n_cells"].sum() > base.varp["sct_grn_n_cells"].sum()


def test_outputs_keys_and_formats(small, model, tmp_path):
    sct.tl.attention_grn(small, model, groupby="cell_type", top_k=4, n_top_genes=5)
    w = small.varp["sct_grn"]
    assert sp.issparse(w) and w.format == "csr" and w.shape == (30, 30)
    assert (np.diff(w.indptr) <= 4).all() and w.diagonal().sum() == 0
    assert small.varp["sct_grn_n_cells"].nnz == w.nnz
    uns = small.uns["sct_grn"]
    assert set(uns["groups"]) == {"type0", "type1"}
    edges = uns["edges"]
    assert list(edges.columns) == ["source", "target", "weight", "group", "n_cells"]
    assert list(edges["group"].cat.categories) == ["all", "type0", "type1"]
    overall = edges[edges["group"] == "all"]
    assert len(overall) == w.nnz
    i = small.var_names.get_indexer(overall["source"])
    j = small.var_names.get_indexer(overall["target"])
    np.testing.assert_allclose(np.asarray(w[i, j]).ravel(), overall["weight"], rtol=1e-6)
    assert (overall["n_cells"] >= 1).all()
    hs = uns["head_scores"]
    assert hs["genes"].shape == hs["scores"].shape == (2, 4, 5)
    assert (np.diff(hs["scores"], axis=-1) <= 1e-6).all()  # best first
    params = uns["params"]
    assert all(v is not None for v in params.values())
    assert params["normalize"] == "rank" and params["layers"] == [2] and params["heads"] == "mean"
    small.write_h5ad(tmp_path / "grn.h5ad")
    read = ad.read_h5ad(tmp_path / "grn.h5ad")
    np.testing.assert_allclose(read.varp["sct_grn"].toarray(), w.toarray())
    assert read.uns["sct_grn"]["head_scores"]["genes"].shape == (2, 4, 5)


def test_symmetrize_heads_and_gene_restriction(small, model):
    sym = small.copy()
    sct.tl.attention_grn(sym, model, symmetrize=True, top_k=None, normalize="softmax")
    w = sym.varp["sct_grn"].toarray()
    np.testing.assert_allclose(w, w.T, atol=1e-7)

    sep = small.copy()
    sct.tl.attention_grn(sep, model, heads="all", layers="all", top_k=None, normalize="softmax")
    per = sep.uns["sct_grn"]["heads"]
    assert set(per) == {f"layer{la}_head{h}" for la in (1, 2) for h in range(4)}
    mean = np.mean([m.toarray() for m in per.values()], axis=0)
    np.testing.assert_allclose(sep.varp["sct_grn"].toarray(), mean, atol=1e-6)

    genes = list(small.var_names[[3, 0, 7, 12]])
    sub = small.copy()
    sct.tl.attention_grn(sub, model, genes=genes, top_k=None, normalize="softmax")
    full = small.copy()
    sct.tl.attention_grn(full, model, top_k=None, normalize="softmax")
    idx = small.var_names.get_indexer(genes)
    got = sub.varp["sct_grn"].toarray()
    np.testing.assert_allclose(
        got[np.ix_(idx, idx)], full.varp["sct_grn"].toarray()[np.ix_(idx, idx)]
    )
    others = np.setdiff1d(np.arange(30), idx)
    assert got[others].sum() == 0 and got[:, others].sum() == 0


def test_group_networks_equal_networks_of_the_subsets(small, model):
    sct.tl.attention_grn(
        small, model, groupby="cell_type", top_k=None, normalize="softmax", min_cells=1
    )
    for g in ("type0", "type1"):
        part = small[small.obs["cell_type"] == g].copy()
        sct.tl.attention_grn(part, model, top_k=None, normalize="softmax", min_cells=1)
        np.testing.assert_allclose(
            small.uns["sct_grn"]["groups"][g].toarray(), part.varp["sct_grn"].toarray(), atol=1e-6
        )


def test_copy_returns_new_object(small, model):
    out = sct.tl.attention_grn(small, model, copy=True)
    assert "sct_grn" in out.varp and "sct_grn" not in small.varp and "sct_grn" not in small.uns


def _snapshot(adata):
    return (
        adata.X.copy(),
        adata.obs.copy(),
        adata.var.copy(),
        set(adata.obsm),
        set(adata.varp),
        set(adata.uns),
    )


def _assert_same(adata, snap):
    x, obs, var, obsm, varp, uns = snap
    assert (adata.X != x).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, obs)
    pd.testing.assert_frame_equal(adata.var, var)
    assert set(adata.obsm) == obsm and set(adata.varp) == varp and set(adata.uns) == uns


def _with_nan_group(a):
    a.obs["cell_type"] = a.obs["cell_type"].astype(object)
    a.obs.iloc[0, a.obs.columns.get_loc("cell_type")] = np.nan
    return "cell_type"


def _with_all_group(a):
    a.obs["grp"] = pd.Categorical(["all"] * 20 + ["x"] * 20)
    return "grp"


BAD = {
    "layer_zero": ({"layers": 0}, "out of range"),
    "layer_too_deep": ({"layers": 3}, "out of range"),
    "layers_word": ({"layers": "last"}, "layers="),
    "head_out_of_range": ({"heads": [4]}, "out of range"),
    "heads_word": ({"heads": "max"}, "heads="),
    "normalize": ({"normalize": "zscore"}, "normalize="),
    "top_k_zero": ({"top_k": 0}, "top_k"),
    "batch_size_zero": ({"batch_size": 0}, "batch_size"),
    "groupby_missing": ({"groupby": "tissue"}, "not found in adata.obs"),
    "gene_not_in_var": ({"genes": ["GENE0", "NOPE"]}, "not found in adata.var_names"),
    "genes_duplicated": ({"genes": ["GENE0", "GENE0"]}, "duplicate"),
    "genes_empty": ({"genes": []}, "genes is empty"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_argument_errors_leave_adata_unchanged(small, model, case):
    kwargs, match = BAD[case]
    snap = _snapshot(small)
    with pytest.raises(ValueError, match=match):
        sct.tl.attention_grn(small, model, **kwargs)
    _assert_same(small, snap)


@pytest.mark.parametrize("make", [_with_nan_group, _with_all_group], ids=["nan", "all"])
def test_bad_groupby_errors_leave_adata_unchanged(small, model, make):
    key = make(small)
    snap = _snapshot(small)
    with pytest.raises(ValueError, match=r"missing values|named 'all'"):
        sct.tl.attention_grn(small, model, groupby=key)
    _assert_same(small, snap)


def test_gene_outside_vocabulary_errors_and_leaves_adata_unchanged(small, make_counts):
    model = untrained_model(small)
    other = make_counts(10, 31, seed=1)  # GENE30 is not in the model's vocabulary
    snap = _snapshot(other)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        sct.tl.attention_grn(other, model, genes=["GENE1", "GENE30"])
    _assert_same(other, snap)


def test_no_shared_genes_errors_and_leaves_adata_unchanged(small):
    model = untrained_model(small)
    other = small[:, :5].copy()
    other.var_names = [f"X{i}" for i in range(5)]
    for k in list(other.obsm):
        del other.obsm[k]
    snap = _snapshot(other)
    with pytest.raises(ValueError, match="none of the data's genes"):
        sct.tl.attention_grn(other, model)
    _assert_same(other, snap)


def test_model_without_vocabulary_errors_and_leaves_adata_unchanged(small, model):
    model.vocab = None
    snap = _snapshot(small)
    with pytest.raises(ValueError, match="vocabulary"):
        sct.tl.attention_grn(small, model)
    _assert_same(small, snap)


def test_empty_adata_errors(small, model):
    empty = small[:0].copy()
    with pytest.raises(ValueError, match="empty"):
        sct.tl.attention_grn(empty, model)
    assert "sct_grn" not in empty.uns
