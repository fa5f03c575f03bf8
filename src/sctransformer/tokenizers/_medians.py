"""Per-gene medians of normalised expression (Geneformer's normalisation factors) from data."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import scipy.sparse as sp

from ._encode import _map, ranges


def _row_blocks(n: int, n_parts: int) -> list[tuple[int, int]]:
    return ranges(np.linspace(0, n, max(1, n_parts) + 1).astype(int))


def gene_medians(
    chunks: Callable[[], Iterable[sp.csr_matrix]],
    usable: np.ndarray,
    *,
    target_sum: float,
    n_jobs: int = 1,
) -> np.ndarray:
    """Median of each usable gene's nonzero values after scaling every cell to ``target_sum``
    (NaN for genes never expressed or not usable); exact, in float64.

    ``chunks`` yields the matrix as CSR row chunks and is called twice (count, then fill), so
    memory is the nonzero values of usable genes, once, in float64.
    """
    from .._validate import raise_bad_values
    from . import _kernels

    col_ok = np.asarray(usable, dtype=bool)
    n_vars = len(col_ok)
    counts = np.zeros(n_vars, dtype=np.int64)
    for csr in chunks():
        flags = _kernels.count_columns(
            csr.indptr, csr.indices, csr.data, col_ok, 0, csr.shape[0], counts
        )
        raise_bad_values(finite=flags[0], non_negative=flags[0] and flags[1])
    starts = np.zeros(n_vars + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    values = np.empty(int(starts[-1]), dtype=np.float64)
    cursor = starts[:-1].copy()
    for csr in chunks():
        blocks = _row_blocks(csr.shape[0], n_jobs)
        # each thread fills its own slice of every column's segment
        per_block = np.zeros((len(blocks), n_vars), dtype=np.int64)
        for b, (r0, r1) in enumerate(blocks):
            _kernels.count_columns(csr.indptr, csr.indices, csr.data, col_ok, r0, r1, per_block[b])
        offsets = cursor + np.cumsum(per_block, axis=0) - per_block

        def fill(b, csr=csr, offsets=offsets, blocks=blocks):
            r0, r1 = blocks[b]
            _kernels.scatter_columns(
                csr.indptr, csr.indices, csr.data, col_ok, r0, r1, float(target_sum),
                offsets[b], values,
            )  # fmt: skip

        _map(fill, range(len(blocks)), n_jobs)
        cursor += per_block.sum(axis=0)
    out = np.empty(n_vars, dtype=np.float64)
    # columns split into parts of about equal numbers of values
    cuts = np.searchsorted(starts, np.linspace(0, starts[-1], max(1, n_jobs) + 1)[1:-1])
    parts = ranges([0, *sorted(set(cuts.tolist())), n_vars])
    _map(lambda p: _kernels.segment_medians(starts, values, p[0], p[1], out), parts, n_jobs)
    return out
