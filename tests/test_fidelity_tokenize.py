"""Fidelity to the published tokenizers, against plain per-cell references written here.

Geneformer (``geneformer/tokenizer.py``): genes sharing an Ensembl ID have their counts summed
(``sum_ensembl_ids``), each cell is divided by ``obs["n_counts"]``, times 10,000, divided by
the gene's median, and the nonzero genes are ordered by that value, descending.
Cell2Sentence (``cell2sentence/utils.py``): upper-cased gene names of every expressed gene,
ordered by expression, descending.
"""

from __future__ import annotations

import types

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sctransformer as sct
from sctransformer.tokenizers import GeneVocab

N_PAIRS = 20


def _alias_data(seed=0, n_cells=60, n_tokens=80):
    """Counts over var genes where ``N_PAIRS`` tokens are reached by two var names each
    (a symbol and a retired ID), plus 5 genes the vocabulary lacks."""
    rng = np.random.default_rng(seed)
    tokens = [f"ENSG{i:011d}" for i in range(n_tokens)]
    var, var_token = [], []
    for i, t in enumerate(tokens):
        var.append(f"SYM{i}")
        var_token.append(t)
    for i in range(N_PAIRS):  # the second name of token 3*i, placed further along
        var.insert(10 + 3 * i, f"OLD{i}")
        var_token.insert(10 + 3 * i, tokens[3 * i])
    for i in range(5):
        var.insert(7 * i + 1, f"UNKNOWN{i}")
        var_token.insert(7 * i + 1, None)
    x = rng.poisson(rng.lognormal(0.0, 1.0, size=(n_cells, len(var)))).astype(np.float32)
    aliases = {v: t for v, t in zip(var, var_token, strict=True) if t is not None}
    medians = {t: float(m) for t, m in zip(tokens, rng.uniform(0.5, 4.0, n_tokens), strict=True)}
    vocab = GeneVocab.from_genes(tokens, aliases=aliases, gene_medians=medians)
    adata = AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=var))
    return adata, x, var_token, vocab, medians


def _summed(x, var_token):
    """Columns summed by token, tokens in the order of their first var column."""
    order = []
    for t in var_token:
        if t is not None and t not in order:
            order.append(t)
    out = np.zeros((x.shape[0], len(order)))
    for j, t in enumerate(var_token):
        if t is not None:
            out[:, order.index(t)] += x[:, j]
    return out, order


def _rank_reference(x, var_token, medians, totals, vocab, max_length=2048, cls=True, eos=False):
    summed, order = _summed(x, var_token)
    med = np.array([medians[t] for t in order])
    rows = []
    for i in range(x.shape[0]):
        score = summed[i] / totals[i] * 1e4 / med
        nz = np.flatnonzero(summed[i] > 0)
        ranked = nz[np.argsort(-score[nz], kind="stable")]  # ties: var order of the first gene
        ids = [vocab[order[j]] for j in ranked]
        kept = ids[: max_length - int(cls) - int(eos)]
        rows.append(([vocab.cls_id] if cls else []) + kept + ([vocab.eos_id] if eos else []))
    return rows


def _tokens_of(adata):
    toks, n = adata.obsm["sct_tokens"], adata.obs["sct_n_tokens"].to_numpy()
    return [list(toks[i, : n[i]]) for i in range(adata.n_obs)]


@pytest.mark.parametrize("storage", ["csr", "dense", "csc", "backed"])
def test_genes_sharing_a_token_are_summed_like_geneformer(storage, tmp_path):
    adata, x, var_token, vocab, medians = _alias_data()
    if storage == "dense":
        adata.X = x.copy()
    elif storage == "csc":
        adata.X = sp.csc_matrix(x)
    elif storage == "backed":
        adata.write_h5ad(tmp_path / "a.h5ad")
        adata = anndata.read_h5ad(
            tmp_path / "a.h5ad", backed="r+"
        )  # results are stored with the file
    # chunks smaller than the data: the merge is applied chunk by chunk
    sct.pp.tokenize(adata, method="rank", vocab=vocab, min_gene_fraction=0.5, chunk_size=16)
    totals = x.astype(np.float64).sum(axis=1)  # all genes, the unknown ones too
    want = _rank_reference(x, var_token, medians, totals, vocab)
    got = _tokens_of(adata)
    assert got == want
    assert all(len(set(r)) == len(r) for r in got)  # no token twice in a cell
    p = adata.uns["sct"]["params"]
    assert p["n_genes_merged"] == N_PAIRS
    assert p["n_genes_matched"] == 80


