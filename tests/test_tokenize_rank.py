"""``sct.pp.tokenize(method="rank")`` against a plain per-cell Geneformer reference."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sctransformer as sct
from sctransformer.tokenizers import GeneVocab


def dense(adata: AnnData) -> np.ndarray:
    x = adata.X
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def reference_medians(x: np.ndarray, usable: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """Per gene, np.median of its nonzero normalised values over all cells (NaN if none)."""
    out = np.full(x.shape[1], np.nan)
    totals = x.sum(axis=1)
    for j in range(x.shape[1]):
        if not usable[j]:
            continue
        vals = [x[i, j] / totals[i] * target_sum for i in range(x.shape[0]) if x[i, j] > 0]
        if vals:
            out[j] = np.median(np.array(vals, dtype=np.float64))
    return out


def reference_rank(
    x: np.ndarray,
    gene_ids: np.ndarray,
    medians: np.ndarray,
    *,
    pad_id: int,
    cls_id: int | None,
    eos_id: int | None,
    max_length: int,
    target_sum: float = 1e4,
    pad_value: float = -2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geneformer's rank-value encoding, one cell at a time over a dense float64 row."""
    n_special = (cls_id is not None) + (eos_id is not None)
    rows_t, rows_v = [], []
    for row in x:
        total = row.sum()  # over ALL genes, in or out of the vocabulary
        genes, scores = [], []
        for j in range(len(row)):
            m = medians[j]
            if row[j] > 0 and gene_ids[j] >= 0 and np.isfinite(m) and m > 0:
                genes.append(j)
                scores.append(row[j] / total * target_sum / m)
        genes = np.array(genes, dtype=np.int64)
        scores = np.array(scores, dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[: max_length - n_special]
        t = list(gene_ids[genes[order]])
        v = list(scores[order].astype(np.float32))
        if cls_id is not None:
            t, v = [cls_id, *t], [pad_value, *v]
        if eos_id is not None:
            t, v = [*t, eos_id], [*v, pad_value]
        rows_t.append(t)
        rows_v.append(v)
    width = max(len(t) for t in rows_t)
    tokens = np.full((len(rows_t), width), pad_id, dtype=np.int64)
    values = np.full((len(rows_t), width), pad_value, dtype=np.float32)
    for i, (t, v) in enumerate(zip(rows_t, rows_v, strict=True)):
        tokens[i, : len(t)] = t
        values[i, : len(v)] = v
    return tokens, values, np.array([len(t) for t in rows_t])


def reference_for(adata: AnnData, x: np.ndarray, medians: np.ndarray, *, max_length: int):
    """``reference_rank`` with the ids of the vocabulary that tokenize stored (no <eos>)."""
    vocab = GeneVocab.from_json(adata.uns["sct"]["vocab"])
    return reference_rank(
        x,
        vocab.encode_genes(adata.var_names),
        medians,
        pad_id=vocab.pad_id,
        cls_id=vocab.cls_id,
        eos_id=None,
        max_length=max_length,
    )


def assert_same(adata: AnnData, ref, key: str = "sct") -> None:
    tokens, values, n = ref
    got_t = adata.obsm[f"{key}_tokens"]
    got_v = adata.obsm[f"{key}_values"]
    assert got_t.dtype == np.int32
    assert got_v.dtype == np.float32
    assert got_t.shape == tokens.shape
    np.testing.assert_array_equal(got_t, tokens)
    np.testing.assert_array_equal(got_v, values)  # exact: same float64 arithmetic, then float32
    np.testing.assert_array_equal(adata.obs[f"{key}_n_tokens"].to_numpy(), n)


def test_rank_with_data_medians(counts):
    x = dense(counts)
    sct.pp.tokenize(counts, method="rank")
    vocab = GeneVocab.from_json(counts.uns["sct"]["vocab"])
    ids = vocab.encode_genes(counts.var_names)
    med = reference_medians(x, ids >= 0)
    ref = reference_rank(
        x, ids, med, pad_id=vocab.pad_id, cls_id=vocab.cls_id, eos_id=None, max_length=2048
    )
    assert_same(counts, ref)
    params = counts.uns["sct"]["params"]
    assert params["gene_medians"] == "data"
    # the data's medians are recorded in the stored vocabulary, exactly
    for j, g in enumerate(counts.var_names):
        if np.isfinite(med[j]):
            assert vocab.gene_medians[g] == med[j]


def test_rank_given_medians_mapping_and_truncation(counts):
    rng = np.random.default_rng(1)
    x = dense(counts)
    # medians for 2/3 of the genes, as a Series; the others are not ranked at all
    names = counts.var_names[rng.permutation(counts.n_vars)[: 2 * counts.n_vars // 3]]
    given = pd.Series(rng.uniform(0.5, 50.0, len(names)), index=names)
    sct.pp.tokenize(counts, method="rank", gene_medians=given, max_length=40)
    vocab = GeneVocab.from_json(counts.uns["sct"]["vocab"])
    ids = vocab.encode_genes(counts.var_names)
    med = given.reindex(counts.var_names).to_numpy(dtype=np.float64)
    ref = reference_rank(
        x, ids, med, pad_id=vocab.pad_id, cls_id=vocab.cls_id, eos_id=None, max_length=40
    )
    assert ref[0].shape[1] == 40  # truncation is exercised
    assert_same(counts, ref)
    assert counts.uns["sct"]["params"]["gene_medians"] == "given"


def test_rank_vocab_medians_are_the_default(counts):
    rng = np.random.default_rng(2)
    meds = {
        g: float(m) for g, m in zip(counts.var_names, rng.uniform(1, 9, counts.n_vars), strict=True)
    }
    vocab = GeneVocab.from_genes(counts.var_names, gene_medians=meds)
    x = dense(counts)
    sct.pp.tokenize(counts, method="rank", vocab=vocab, target_sum=2e4, max_length=64)
    ids = vocab.encode_genes(counts.var_names)
    med = np.array([meds[g] for g in counts.var_names])
    ref = reference_rank(
        x,
        ids,
        med,
        pad_id=vocab.pad_id,
        cls_id=vocab.cls_id,
        eos_id=None,
        max_length=64,
        target_sum=2e4,
    )
    assert_same(counts, ref)
    assert counts.uns["sct"]["params"]["gene_medians"] == "vocab"


def test_rank_ties_in_var_order(make_counts):
    # tiny depth: most nonzero counts are 1 or 2, so almost every cell has long runs of ties
    adata = make_counts(120, 200, mean_depth=0.3, seed=5)
    x = dense(adata)
    assert any(len(np.unique(r[r > 0])) < (r > 0).sum() / 2 for r in x)
    sct.pp.tokenize(adata, method="rank", gene_medians="none", pad_value=-1.0)
    vocab = GeneVocab.from_json(adata.uns["sct"]["vocab"])
    ids = vocab.encode_genes(adata.var_names)
    ref = reference_rank(
        x,
        ids,
        np.ones(adata.n_vars),
        pad_id=vocab.pad_id,
        cls_id=vocab.cls_id,
        eos_id=None,
        max_length=2048,
        pad_value=-1.0,
    )
    assert_same(adata, ref)


def test_rank_nearly_equal_scores_are_ordered_exactly(make_counts):
    # medians that make float64 scores differ only beyond float32 precision
    adata = make_counts(60, 120, seed=8)
    x = dense(adata)
    med = np.full(adata.n_vars, 3.0)
    med[1::2] = np.nextafter(3.0, 4.0)
    given = dict(zip(adata.var_names, med, strict=True))
    sct.pp.tokenize(adata, method="rank", gene_medians=given)
    assert_same(adata, reference_for(adata, x, med, max_length=2048))


def test_rank_totals_cover_genes_outside_the_vocabulary(counts):
    # half the genes are unknown: they are not tokens but still count towards the cell total
    x = dense(counts)
    known = list(counts.var_names[::2])
    meds = dict.fromkeys(known, 2.0)
    vocab = GeneVocab.from_genes(known, gene_medians=meds)
    sct.pp.tokenize(counts, method="rank", vocab=vocab, min_gene_fraction=0.4)
    ids = vocab.encode_genes(counts.var_names)
    assert (ids < 0).sum() == counts.n_vars // 2
    med = np.where(ids >= 0, 2.0, np.nan)
    ref = reference_rank(
        x, ids, med, pad_id=vocab.pad_id, cls_id=vocab.cls_id, eos_id=None, max_length=2048
    )
    assert_same(counts, ref)


# --- Geneformer V1 / V2 settings with a token + median dictionary written here --------------


def _geneformer_setup(n_cells: int, n_genes: int, *, specials, seed: int, depth: float):
    """Data named by symbols; a dictionary of Ensembl-like ids with medians and aliases.

    The dictionary knows 90% of the data's genes (plus a few the data lacks).
    """
    rng = np.random.default_rng(seed)
    symbols = [f"SYM{j}" for j in range(n_genes)]
    ens = [f"ENSG{j + 10_000:011d}" for j in range(n_genes + 20)]
    known = rng.permutation(n_genes)[: int(0.9 * n_genes)]
    dict_genes = [ens[j] for j in sorted(known)] + ens[n_genes:]
    medians = {g: float(rng.uniform(0.2, 20.0)) for g in dict_genes}
    aliases = {symbols[j]: ens[j] for j in known}
    vocab = GeneVocab.from_genes(
        dict_genes, specials=specials, gene_medians=medians, aliases=aliases
    )
    mu = rng.lognormal(0.0, 1.0, size=(n_cells, n_genes)) * depth
    x = rng.poisson(mu).astype(np.float32)
    adata = AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=symbols))
    med = np.array([medians.get(aliases.get(s, ""), np.nan) for s in symbols])
    return adata, vocab, med


def test_geneformer_v1_settings():
    adata, vocab, med = _geneformer_setup(
        30, 2600, specials=["<pad>", "<mask>"], seed=11, depth=8.0
    )
    x = dense(adata)
    assert ((x > 0) & np.isfinite(med)).sum(axis=1).max() > 2048  # the crop matters
    sct.pp.tokenize(adata, method="rank", vocab=vocab, max_length=2048, add_cls=False)
    ref = reference_rank(
        x,
        vocab.encode_genes(adata.var_names),
        med,
        pad_id=vocab.pad_id,
        cls_id=None,
        eos_id=None,
        max_length=2048,
    )
    assert ref[0].shape[1] == 2048
    assert_same(adata, ref)
    # V1 has no <cls>: every token is a gene
    assert not np.isin(adata.obsm["sct_tokens"], [vocab["<mask>"]]).any()


def test_geneformer_v2_settings():
    adata, vocab, med = _geneformer_setup(
        12, 4800, specials=["<pad>", "<mask>", "<cls>", "<eos>"], seed=12, depth=20.0
    )
    x = dense(adata)
    assert ((x > 0) & np.isfinite(med)).sum(axis=1).max() > 4094
    sct.pp.tokenize(adata, method="rank", vocab=vocab, max_length=4096, add_cls=True, add_eos=True)
    ref = reference_rank(
        x,
        vocab.encode_genes(adata.var_names),
        med,
        pad_id=vocab.pad_id,
        cls_id=vocab.cls_id,
        eos_id=vocab.eos_id,
        max_length=4096,
    )
    assert ref[0].shape[1] == 4096
    assert_same(adata, ref)
    tok = adata.obsm["sct_tokens"]
    n = adata.obs["sct_n_tokens"].to_numpy()
    assert (tok[:, 0] == vocab.cls_id).all()
    assert (tok[np.arange(len(n)), n - 1] == vocab.eos_id).all()
    assert n.max() == 4096  # 4,094 genes + <cls> + <eos>


def test_rank_without_cls_token_in_vocab_fails_clearly():
    adata, vocab, _ = _geneformer_setup(5, 50, specials=["<pad>", "<mask>"], seed=3, depth=2.0)
    with pytest.raises(ValueError, match="no <cls> token"):
        sct.pp.tokenize(adata, method="rank", vocab=vocab, add_cls=True)
    assert "sct_tokens" not in adata.obsm


def test_rank_on_pbmc(pbmc):
    x = dense(pbmc)
    sct.pp.tokenize(pbmc, method="rank", max_length=256, add_eos=True)
    vocab = GeneVocab.from_json(pbmc.uns["sct"]["vocab"])
    ids = vocab.encode_genes(pbmc.var_names)
    med = np.array([vocab.gene_medians.get(g, np.nan) for g in pbmc.var_names])
    # the recorded medians are the data's own
    np.testing.assert_array_equal(med, reference_medians(x, ids >= 0))
    ref = reference_rank(
        x,
        ids,
        med,
        pad_id=vocab.pad_id,
        cls_id=vocab.cls_id,
        eos_id=vocab.eos_id,
        max_length=256,
    )
    assert_same(pbmc, ref)


@pytest.mark.parametrize("naming", ["symbols", "versioned"])
def test_given_median_dictionary_keyed_by_vocab_ids(naming):
    # Geneformer ships its median dictionary keyed by Ensembl id; data named by symbols (through
    # the vocabulary's aliases) or by versioned ids must still find each gene's median
    adata, vocab, med = _geneformer_setup(40, 300, specials=["<pad>", "<mask>"], seed=21, depth=2.0)
    medians = dict(vocab.gene_medians)
    bare = GeneVocab.from_dict({**vocab.to_dict(), "gene_medians": {}})
    if naming == "versioned":
        ens = [
            bare.aliases.get(s, f"ENSG{9_000_000 + j:011d}") for j, s in enumerate(adata.var_names)
        ]
        adata.var_names = [f"{e}.{j % 5 + 1}" for j, e in enumerate(ens)]
    x = dense(adata)
    sct.pp.tokenize(adata, method="rank", vocab=bare, gene_medians=medians, add_cls=False)
    ref = reference_rank(
        x,
        bare.encode_genes(adata.var_names),
        med,
        pad_id=bare.pad_id,
        cls_id=None,
        eos_id=None,
        max_length=2048,
    )
    assert_same(adata, ref)


def test_rank_scores_crowded_behind_an_outlier(make_counts):
    # one gene with a tiny median gets a huge score in every cell; the others' scores lie within
    # 0.1% of each other, so the coarse sort keys hold long runs that must be settled exactly
    adata = make_counts(40, 600, mean_depth=1.0, seed=11)
    x = dense(adata)
    rng = np.random.default_rng(3)
    med = 1.0 + rng.uniform(0.0, 1e-3, adata.n_vars)
    med[0] = 1e-30
    x[:, 0] = np.maximum(x[:, 0], 1.0)
    adata.X = sp.csr_matrix(x.astype(np.float32))
    given = dict(zip(adata.var_names, med, strict=True))
    sct.pp.tokenize(adata, method="rank", gene_medians=given, max_length=100)
    ref = reference_for(adata, x, med, max_length=100)
    assert (ref[2] == 100).any()  # truncation is exercised
    assert_same(adata, ref)


def _plain_medians(x, usable, totals=None):
    """np.median of each usable column's nonzero values scaled by the cells' totals."""
    x = np.asarray(x, dtype=np.float64)
    totals = x.sum(axis=1) if totals is None else totals
    out = np.full(x.shape[1], np.nan)
    for j in range(x.shape[1]):
        nz = x[:, j] > 0
        if usable[j] and nz.any():
            out[j] = np.median(x[nz, j] / totals[nz] * 1e4)
    return out


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_data_medians_exact_with_given_totals_and_chunks(n_jobs, n_chunks):
    # per-gene medians against np.median on a matrix with ties at the middle, a gene never
    # expressed, one left out, chunked or whole, with the cells' own or given totals
    from sctransformer.tokenizers import _medians

    rng = np.random.default_rng(8)
    n, g = 2000, 60
    x = rng.poisson(rng.lognormal(0.0, 1.2, size=(n, g))).astype(np.float32)
    x[:, 7] = 0
    x[::3, 8] = 0
    x[::2, : g // 2] *= 50  # half the genes dominate in every other cell
    x[:, 10] = rng.integers(0, 3, n)  # heavy ties at the middle
    usable = np.ones(g, dtype=bool)
    usable[11] = False
    totals = x.astype(np.float64).sum(axis=1) * rng.uniform(1.0, 1.5, n)  # e.g. pre-filter
    bounds = np.linspace(0, n, n_chunks + 1).astype(int)
    chunks = [sp.csr_matrix(x[a:b]) for a, b in itertools.pairwise(bounds)]
    for given in (None, totals):
        got = _medians.gene_medians(
            lambda: iter(chunks), usable, target_sum=1e4, n_jobs=n_jobs, totals=given
        )
        want = _plain_medians(x, usable, given)
        np.testing.assert_array_equal(got, want)  # exact, NaN where never expressed


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_data_medians_equal_numpy_median_per_gene(n_jobs):
    from sctransformer.tokenizers._medians import gene_medians

    rng = np.random.default_rng(6)
    x = rng.poisson(rng.lognormal(-1.0, 1.5, size=(301, 80))).astype(np.float32)
    x[:, 0] = 0  # never expressed
    x[:, 1] = 0
    x[5, 1] = 3  # one value
    x[:2, 2] = 0  # (also) the same value in every cell that has it
    x[2:, 2] = 4
    x[:, 3] = np.arange(301) % 7  # many ties, even and odd counts across chunks
    usable = np.ones(80, dtype=bool)
    usable[4] = False
    chunks = [sp.csr_matrix(x[:120]), sp.csr_matrix(x[120:])]
    got = gene_medians(lambda: iter(chunks), usable, target_sum=1e4, n_jobs=n_jobs)
    totals = x.astype(np.float64).sum(axis=1)
    for j in range(80):
        vals = x[:, j].astype(np.float64)[x[:, j] > 0] / totals[x[:, j] > 0] * 1e4
        if not usable[j] or not len(vals):
            assert np.isnan(got[j])
        else:
            assert got[j] == np.median(vals), j


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_data_medians_exact_when_the_hit_buffer_fills(monkeypatch, n_jobs):
    # equal totals (cells downsampled to one depth) make the values around a gene's middle
    # equal in many cells, so the collected groups are large; a buffer of one row's size is
    # placed many times per block and must still give np.median exactly
    from sctransformer.tokenizers import _medians

    rng = np.random.default_rng(9)
    n, g = 600, 40
    x = rng.poisson(rng.lognormal(-0.5, 1.0, size=(n, g))).astype(np.float32)
    x[:, 0] = 5.0  # one value in every cell: its group is the whole gene
    x[:, -1] = x[:, :-1].sum(axis=1).max() + 1 - x[:, :-1].sum(axis=1)  # every total equal
    assert np.unique(x.sum(axis=1)).size == 1
    usable = np.ones(g, dtype=bool)
    monkeypatch.setattr(_medians, "_HIT_BUFFER", 1)  # the buffer holds the longest row only
    chunks = [sp.csr_matrix(x[:250]), sp.csr_matrix(x[250:])]
    got = _medians.gene_medians(lambda: iter(chunks), usable, target_sum=1e4, n_jobs=n_jobs)
    want = _plain_medians(x, usable)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("chunk_size", [4096, 70])
def test_data_medians_with_given_totals_match_a_plain_reference(chunk_size):
    # the row scan of the medians' pass is reused for encoding: tokens must still equal a plain
    # per-cell reference, here with the cells' own totals given (n_counts from before a gene
    # filter), a gene never expressed, a gene the vocabulary lacks and chunked reading
    rng = np.random.default_rng(12)
    n, g = 240, 50
    x = rng.poisson(rng.lognormal(0.0, 1.0, size=(n, g))).astype(np.float32)
    x[:, 3] = 0  # never expressed: no median, never ranked
    x[::4, 9] = 7  # ties at the middle
    totals = x.astype(np.float64).sum(axis=1) * rng.uniform(1.0, 1.4, n)
    names = [f"g{j}" for j in range(g)]
    adata = AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=names))
    adata.obs["n_counts"] = totals
    vocab = GeneVocab.from_genes([m for j, m in enumerate(names) if j != 5])  # lacks g5
    ids = vocab.encode_genes(names)
    sct.pp.tokenize(
        adata, method="rank", vocab=vocab, gene_medians="data", total_key="n_counts",
        chunk_size=chunk_size, max_length=30,
    )  # fmt: skip
    xs = x.astype(np.float64)
    med = _plain_medians(xs, ids >= 0, totals)
    assert np.isnan(med[3]) and np.isnan(med[5])
    width = 1 + min(29, int(((xs > 0) & np.isfinite(med)).sum(axis=1).max()))
    want_t = np.full((n, width), vocab.pad_id, dtype=np.int64)
    want_v = np.full((n, width), -2.0, dtype=np.float32)
    for i in range(n):
        genes = [j for j in range(g) if xs[i, j] > 0 and np.isfinite(med[j])]
        scores = np.array([xs[i, j] / totals[i] * 1e4 / med[j] for j in genes])
        order = np.argsort(-scores, kind="stable")[:29]
        want_t[i, 0] = vocab.cls_id
        want_t[i, 1 : 1 + len(order)] = ids[np.array(genes)[order]]
        want_v[i, 1 : 1 + len(order)] = scores[order].astype(np.float32)
    np.testing.assert_array_equal(adata.obsm["sct_tokens"], want_t)
    np.testing.assert_array_equal(adata.obsm["sct_values"], want_v)


