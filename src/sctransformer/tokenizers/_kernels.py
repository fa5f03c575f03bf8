"""Compiled per-cell kernels behind every encoding.

One loop per cell does what would otherwise be a dozen whole-array passes: pick the cell's
usable genes, order them, bin them and write its padded row. The kernels are numba functions
that release the GIL, so blocks of rows run in ordinary threads (numba's own threading layer is
not used, which keeps them safe to call from any thread).

Ordering is a stable LSD radix sort on the top 16 significant bits of the complemented float32
image of the score, followed by an exact float64 repair of runs whose keys are equal. The result is the stable float64
argsort of ``-score``: descending, ties in var order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

RANK, BIN, ADAPTIVE, VALUE, SENTENCE = 0, 1, 2, 3, 4
MODES = {"rank": RANK, "bin": BIN, "adaptive_bin": ADAPTIVE, "value": VALUE, "sentence": SENTENCE}

# splitmix64 of seed * _C_SEED + cell * _C_ROW + token id * _C_KEY: a cell's numbers do not
# depend on chunking, threads or which other cells are present
_C_SEED = np.uint64(0xD1B54A32D192ED03)
_C_ROW = np.uint64(0x9E3779B97F4A7C15)
_C_KEY = np.uint64(0xC2B2AE3D27D4EB4F)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TOP32 = np.uint32(0xFFFFFFFF)
_SHORT_RUN = 32  # runs of equal keys up to this long are repaired by insertion


def _kernel(**options):
    """``njit`` releasing the GIL, cached on disk where numba finds a writable cache folder
    (set ``NUMBA_CACHE_DIR`` for read-only installs); compiled per process otherwise.
    """

    def wrap(fn):
        try:
            return njit(nogil=True, cache=True, **options)(fn)
        except RuntimeError:  # no cache locator: the package folder and home are read-only
            return njit(nogil=True, **options)(fn)

    return wrap


def seed_word(seed: int) -> np.uint64:
    """The seed's share of every hash word (computed once per call)."""
    with np.errstate(over="ignore"):
        return np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _C_SEED


@_kernel(inline="always")
def uniform(seed_mix, row, key):
    """Deterministic uniform number in [0, 1) for (seed, cell index, token id);
    ``seed_mix = seed_word(seed)``.
    """
    z = seed_mix + np.uint64(row) * _C_ROW + np.uint64(key) * _C_KEY
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    z = z ^ (z >> _S31)
    return np.float64(z >> _S11) * 1.1102230246251565e-16  # 2**-53


@_kernel()
def scan_rows(indptr, indices, data, col_ok, n_ok, include_zeros, r0, r1, totals, n_usable,
              counts):  # fmt: skip
    """Rows ``r0:r1``: float64 totals over all stored values (where ``totals`` is NaN) and the
    usable genes per row, and (when ``counts`` is not empty) each usable column's nonzero
    values added to ``counts``. Returns (all finite, all non-negative, all integer, max value)
    of the stored values.
    """
    finite = True
    non_negative = True
    integer = True
    vmax = 0.0
    per_column = counts.shape[0] > 0
    for i in range(r0, r1):
        t = 0.0
        cnt = 0
        for j in range(indptr[i], indptr[i + 1]):
            d = np.float64(data[j])
            t += d
            if not math.isfinite(d):
                finite = False
            elif d < 0:
                non_negative = False
            elif d != math.floor(d):
                integer = False
            if d > vmax:
                vmax = d
            if d != 0 and col_ok[indices[j]]:
                cnt += 1
                if per_column:
                    counts[indices[j]] += 1
        if totals[i] != totals[i]:  # NaN: not given by the caller
            totals[i] = t
        n_usable[i] = 0 if totals[i] == 0 else (n_ok if include_zeros else cnt)
    return finite, non_negative, integer, vmax


@_kernel()
def normalised(indptr, data, totals, r0, r1, normalize, target_sum, out):
    """Stored values of rows ``r0:r1`` scaled to ``target_sum`` per cell (or as they are)."""
    base = indptr[r0]
    for i in range(r0, r1):
        for j in range(indptr[i], indptr[i + 1]):
            d = np.float64(data[j])
            out[j - base] = d / totals[i] * target_sum if normalize else d


@_kernel()
def _radix_sort(keys, idx, tmp_keys, tmp_idx, m, hist, n_bytes):
    """Stable ascending sort of ``keys[:m]`` (uint32 below ``2 ** (8 * n_bytes)``) carrying
    ``idx``; returns the buffers that hold the result (the inputs or the temporaries).
    """
    hist[:n_bytes, :] = 0
    for e in range(m):
        k = np.int64(keys[e])
        for p in range(n_bytes):
            hist[p, (k >> (8 * p)) & 255] += 1
    src_k, src_i, dst_k, dst_i = keys, idx, tmp_keys, tmp_idx
    for p in range(n_bytes):
        shift = 8 * p
        if m == 0 or hist[p, (np.int64(src_k[0]) >> shift) & 255] == m:
            continue  # one bucket holds every key: this digit leaves the order as it is
        s = 0
        for bucket in range(256):
            c = hist[p, bucket]
            hist[p, bucket] = s
            s += c
        for e in range(m):
            k = src_k[e]
            bucket = (np.int64(k) >> shift) & 255
            d = hist[p, bucket]
            hist[p, bucket] = d + 1
            dst_k[d] = k
            dst_i[d] = src_i[e]
        src_k, src_i, dst_k, dst_i = dst_k, dst_i, src_k, src_i
    return src_k, src_i


