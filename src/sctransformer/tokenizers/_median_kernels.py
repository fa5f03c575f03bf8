"""Compiled kernels behind exact per-gene medians of normalised values (``rank`` without given
medians).

A strided sample of the cells brackets each gene's median between two of its sample's order
statistics; one pass counts, per gene, the values below and inside the bracket, which shows
whether both middle ranks fall inside; a second pass collects only the inside values, in
float64, and a selection among them gives the exact median. A gene whose bracket misses (or
whose sample is too small to bracket) collects all its values instead, so the result is
always exactly ``np.median``; only the memory and time depend on the sample.
"""

from __future__ import annotations

import math

import numpy as np

from ._kernels import _kernel


@_kernel()
def _row_total(indptr, data, i):
    t = 0.0
    for j in range(indptr[i], indptr[i + 1]):
        t += np.float64(data[j])
    return t


@_kernel()
def sample_brackets(indptr, indices, data, col_ok, target_sum, totals, z, min_sample, lo, hi):
    """Per usable column, ``lo``/``hi`` around its median from the sample rows given as CSR
    (``totals[i]``: row ``i``'s denominator, NaN: the float64 sum of its stored values): the
    sample's order statistics ``z`` binomial standard deviations below and above its middle.
    Columns with fewer than ``min_sample`` sample values get ``(-inf, inf)``.
    """
    n_vars = lo.shape[0]
    starts = np.zeros(n_vars + 1, np.int64)
    n_rows = indptr.shape[0] - 1
    for j in range(indptr[n_rows]):
        d = data[j]
        if d > 0 and math.isfinite(d) and col_ok[indices[j]]:
            starts[indices[j] + 1] += 1
    for c in range(n_vars):
        starts[c + 1] += starts[c]
    cursor = starts[:-1].copy()
    values = np.empty(starts[n_vars], np.float64)
    for i in range(n_rows):
        t = totals[i]
        if t != t:
            t = _row_total(indptr, data, i)
        for j in range(indptr[i], indptr[i + 1]):
            d = data[j]
            c = indices[j]
            if d > 0 and math.isfinite(d) and col_ok[c]:
                values[cursor[c]] = np.float64(d) / t * target_sum
                cursor[c] += 1
    for c in range(n_vars):
        lo[c] = -np.inf
        hi[c] = np.inf
        m = starts[c + 1] - starts[c]
        if m < min_sample:
            continue
        seg = values[starts[c] : starts[c + 1]]
        half = 0.5 * z * math.sqrt(m)
        a = math.floor(0.5 * m - half) - 1
        b = math.ceil(0.5 * m + half)
        if a >= 0:
            lo[c] = np.partition(seg, a)[a]
        if b < m:
            hi[c] = np.partition(seg, b)[b]


# Inside/outside is a coin flip near the middle, so the two passes below count and write
# without branching on it (a mispredicted branch per value cost four times the pass).


@_kernel()
def bracket_counts(indptr, indices, data, col_ok, r0, r1, target_sum, totals, lo, hi, counts,
                   below, inside):  # fmt: skip
    """Rows ``r0:r1``: per usable column, its nonzero values (``counts``), those under
    ``lo`` (``below``) and those in ``[lo, hi]`` (``inside``), each value scaled to
    ``target_sum / totals[i]``; a NaN total becomes the row's float64 sum (written back).
    Returns (all finite, all non-negative) of the stored values.
    """
    finite = True
    non_negative = True
    for i in range(r0, r1):
        t = totals[i]
        if t != t:
            t = _row_total(indptr, data, i)
            totals[i] = t
        for j in range(indptr[i], indptr[i + 1]):
            d = data[j]
            c = indices[j]
            finite &= math.isfinite(d)
            non_negative &= not d < 0
            ok = (d > 0) & col_ok[c]
            v = np.float64(d) / t * target_sum
            counts[c] += ok
            below[c] += ok & (v < lo[c])
            inside[c] += ok & (v >= lo[c]) & (v <= hi[c])
    return finite, non_negative


@_kernel()
def collect_bracket(indptr, indices, data, col_ok, r0, r1, target_sum, totals, lo, hi, cursor,
                    out, spare):  # fmt: skip
    """Each usable value of rows ``r0:r1`` in its column's ``[lo, hi]``, scaled as in
    :func:`bracket_counts`, written at the column's ``cursor`` (advanced); the others are
    written to ``out[spare]``, a slot of this caller's own.
    """
    for i in range(r0, r1):
        t = totals[i]
        for j in range(indptr[i], indptr[i + 1]):
            d = data[j]
            c = indices[j]
            v = np.float64(d) / t * target_sum
            keep = np.int64((d > 0) & col_ok[c] & (v >= lo[c]) & (v <= hi[c]))
            out[keep * cursor[c] + (1 - keep) * spare] = v
            cursor[c] += keep


@_kernel()
def bracket_medians(counts, below, starts, groups, c0, c1, out):
    """``np.median`` of columns ``c0:c1`` (NaN where empty) from their collected values
    ``groups[starts[c]:starts[c + 1]]``, which hold both middle ranks, ``below[c]`` values
    lying under them.
    """
    for c in range(c0, c1):
        n = counts[c]
        if n == 0:
            out[c] = np.nan
            continue
        k = n // 2 - below[c]
        part = np.partition(groups[starts[c] : starts[c + 1]], k)
        upper = part[k]
        if n % 2:
            out[c] = upper
        else:  # numpy: the mean of the two middle values; the lower is the largest before k
            out[c] = (part[:k].max() + upper) / 2.0
