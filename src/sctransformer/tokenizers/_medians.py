"""Per-gene medians of normalised expression (Geneformer's normalisation factors) from data."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np
import scipy.sparse as sp

from ._encode import RowScan, _map, ranges, scan_chunk

# hits a row block collects before placing them (16 bytes each)
_HIT_BUFFER = 1 << 20


def _row_blocks(n: int, n_parts: int) -> list[tuple[int, int]]:
    return ranges(np.linspace(0, n, max(1, n_parts) + 1).astype(int))


def gene_medians(
    chunks: Callable[[], Iterable[sp.csr_matrix]],
    usable: np.ndarray,
    *,
    target_sum: float,
    n_jobs: int = 1,
    totals: np.ndarray | None = None,
    scans: list[RowScan] | None = None,
) -> np.ndarray:
    """Median of each usable gene's nonzero values after scaling every cell to ``target_sum``
    (NaN for genes never expressed or not usable); exactly ``np.median`` of the float64
    values, computed without sorting them.

    ``totals`` are the cells' denominators in the order ``chunks`` yields them (default: each
    cell's float64 sum over all stored values). ``chunks`` yields the matrix as CSR row chunks;
    a single chunk is read three times (scan and count, scatter, collect), several chunks
    four. The selection runs on the values' float32 images (4 bytes each, the only copy of the
    data); the float64 values around each middle are collected afterwards and decide exactly.

    ``scans``, when given, receives each chunk's first :class:`RowScan` (its totals, usable
    genes per cell and value checks), so encoding the chunks afterwards need not scan them.
    """
    from . import _median_kernels as _kernels

    col_ok = np.asarray(usable, dtype=bool)
    n_vars = len(col_ok)
    row_totals: list[np.ndarray] = []

    def count(csr, tot):
        """Per-thread column counts over row blocks, with the rows' totals and value checks."""
        blocks = _row_blocks(csr.shape[0], n_jobs)
        per_block = np.zeros((len(blocks), n_vars), dtype=np.int64)
        scan = scan_chunk(csr, col_ok, tot, blocks, n_jobs, block_counts=per_block)
        return blocks, per_block, scan

    first = None
    counts = np.zeros(n_vars, dtype=np.int64)
    row = 0
    for csr in chunks():
        tot = None if totals is None else totals[row : row + csr.shape[0]]
        blocks, per_block, scan = count(csr, tot)
        if scans is not None:
            scans.append(scan)
        row_totals.append(scan.totals)
        counts += per_block.sum(axis=0)
        first = (blocks, per_block) if row == 0 else None
        row += csr.shape[0]
    several = len(row_totals) > 1
    starts = np.zeros(n_vars + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    images = np.empty(int(starts[-1]), dtype=np.float32)
    cursor = starts[:-1].copy()
    for csr, tot in zip(chunks(), row_totals, strict=True):
        # one chunk: its counts are known; several: counted again (not kept per chunk)
        blocks, per_block, _ = count(csr, tot) if several else (*first, None)
        offsets = cursor + np.cumsum(per_block, axis=0) - per_block

        def fill(b, csr=csr, offsets=offsets, blocks=blocks, tot=tot):
            r0, r1 = blocks[b]
            _kernels.scatter_images(
                csr.indptr, csr.indices, csr.data, col_ok, r0, r1, float(target_sum), tot,
                offsets[b], images,
            )  # fmt: skip

        _map(fill, range(len(blocks)), n_jobs)
        cursor += per_block.sum(axis=0)

    target = np.zeros((n_vars, 2), dtype=np.uint32)
    rank = np.zeros((n_vars, 2), dtype=np.int64)
    size = np.zeros((n_vars, 2), dtype=np.int64)
    # columns split into parts of about equal numbers of values
    cuts = np.searchsorted(starts, np.linspace(0, starts[-1], max(1, n_jobs) + 1)[1:-1])
    parts = ranges([0, *sorted(set(cuts.tolist())), n_vars])
    _map(
        lambda p: _kernels.select_images(starts, images, p[0], p[1], target, rank, size),
        parts,
        n_jobs,
    )
    images = np.empty(0, dtype=np.float32)  # freed before the float64 groups
    target32 = target.view(np.float32)
    own = size.copy()
    own[:, 0] = np.where(target[:, 0] == target[:, 1], 0, size[:, 0])  # shared group: no slots
    gstart = np.zeros(2 * n_vars + 1, dtype=np.int64)
    np.cumsum(own.ravel(), out=gstart[1:])
    groups = np.empty(int(gstart[-1]), dtype=np.float64)
    gstart = gstart[:-1]
    gpos = np.zeros(2 * n_vars, dtype=np.int64)
    placing = threading.Lock()
    for csr, tot in zip(chunks(), row_totals, strict=True):
        # each row block lists its hits in a bounded buffer (ties can make the groups as large
        # as the data), placed into the shared groups whenever the buffer is full
        longest = int(np.diff(csr.indptr).max(initial=0))

        def collect(block, csr=csr, tot=tot, longest=longest):
            r, r1 = block
            cap = max(min(_HIT_BUFFER, int(csr.indptr[r1] - csr.indptr[r])), longest)
            slot = np.empty(cap, dtype=np.int64)
            value = np.empty(cap, dtype=np.float64)
            while r < r1:
                m, r = _kernels.collect_hits(
                    csr.indptr, csr.indices, csr.data, col_ok, r, r1, float(target_sum), tot,
                    target32, slot, value,
                )  # fmt: skip
                with placing:
                    _kernels.place_hits(slot, value, m, gstart, gpos, groups)

        _map(collect, _row_blocks(csr.shape[0], n_jobs), n_jobs)
    gstart = np.ascontiguousarray(gstart.reshape(n_vars, 2))
    out = np.empty(n_vars, dtype=np.float64)
    _kernels.exact_medians(counts, gstart, rank, size, target32, groups, out)
    return out


# rank_medians takes a parameter of the same name
gene_medians_of = gene_medians


def rank_medians(
    gene_medians,
    vocab,
    names,
    gene_ids,
    chunks,
    *,
    target_sum: float,
    n_jobs: int,
    totals=None,
    scans: list[RowScan] | None = None,
):
    """Per var column median for ``rank`` (NaN = unusable gene) and where it came from.

    ``gene_medians``: a mapping, ``"vocab"``, ``"data"``, ``"none"`` or ``None`` (the
    vocabulary's when it has them, else the data's); ``chunks`` yields the data's CSR chunks
    (called only for ``"data"``), whose row scans go to ``scans`` (see :func:`gene_medians`).
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
        chunks, gene_ids >= 0, target_sum=target_sum, n_jobs=n_jobs, totals=totals, scans=scans
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