def test_n_counts_totals_as_geneformer_divides():
    adata, x, var_token, vocab, medians = _alias_data(seed=1)
    # totals from before a gene filter: larger than the matrix's and not proportional to them
    n_counts = x.sum(axis=1) * np.random.default_rng(2).uniform(1.2, 3.0, adata.n_obs)
    adata.obs["n_counts"] = n_counts
    sct.pp.tokenize(adata, method="rank", vocab=vocab, total_key="n_counts", max_length=30)
    want = _rank_reference(x, var_token, medians, n_counts, vocab, max_length=30)
    assert _tokens_of(adata) == want
    vals = adata.obsm["sct_values"]
    # the scores themselves carry the n_counts denominator
    summed, order = _summed(x, var_token)
    first = adata.obsm["sct_tokens"][:, 1]
    for i in range(adata.n_obs):
        j = order.index(vocab.id_to_token([first[i]])[0])
        ref = summed[i, j] / n_counts[i] * 1e4 / medians[order[j]]
        assert vals[i, 1] == pytest.approx(ref, rel=1e-6)
    assert adata.uns["sct"]["params"]["total_key"] == "n_counts"


def test_model_default_total_key_and_fallback():
    from sctransformer.models.converters.geneformer import tokenize_params_for

    adata, x, var_token, vocab, medians = _alias_data(seed=3)
    params = tokenize_params_for(vocab, 2048)
    assert params["total_key"] == "n_counts"
    model = types.SimpleNamespace(vocab=vocab, tokenize_params=params)
    special = dict(cls=params["add_cls"], eos=params["add_eos"])
    # without obs["n_counts"]: the matrix's sums, recorded as such
    plain = sct.pp.tokenize(adata, vocab=model, copy=True)
    assert plain.uns["sct"]["params"]["total_key"] == ""
    totals = x.astype(np.float64).sum(axis=1)
    assert _tokens_of(plain) == _rank_reference(x, var_token, medians, totals, vocab, **special)
    # with it: the model's publisher's denominator is the default
    n_counts = totals * np.linspace(1.0, 4.0, adata.n_obs)
    adata.obs["n_counts"] = n_counts
    got = sct.pp.tokenize(adata, vocab=model, copy=True)
    assert got.uns["sct"]["params"]["total_key"] == "n_counts"
    assert _tokens_of(got) == _rank_reference(x, var_token, medians, n_counts, vocab, **special)
    # total_key=False: the matrix again
    off = sct.pp.tokenize(adata, vocab=model, total_key=False, copy=True)
    assert _tokens_of(off) == _tokens_of(plain)


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (None, "not found"),
        (["a"] * 60, "not numbers"),
        (np.r_[-1.0, np.ones(59)], "non-finite or negative"),
        (np.r_[np.inf, np.ones(59)], "non-finite or negative"),
    ],
)
def test_total_key_bad_columns(column, message):
    adata, *_ = _alias_data()
    if column is not None:
        adata.obs["totals"] = column
    before = adata.copy()
    with pytest.raises((ValueError, KeyError), match=message):
        sct.pp.tokenize(adata, method="rank", gene_medians="none", total_key="totals")
    assert set(adata.obs) == set(before.obs) and not adata.obsm and not adata.uns


def test_value_encoding_sums_shared_tokens_too():
    adata, x, var_token, vocab, _ = _alias_data(seed=4)
    sct.pp.tokenize(adata, method="value", vocab=vocab, add_cls=False, max_length=None)
    summed, order = _summed(x, var_token)
    totals = x.astype(np.float64).sum(axis=1)
    toks, vals, n = adata.obsm["sct_tokens"], adata.obsm["sct_values"], adata.obs["sct_n_tokens"]
    for i in range(adata.n_obs):
        nz = np.flatnonzero(summed[i] > 0)  # var order of the first gene of each token
        assert list(toks[i, : n.iloc[i]]) == [vocab[order[j]] for j in nz]
        ref = np.log1p(summed[i, nz] / totals[i] * 1e4)
        np.testing.assert_allclose(vals[i, : n.iloc[i]], ref, rtol=1e-6)


def test_data_medians_of_merged_genes_are_numpy_medians():
    adata, x, var_token, vocab, _ = _alias_data(seed=5)
    bare = GeneVocab.from_genes(vocab.genes, aliases=vocab.aliases)  # no medians
    n_counts = x.sum(axis=1) * 1.5
    adata.obs["n_counts"] = n_counts
    sct.pp.tokenize(adata, method="rank", vocab=bare, total_key="n_counts")
    summed, order = _summed(x, var_token)
    got = GeneVocab.from_json(adata.uns["sct"]["vocab"]).gene_medians
    for j, t in enumerate(order):
        col = summed[:, j]
        want = np.median(col[col > 0] / n_counts[col > 0] * 1e4)
        assert got[t] == want, t  # exact
    want_rows = _rank_reference(x, var_token, got, n_counts, bare)
    assert _tokens_of(adata) == want_rows


