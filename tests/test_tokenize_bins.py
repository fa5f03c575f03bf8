"""Value encodings (``bin``, ``adaptive_bin``, ``value``) and ``sentence`` against per-cell references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sctransformer as sct
from sctransformer.tokenizers import GeneVocab, _encode

MASK64 = (1 << 64) - 1


def splitmix_uniform(seed: int, row: int, token_id: int) -> float:
    """The package's per-(seed, cell, token) uniform number, with Python integers."""
    z = (
        seed * 0xD1B54A32D192ED03 + row * 0x9E3779B97F4A7C15 + token_id * 0xC2B2AE3D27D4EB4F
    ) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return (z >> 11) * 2.0**-53


def dense(adata: AnnData) -> np.ndarray:
    x = adata.X
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def log_norm(row: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    return np.log1p(row / row.sum() * target_sum)


def pad_rows(rows, *, pad_id: int, pad_value: float, cls_id: int | None):
    if cls_id is not None:
        rows = [([cls_id, *t], [pad_value, *v]) for t, v in rows]
    width = max(len(t) for t, _ in rows)
    tokens = np.full((len(rows), width), pad_id, dtype=np.int64)
    values = np.full((len(rows), width), pad_value, dtype=np.float32)
    for i, (t, v) in enumerate(rows):
        tokens[i, : len(t)] = t
        values[i, : len(v)] = v
    return tokens, values, np.array([len(t) for t, _ in rows])


def top_in_var_order(genes: list[int], expr: np.ndarray, k: int | None) -> list[int]:
    """The k most expressed of ``genes`` (ties in var order), returned in var order."""
    if k is None or len(genes) <= k:
        return list(genes)
    order = np.argsort(-expr[genes], kind="stable")[:k]
    return sorted(np.asarray(genes)[order].tolist())


def reference_bin(x, ids, *, n_bins=6, bin_width=1.0, include_zeros=False, max_length=None):
    rows = []
    for row in x:
        expr = log_norm(row)
        genes = [j for j in range(len(row)) if ids[j] >= 0 and (include_zeros or row[j] > 0)]
        genes = top_in_var_order(genes, expr, None if max_length is None else max_length - 1)
        bins = [min(math.floor(expr[j] / bin_width), n_bins - 1) for j in genes]
        rows.append((list(ids[genes]), bins))
    return rows


def reference_adaptive(x, ids, *, n_bins=51, seed=0, max_length=1200, select="top"):
    """scGPT's binning of each cell, with the package's seeded uniform numbers."""
    rows = []
    for i, row in enumerate(x):
        expr = log_norm(row)
        genes = [j for j in range(len(row)) if ids[j] >= 0 and row[j] > 0]
        nonzero = expr[genes]
        edges = np.quantile(nonzero, np.linspace(0, 1, n_bins - 1))
        left = np.digitize(nonzero, edges)
        right = np.digitize(nonzero, edges, right=True)
        u = np.array([splitmix_uniform(seed, i, int(ids[j])) for j in genes])
        bins = np.ceil(u * (right - left) + left).astype(np.int64)
        bin_of = dict(zip(genes, bins, strict=True))
        k = max_length - 1
        if select == "random" and len(genes) > k:
            kept = sorted(np.asarray(genes)[np.argsort(u, kind="stable")[:k]].tolist())
        else:
            kept = top_in_var_order(genes, expr, k)
        rows.append((list(ids[kept]), [bin_of[j] for j in kept]))
    return rows


def check(adata, rows, vocab, *, pad_value=-2.0, key="sct"):
    tokens, values, n = pad_rows(
        rows, pad_id=vocab.pad_id, pad_value=pad_value, cls_id=vocab.cls_id
    )
    np.testing.assert_array_equal(adata.obsm[f"{key}_tokens"], tokens)
    np.testing.assert_array_equal(adata.obsm[f"{key}_values"], values)
    np.testing.assert_array_equal(adata.obs[f"{key}_n_tokens"].to_numpy(), n)


def vocab_of(adata, key="sct"):
    vocab = GeneVocab.from_json(adata.uns[key]["vocab"])
    return vocab, vocab.encode_genes(adata.var_names)


# --- bin (scBERT) ---------------------------------------------------------------------------


def test_bin_default(pbmc):
    x = dense(pbmc)
    sct.pp.tokenize(pbmc, method="bin")
    vocab, ids = vocab_of(pbmc)
    check(pbmc, reference_bin(x, ids), vocab)
    assert pbmc.obsm["sct_values"][:, 1:].max() == 5


def test_bin_width_and_bins(counts):
    x = dense(counts)
    sct.pp.tokenize(counts, method="bin", n_bins=4, bin_width=0.7, max_length=30)
    vocab, ids = vocab_of(counts)
    check(counts, reference_bin(x, ids, n_bins=4, bin_width=0.7, max_length=30), vocab)


def test_bin_include_zeros_gives_every_vocab_gene(counts):
    x = dense(counts)
    known = list(counts.var_names[5:])  # five data genes unknown, plus two the data lacks
    vocab = GeneVocab.from_genes([*known, "ABSENT1", "ABSENT2"])
    sct.pp.tokenize(counts, method="bin", include_zeros=True, vocab=vocab)
    ids = vocab.encode_genes(counts.var_names)
    check(counts, reference_bin(x, ids, include_zeros=True), vocab)
    assert (counts.obs["sct_n_tokens"] == 1 + len(known)).all()
    assert (counts.obsm["sct_values"][:, 1:] == 0).any()


# --- adaptive_bin (scGPT) -------------------------------------------------------------------


def test_uniform_hash_matches_splitmix64():
    from sctransformer.tokenizers._kernels import seed_word, uniform

    rows = [0, 1, 7, 123_456, 2**31 + 5]
    keys = [0, 3, 60_000, 17, 9]
    for seed in (0, 1, 2**40 + 3):
        for r, k in zip(rows, keys, strict=True):
            assert uniform(seed_word(seed), r, k) == splitmix_uniform(seed, r, k)


def test_adaptive_bin_default(pbmc):
    x = dense(pbmc)
    sct.pp.tokenize(pbmc, method="adaptive_bin")
    vocab, ids = vocab_of(pbmc)
    rows = reference_adaptive(x, ids)
    check(pbmc, rows, vocab)
    body = pbmc.obsm["sct_values"][:, 1:]
    assert body[body != -2].min() == 1
    assert body.max() == 50


@pytest.mark.parametrize(("select", "seed"), [("top", 0), ("top", 3), ("random", 0), ("random", 9)])
def test_adaptive_bin_truncated_after_binning(make_counts, select, seed):
    # integer counts at low depth: many values tie with several quantile edges
    adata = make_counts(150, 400, mean_depth=1.5, seed=seed + 1)
    x = dense(adata)
    # fewer distinct values than edges: values sit on tied edges and the hash decides
    assert any(len(np.unique(r[r > 0])) < 10 for r in x)
    sct.pp.tokenize(
        adata, method="adaptive_bin", n_bins=11, max_length=25, select=select, seed=seed
    )
    vocab, ids = vocab_of(adata)
    rows = reference_adaptive(x, ids, n_bins=11, seed=seed, max_length=25, select=select)
    assert max(len(t) for t, _ in rows) == 24  # truncation is exercised
    check(adata, rows, vocab)
    assert adata.uns["sct"]["params"]["select"] == select
    assert adata.uns["sct"]["params"]["seed"] == seed


def test_adaptive_bin_random_selection_depends_on_seed(counts):
    a, b = counts.copy(), counts.copy()
    sct.pp.tokenize(a, method="adaptive_bin", max_length=10, select="random", seed=0)
    sct.pp.tokenize(b, method="adaptive_bin", max_length=10, select="random", seed=1)
    assert not np.array_equal(a.obsm["sct_tokens"], b.obsm["sct_tokens"])


@pytest.mark.parametrize("select", ["top", "random"])
def test_adaptive_bin_independent_of_chunks_and_threads(make_counts, monkeypatch, select):
    adata = make_counts(300, 250, mean_depth=2.0, seed=4)
    results = []
    # chunks of cells, threads, and the row blocks each chunk is cut into internally
    for chunk_size, n_jobs, block in [
        (4096, 1, 1 << 18),
        (7, 1, 1 << 18),
        (64, 2, 1 << 18),
        (50, 3, 1 << 18),
        (1, 2, 1 << 18),
        (4096, 1, 300),
        (100, 2, 1000),
    ]:
        monkeypatch.setattr(sct.settings, "n_jobs", n_jobs)
        monkeypatch.setattr(_encode, "BLOCK_ELEMENTS", block)
        out = sct.pp.tokenize(
            adata,
            method="adaptive_bin",
            max_length=30,
            select=select,
            seed=5,
            chunk_size=chunk_size,
            copy=True,
        )
        results.append(out)
    for other in results[1:]:
        np.testing.assert_array_equal(other.obsm["sct_tokens"], results[0].obsm["sct_tokens"])
        np.testing.assert_array_equal(other.obsm["sct_values"], results[0].obsm["sct_values"])


@pytest.mark.parametrize("method", ["rank", "bin", "value", "sentence"])
def test_other_methods_independent_of_chunks_and_threads(counts, monkeypatch, method):
    outs = []
    for chunk_size, n_jobs, block in [(4096, 1, 1 << 18), (13, 2, 1 << 18), (100, 3, 500)]:
        monkeypatch.setattr(sct.settings, "n_jobs", n_jobs)
        monkeypatch.setattr(_encode, "BLOCK_ELEMENTS", block)
        outs.append(sct.pp.tokenize(counts, method=method, chunk_size=chunk_size, copy=True))
    for other in outs[1:]:
        if method == "sentence":
            assert other.obs["sct_sentence"].equals(outs[0].obs["sct_sentence"])
        else:
            np.testing.assert_array_equal(other.obsm["sct_tokens"], outs[0].obsm["sct_tokens"])
            np.testing.assert_array_equal(other.obsm["sct_values"], outs[0].obsm["sct_values"])


def test_adaptive_bin_include_zeros(counts):
    x = dense(counts)
    sct.pp.tokenize(counts, method="adaptive_bin", include_zeros=True, max_length=None)
    vocab, ids = vocab_of(counts)
    rows = []
    for (t, v), row in zip(reference_adaptive(x, ids, max_length=10_000), x, strict=True):
        bins = dict(zip(t, v, strict=True))
        rows.append(
            (list(ids), [bins.get(i, 0) if r > 0 else 0 for i, r in zip(ids, row, strict=True)])
        )
    check(counts, rows, vocab)


# --- value and sentence ---------------------------------------------------------------------


def test_value(counts):
    x = dense(counts)
    sct.pp.tokenize(counts, method="value", max_length=None)
    vocab, ids = vocab_of(counts)
    rows = []
    for row in x:
        genes = np.flatnonzero(row > 0)
        rows.append((list(ids[genes]), list(log_norm(row)[genes].astype(np.float32))))
    check(counts, rows, vocab)


def test_value_top_genes_in_var_order(pbmc):
    x = dense(pbmc)
    sct.pp.tokenize(pbmc, method="value", max_length=50, pad_value=0.0)
    vocab, ids = vocab_of(pbmc)
    rows = []
    for row in x:
        expr = log_norm(row)
        kept = top_in_var_order(list(np.flatnonzero(row > 0)), expr, 49)
        rows.append((list(ids[kept]), list(expr[kept].astype(np.float32))))
    check(pbmc, rows, vocab, pad_value=0.0)


@pytest.mark.parametrize("k", [100, 7])
def test_sentence(pbmc, k):
    x = dense(pbmc)
    sct.pp.tokenize(pbmc, method="sentence", max_length=k)
    # Cell2Sentence writes upper-cased names (pbmc68k has none that collide once upper-cased)
    names = np.asarray([n.upper() for n in pbmc.var_names])
    assert len(set(names)) == len(names)
    want = []
    for row in x:
        nz = np.flatnonzero(row > 0)
        order = nz[np.argsort(-row[nz], kind="stable")][:k]
        want.append(" ".join(names[order]))
    assert pbmc.obs["sct_sentence"].tolist() == want
    assert "sct_tokens" not in pbmc.obsm
    assert pbmc.obs["sct_n_tokens"].tolist() == [len(s.split()) for s in want]
