"""Per-gene medians of normalised expression (Geneformer's normalisation factors) from data."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import scipy.sparse as sp

from ._encode import _map, ranges


def _row_blocks(n: int, n_parts: int) -> list[tuple[int, int]]:
    return ranges(np.linspace(0, n, max(1, n_parts) + 1).astype(int))


# the sample holds at most this many values (8 bytes each) and brackets each median by this
# many binomial standard deviations (a miss, about 1 gene in 80, only makes that gene collect
# all its values); a gene with fewer sample values collects all of its own
_SAMPLE_VALUES = 1 << 21
_Z = 2.5
_MIN_SAMPLE = 16


def _strided_sample(chunks, totals, cap: int):
    """Every ``step``-th cell over all chunks as one CSR matrix and its totals (NaN: not
    given), ``step`` a power of two doubled until the sample holds at most ``cap`` values.
    A single chunk is sliced once; several are read once more.
    """
    step, row, kept = 1, 0, []  # kept: (global rows, CSR, totals)
    for csr in chunks():
        n = csr.shape[0]
        while sum(k[1].nnz for k in kept) + csr.nnz / step > cap and step < max(row + n, 1):
            step *= 2
            kept = [_thin(k, step) for k in kept]
        first = (-row) % step
        rows = np.arange(first, n, step)
        tot = np.full(len(rows), np.nan) if totals is None else totals[row + rows]
        kept.append((row + rows, csr[first::step], tot))
        row += n
    if not kept:
        return sp.csr_matrix((0, 0)), np.empty(0)
    return sp.vstack([k[1] for k in kept], format="csr"), np.concatenate([k[2] for k in kept])


def _thin(kept, step: int):
    rows, csr, tot = kept
    keep = rows % step == 0
    return rows[keep], csr[np.flatnonzero(keep)], tot[keep]


def gene_medians(
    chunks: Callable[[], Iterable[sp.csr_matrix]],
    usable: np.ndarray,
    *,
    target_sum: float,
    n_jobs: int = 1,
    totals: np.ndarray | None = None,
) -> np.ndarray:
    """Median of each usable gene's nonzero values after scaling every cell to ``target_sum``
    (NaN for genes never expressed or not usable); exactly ``np.median`` of the float64
    values.

    ``totals`` are the cells' denominators in the order ``chunks`` yields them (default: each
    cell's float64 sum over all stored values). ``chunks`` yields the matrix as CSR row chunks;
    a single chunk is read twice (count, collect) after a strided sample of its rows, several
    chunks three times (sample, count, collect). Memory: the sample (at most ``_SAMPLE_VALUES``
    values) and, per gene, the values inside its bracket (a few tenths of them where the sample
    is representative; all of them for rare genes and where a bracket misses).
    """
    from .._validate import raise_bad_values
    from . import _median_kernels as mk

    col_ok = np.asarray(usable, dtype=bool)
    n_vars = len(col_ok)
    lo, hi = np.empty(n_vars), np.empty(n_vars)
    sample, sample_totals = _strided_sample(chunks, totals, _SAMPLE_VALUES)
    if sample.shape[1] == n_vars:
        mk.sample_brackets(
            sample.indptr, sample.indices, sample.data, col_ok, float(target_sum),
            sample_totals, _Z, _MIN_SAMPLE, lo, hi,
        )  # fmt: skip
    else:  # no cells
        lo[:], hi[:] = -np.inf, np.inf
    del sample

    def count(csr, tot):
        """Per row block: column counts, below and inside the brackets; checks the values."""
        blocks = _row_blocks(csr.shape[0], n_jobs)
        per = np.zeros((3, len(blocks), n_vars), dtype=np.int64)

        def one(b):
            r0, r1 = blocks[b]
            return mk.bracket_counts(
                csr.indptr, csr.indices, csr.data, col_ok, r0, r1, float(target_sum), tot,
                lo, hi, per[0, b], per[1, b], per[2, b],
            )  # fmt: skip

        flags = _map(one, range(len(blocks)), n_jobs)
        finite = all(f[0] for f in flags)
        raise_bad_values(finite=finite, non_negative=finite and all(f[1] for f in flags))
        return blocks, per

    counts = np.zeros(n_vars, dtype=np.int64)
    below = np.zeros(n_vars, dtype=np.int64)
    inside = np.zeros(n_vars, dtype=np.int64)
    row_totals, first, row = [], None, 0
    for csr in chunks():
        tot = np.full(csr.shape[0], np.nan)
        if totals is not None:
            tot[:] = totals[row : row + csr.shape[0]]
        blocks, per = count(csr, tot)
        row_totals.append(tot)
        for total, part in zip((counts, below, inside), per, strict=True):
            total += part.sum(axis=0)
        first = (blocks, per) if row == 0 else None
        row += csr.shape[0]
    # both middle ranks, (n - 1) // 2 and n // 2, must lie inside; else collect the column whole
    missed = (below > (counts - 1) // 2) | (below + inside <= counts // 2)
    lo[missed], hi[missed] = -np.inf, np.inf
    below[missed], inside[missed] = 0, counts[missed]

    starts = np.zeros(n_vars + 1, dtype=np.int64)
    np.cumsum(inside, out=starts[1:])
    # each row block writes the values it skips to a spare slot of its own, after the groups
    groups = np.empty(int(starts[-1]) + max(1, n_jobs), dtype=np.float64)
    cursor = starts[:-1].copy()
    for csr, tot in zip(chunks(), row_totals, strict=True):
        if len(row_totals) == 1:  # the first pass's counts hold; a missed column takes all
            blocks, per = first
            in_block = np.where(missed, per[0], per[2])
        else:
            blocks, per = count(csr, tot.copy())
            in_block = per[2]
        offsets = cursor + np.cumsum(in_block, axis=0) - in_block

        def fill(b, csr=csr, offsets=offsets, blocks=blocks, tot=tot):
            r0, r1 = blocks[b]
            mk.collect_bracket(
                csr.indptr, csr.indices, csr.data, col_ok, r0, r1, float(target_sum), tot,
                lo, hi, offsets[b], groups, int(starts[-1]) + b,
            )  # fmt: skip

        _map(fill, range(len(blocks)), n_jobs)
        cursor += in_block.sum(axis=0)
    out = np.empty(n_vars, dtype=np.float64)
    # columns split into parts of about equal numbers of collected values
    cuts = np.searchsorted(starts, np.linspace(0, starts[-1], max(1, n_jobs) + 1)[1:-1])
    parts = ranges([0, *sorted(set(cuts.tolist())), n_vars])
    _map(
        lambda p: mk.bracket_medians(counts, below, starts, groups, p[0], p[1], out),
        parts,
        n_jobs,
    )
    return out


# rank_medians takes a parameter of the same name
gene_medians_of = gene_medians


def rank_medians(
    gene_medians, vocab, names, gene_ids, chunks, *, target_sum: float, n_jobs: int, totals=None
):
    """Per var column median for ``rank`` (NaN = unusable gene) and where it came from.

    ``gene_medians``: a mapping, ``"vocab"``, ``"data"``, ``"none"`` or ``None`` (the
    vocabulary's when it has them, else the data's); ``chunks`` yields the data's CSR chunks
    (called only for ``"data"``).
    """
    if isinstance(gene_medians, str):
        if gene_medians not in ("vocab", "data", "none"):
            raise ValueError(
                f"gene_medians={gene_medians!r}; use 'vocab', 'data', 'none' or a mapping"
            )
        source = gene_medians
    elif gene_medians is None:
        source = "vocab" if vocab.gene_medians else "data"
    else:
        # keys may be the data's names or the vocabulary's tokens they map to (Geneformer's
        # dictionary is keyed by Ensembl id; data may use symbols or versioned ids)
        lookup = {str(k): v for k, v in gene_medians.items()}
        tokens = vocab.id_to_token(np.maximum(gene_ids, 0)) if len(vocab) else []
        med = np.full(len(names), np.nan)
        for j, (name, i) in enumerate(zip(names, gene_ids, strict=True)):
            m = lookup.get(name)
            if m is None and i >= 0:
                m = lookup.get(tokens[j])
            if m is not None:
                med[j] = float(m)
        if not np.isfinite(med).any():
            raise ValueError(
                "gene_medians names none of the data's genes (nor their vocabulary tokens); "
                "check its keys"
            )
        return med, "given"
    if source == "none":
        return np.where(gene_ids >= 0, 1.0, np.nan), "none"
    if source == "vocab":
        if not vocab.gene_medians:
            raise ValueError(
                "gene_medians='vocab' but the vocabulary has no gene medians; use "
                "gene_medians='data' to compute them from this data"
            )
        return vocab.medians_for(gene_ids), "vocab"
    medians = gene_medians_of(
        chunks, gene_ids >= 0, target_sum=target_sum, n_jobs=n_jobs, totals=totals
    )
    return medians, "data"


def with_medians(vocab, gene_ids, medians):
    """The vocabulary with the data's medians recorded, so queries reuse them."""
    d = vocab.to_dict()
    gene_ids, medians = np.asarray(gene_ids), np.asarray(medians, dtype=np.float64)
    known = (gene_ids >= 0) & np.isfinite(medians)
    tokens = vocab.id_to_token(gene_ids[known])
    d["gene_medians"] = {
        **d["gene_medians"],
        **dict(zip(tokens, medians[known].tolist(), strict=True)),
    }
    return type(vocab).from_dict(d)