@_kernel()
def _repair_ties(sorted_keys, order, val, m, run_val):
    """Within runs of equal keys, put elements in descending float64 ``val`` order,
    keeping var order among exact ties (the run arrives in var order: the sort is stable).
    """
    t = 0
    while t < m - 1:
        if sorted_keys[t + 1] != sorted_keys[t]:
            t += 1
            continue
        u = t + 1
        while u + 1 < m and sorted_keys[u + 1] == sorted_keys[t]:
            u += 1
        in_order = True
        for z in range(t, u):
            if val[order[z]] < val[order[z + 1]]:
                in_order = False
                break
        if not in_order:
            length = u - t + 1
            if length <= _SHORT_RUN:
                for z in range(t + 1, u + 1):
                    e = order[z]
                    y = z - 1
                    while y >= t and val[order[y]] < val[e]:
                        order[y + 1] = order[y]
                        y -= 1
                    order[y + 1] = e
            else:
                for z in range(length):
                    run_val[z] = -val[order[t + z]]
                perm = np.argsort(run_val[:length], kind="mergesort")
                seg = order[t : u + 1].copy()
                for z in range(length):
                    order[t + z] = seg[perm[z]]
        t = u + 1


@_kernel()
def _adaptive_bins(order, val, cols, m, gene_ids, row, seed_mix, qs, edges, lt, le, h_lt, h_le,
                   out):  # fmt: skip
    """ScGPT bins of a cell's elements (``order``: descending ``val``), 0 for zeros.

    Edges are ``np.quantile(nonzero, qs)`` by numpy's linear method, operation for operation;
    a value's bin lies between its digits with edges <= value and edges < value, and ties
    between them are spread by ``ceil(u * (right - left) + left)`` with the seeded hash ``u``.
    """
    nz = 0
    while nz < m and val[order[nz]] > 0:
        nz += 1
    for e in range(m):
        out[e] = 0.0
    if nz == 0:
        return
    n_edges = qs.shape[0]
    nn = np.float64(nz)
    last = nz - 1
    for q in range(n_edges):
        virtual = (nn - 1.0) * qs[q]
        if virtual >= nn - 1.0:
            prev = nz - 1
            nxt = prev
            gamma = 0.0
        else:
            prev = np.int64(math.floor(virtual))
            nxt = prev + 1
            gamma = virtual - math.floor(virtual)
        lo_v = val[order[last - prev]]
        hi_v = val[order[last - nxt]]
        diff = hi_v - lo_v
        edges[q] = hi_v - diff * (1.0 - gamma) if gamma >= 0.5 else lo_v + diff * gamma
    for q in range(n_edges):
        edge = edges[q]
        lo, hi = 0, nz
        while lo < hi:  # ascending values below the edge
            mid = (lo + hi) // 2
            if val[order[last - mid]] < edge:
                lo = mid + 1
            else:
                hi = mid
        lt[q] = lo
        lo, hi = 0, nz
        while lo < hi:  # ascending values at or below the edge
            mid = (lo + hi) // 2
            if val[order[last - mid]] <= edge:
                lo = mid + 1
            else:
                hi = mid
        le[q] = lo
    h_lt[: nz + 1] = 0
    h_le[: nz + 1] = 0
    for q in range(n_edges):
        h_lt[lt[q]] += 1
        h_le[le[q]] += 1
    left = 0
    right = 0
    for t in range(nz):
        left += h_lt[t]  # edges <= the t-th smallest value
        right += h_le[t]  # edges < it
        e = order[last - t]
        u = uniform(seed_mix, row, gene_ids[cols[e]])
        out[e] = math.ceil(u * (right - left) + left)