def _c2s_reference(x, names):
    """Cell2Sentence: upper-cased names; names equal once upper-cased are one word (their
    counts summed here); every expressed gene, descending, ties by first var position."""
    words = []
    for n in names:
        if n.upper() not in words:
            words.append(n.upper())
    summed = np.zeros((x.shape[0], len(words)))
    for j, n in enumerate(names):
        summed[:, words.index(n.upper())] += x[:, j]
    out = []
    for row in summed:
        nz = np.flatnonzero(row > 0)
        out.append(" ".join(words[j] for j in nz[np.argsort(-row[nz], kind="stable")]))
    return out


def test_sentence_upper_cases_and_sums_colliding_names():
    rng = np.random.default_rng(7)
    names = [f"Gene{i}" for i in range(300)] + ["gene3", "GENE10", "mt-Co1", "MT-CO1"]
    x = rng.poisson(rng.lognormal(-0.5, 1.2, size=(40, len(names)))).astype(np.float32)
    adata = AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=names))
    sct.pp.tokenize(adata, method="sentence")
    want = _c2s_reference(x, names)
    assert adata.obs["sct_sentence"].tolist() == want
    assert max(len(s.split()) for s in want) > 100  # every expressed gene, not the first 100
    p = adata.uns["sct"]["params"]
    assert p["n_genes_merged"] == 3 and p["max_length"] == -1
    # max_length still crops, after the merge
    short = sct.pp.tokenize(adata, method="sentence", max_length=5, copy=True)
    assert short.obs["sct_sentence"].tolist() == [" ".join(s.split()[:5]) for s in want]


@pytest.mark.slow
def test_celltypist_sample_sentences_and_tiny_model():
    pytest.importorskip("celltypist")
    adata = sct.datasets.celltypist_sample()
    names = list(adata.var_names)
    upper = pd.Series([n.upper() for n in names])
    assert upper.duplicated().sum() >= 5  # the sample's own colliding names
    sub = adata[:40].copy()
    sct.pp.tokenize(sub, method="sentence")
    assert sub.obs["sct_sentence"].tolist() == _c2s_reference(sub.X.toarray(), names)
    # the bundled model knows 764 of these 32,786 genes: refused by default, naming the keyword
    with pytest.raises(ValueError, match="min_gene_fraction="):
        sct.tl.embed_cells(sub, "sct-tiny-pbmc")
    assert "X_sct" not in sub.obsm
    sct.tl.embed_cells(sub, "sct-tiny-pbmc", min_gene_fraction=0.01, device="cpu")
    emb = np.asarray(sub.obsm["X_sct"])
    assert emb.shape[0] == 40 and np.isfinite(emb).all()
    assert np.linalg.matrix_rank(emb - emb.mean(0)) > 5  # cells are told apart


def test_with_aliases_matches_symbols_and_ids_both_ways():
    table = [("ENSG1", "AAA"), ("ENSG2", "BBB"), ("ENSG3", "CCC"), ("ENSG9", "AAA")]
    by_id = GeneVocab.from_genes(["ENSG1", "ENSG2"]).with_aliases(table)
    assert list(by_id.encode_genes(["AAA", "BBB", "CCC", "ENSG1"])) == [
        by_id["ENSG1"],
        by_id["ENSG2"],
        -1,
        by_id["ENSG1"],
    ]
    by_symbol = GeneVocab.from_genes(["AAA", "CCC"]).with_aliases(dict(table))
    ids = by_symbol.encode_genes(["ENSG1", "ENSG9", "ENSG3", "ENSG2"])
    assert list(ids) == [by_symbol["AAA"], by_symbol["AAA"], by_symbol["CCC"], -1]
    # a name that would point at two tokens is left out
    two = GeneVocab.from_genes(["ENSG1", "ENSG9"]).with_aliases(table)
    assert two.encode_genes(["AAA"])[0] == -1


def test_human_gene_table_is_offline_and_maps_pbmc_symbols():
    pytest.importorskip("pygeneconverter")
    table = sct.tokenizers.human_gene_table()
    assert len(table) > 50_000
    d = dict((sym, ens) for ens, sym in table)
    assert d["CD3E"] == "ENSG00000198851" and d["MS4A1"] == "ENSG00000156738"


def test_cls_value_is_pad_value_as_in_scgpt_embed_data(counts):
    # scGPT's embed_data (tasks/cell_emb.py) prepends <cls> with model_configs["pad_value"]
    # (-2); its tokenize_batch uses 0 there instead (documented difference)
    x = counts.X.toarray() if sp.issparse(counts.X) else np.asarray(counts.X)
    sct.pp.tokenize(counts, method="adaptive_bin", max_length=None)
    vocab = GeneVocab.from_json(counts.uns["sct"]["vocab"])
    toks, vals = counts.obsm["sct_tokens"], counts.obsm["sct_values"]
    assert (toks[:, 0] == vocab.cls_id).all()
    assert (vals[:, 0] == -2.0).all()
    n = counts.obs["sct_n_tokens"].to_numpy()
    assert list(n - 1) == list((x > 0).sum(axis=1))  # then one position per expressed gene