def test_row_scan_reused_only_for_the_columns_it_counted():
    from sctransformer.tokenizers._encode import Encoding, _blocks, encode_chunk, scan_chunk

    rng = np.random.default_rng(13)
    dense_x = rng.poisson(0.8, size=(50, 12)).astype(np.float32)
    dense_x[:, 4] = 0  # an all-zero column
    x = sp.csr_matrix(dense_x)
    ids = np.arange(12)
    med = rng.uniform(0.5, 3.0, 12)
    enc = Encoding("rank", max_length=64)
    plain = encode_chunk(x, enc, gene_ids=ids, medians=med)
    counted = np.zeros((1, 12), dtype=np.int64)
    all_cols = np.ones(12, dtype=bool)
    scan = scan_chunk(x, all_cols, None, [(0, 50)], 1, block_counts=counted)
    np.testing.assert_array_equal(counted[0], (dense_x > 0).sum(axis=0))
    # a median left out where the column holds no value: the scan still fits
    no_med = med.copy()
    no_med[4] = np.nan
    assert scan.fits(all_cols & (np.arange(12) != 4))
    reused = encode_chunk(x, enc, gene_ids=ids, medians=no_med, scan=scan)
    np.testing.assert_array_equal(reused.tokens, plain.tokens)
    np.testing.assert_array_equal(reused.values, plain.values)
    # a column with values left out: the per-cell counts differ, so the chunk is scanned again
    fewer = med.copy()
    fewer[0] = np.nan
    assert not scan.fits(all_cols & (np.arange(12) != 0))
    again = encode_chunk(x, enc, gene_ids=ids, medians=fewer, scan=scan)
    fresh = encode_chunk(x, enc, gene_ids=ids, medians=fewer)
    np.testing.assert_array_equal(again.tokens, fresh.tokens)
    np.testing.assert_array_equal(again.lengths, fresh.lengths)
    assert (dense_x[:, 0] > 0).any() and not (again.tokens == 0).any()  # gene 0 not ranked
    # a scan of other columns without column counts fits only the same columns
    bare = scan_chunk(x, all_cols, None, _blocks(x.indptr.astype(np.int64), None), 1)
    assert bare.fits(all_cols) and not bare.fits(np.arange(12) != 4)