@_kernel()
def encode_rows(r0, r1, indptr, indices, data, x, x_base, totals, gene_ids, col_ok, ok_cols, medians,
                mode, normalize, target_sum, k, select_hash, include_zeros, n_bins, bin_width,
                qs, seed_mix, row_start, prefix, cls_id, eos_id, pad_id, pad_value,
                tokens, values, n_tok):  # fmt: skip
    """Write rows ``r0:r1`` of ``tokens``/``values``/``n_tok`` (already sized to the width).

    ``x[j - x_base]`` is stored element ``j``'s value for the log-space methods; ``rank``
    computes its score here. ``k < 0`` keeps every gene. ``ok_cols`` lists the usable columns (the elements
    of every row under ``include_zeros``).
    """
    cap = 0
    for i in range(r0, r1):
        cap = max(cap, indptr[i + 1] - indptr[i])
    if include_zeros:
        cap = ok_cols.shape[0]
    cols = np.empty(cap, np.int64)
    val = np.empty(cap, np.float64)
    img = np.empty(cap, np.float32)
    keys = np.empty(cap, np.uint32)
    idx = np.empty(cap, np.int64)
    tmp_keys = np.empty(cap, np.uint32)
    tmp_idx = np.empty(cap, np.int64)
    run_val = np.empty(cap, np.float64)
    binned = np.empty(cap, np.float64)
    chosen = np.zeros(cap, np.bool_)
    hist = np.empty((4, 256), np.int64)
    n_edges = qs.shape[0]
    edges = np.empty(n_edges, np.float64)
    lt = np.empty(n_edges, np.int64)
    le = np.empty(n_edges, np.int64)
    h_lt = np.empty(cap + 1, np.int64)
    h_le = np.empty(cap + 1, np.int64)
    specials = mode != SENTENCE
    n_pre = prefix.shape[1]
    bits = img.view(np.uint32)

    for i in range(r0, r1):
        a, b = indptr[i], indptr[i + 1]
        tot = totals[i]
        row = row_start + i
        # the cell's usable elements, in var order
        m = 0
        if tot != 0:
            if include_zeros:
                j = a
                for col in ok_cols:
                    while j < b and indices[j] < col:
                        j += 1
                    v = 0.0
                    if j < b and indices[j] == col:
                        v = x[j - x_base]
                    cols[m] = col
                    val[m] = v
                    m += 1
            else:
                for j in range(a, b):
                    col = indices[j]
                    if data[j] != 0 and col_ok[col]:
                        if mode == RANK:
                            d = np.float64(data[j])
                            v = (d / tot * target_sum if normalize else d) / medians[col]
                        else:
                            v = x[j - x_base]
                        cols[m] = col
                        val[m] = v
                        m += 1
        kk = m if k < 0 else min(k, m)

        need_order = mode == RANK or mode == SENTENCE or mode == ADAPTIVE
        need_order = need_order or (kk < m and not select_hash)
        order = idx
        if need_order and m > 0:
            for e in range(m):
                img[e] = val[e]
            lo_key = np.int64(0xFFFFFFFF)
            hi_key = np.int64(0)
            for e in range(m):
                key = np.int64(_TOP32 - bits[e])  # complement: descending score sorts first
                lo_key = min(lo_key, key)
                hi_key = max(hi_key, key)
                keys[e] = key
            # two 8-bit passes on the top 16 significant bits of the row's key range: the
            # order is still monotone in the score, and the repair below settles the rest
            shift = 0
            while ((hi_key - lo_key) >> shift) >= 65536:
                shift += 1
            for e in range(m):
                keys[e] = (np.int64(keys[e]) - lo_key) >> shift
                idx[e] = e
            sorted_keys, order = _radix_sort(keys, idx, tmp_keys, tmp_idx, m, hist, 2)
            _repair_ties(sorted_keys, order, val, m, run_val)
        if mode == ADAPTIVE:
            _adaptive_bins(order, val, cols, m, gene_ids, row, seed_mix, qs, edges, lt, le,
                           h_lt, h_le, binned)  # fmt: skip

        trow = tokens[i]
        vrow = values[i]
        c = 0
        if specials:
            if cls_id >= 0:
                trow[c] = cls_id
                vrow[c] = pad_value
                c += 1
            for p in range(n_pre):
                trow[c] = prefix[i, p]
                vrow[c] = pad_value
                c += 1
        if mode == RANK or mode == SENTENCE:
            for t in range(kk):  # in rank order
                e = order[t]
                trow[c] = cols[e] if mode == SENTENCE else gene_ids[cols[e]]
                vrow[c] = val[e] if mode == RANK else 0.0
                c += 1
        else:  # the kept genes in var order
            if kk < m:
                if select_hash:  # a seeded sample: ascending hash, ties in var order
                    for e in range(m):
                        u = uniform(seed_mix, row, gene_ids[cols[e]])
                        keys[e] = np.uint32(np.int64(u * 4294967296.0))
                        tmp_idx[e] = e
                    _, pick = _radix_sort(keys, tmp_idx, tmp_keys, idx, m, hist, 4)
                else:
                    pick = order
                for e in range(m):
                    chosen[e] = False
                for t in range(kk):
                    chosen[pick[t]] = True
            for e in range(m):
                if kk < m and not chosen[e]:
                    continue
                trow[c] = gene_ids[cols[e]]
                if mode == BIN:
                    vrow[c] = min(math.floor(val[e] / bin_width), n_bins - 1)
                elif mode == ADAPTIVE:
                    vrow[c] = binned[e]
                else:
                    vrow[c] = val[e]
                c += 1
        if specials and eos_id >= 0:
            trow[c] = eos_id
            vrow[c] = pad_value
            c += 1
        n_tok[i] = c
        trow[c:] = pad_id
        vrow[c:] = pad_value
