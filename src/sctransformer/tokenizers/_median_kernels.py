"""Compiled kernels behind exact per-gene medians of normalised values (``rank`` without given
medians).

The k-th smallest float64 value has, as float32 image, the k-th smallest image (rounding is
monotone), so selection runs on 4-byte images: the row scan shared with encoding
(``_kernels.scan_rows``) counts each gene's values and the cell totals, one pass scatters
their images into per-gene segments, a radix selection finds the middle images, and a last
pass collects the float64 values whose image is a selected one and picks the exact one among
them.
"""

from __future__ import annotations

import numpy as np

from ._kernels import _kernel

_RADIX_BUCKETS = 2048


@_kernel()
def scatter_images(indptr, indices, data, col_ok, r0, r1, target_sum, totals, cursor, out):
    """The float32 image of each usable nonzero value of rows ``r0:r1`` scaled to
    ``target_sum / totals[i]``, written at its column's ``cursor``.
    """
    for i in range(r0, r1):
        t = totals[i]
        for j in range(indptr[i], indptr[i + 1]):
            c = indices[j]
            if data[j] > 0 and col_ok[c]:
                out[cursor[c]] = np.float32(np.float64(data[j]) / t * target_sum)
                cursor[c] += 1


@_kernel()
def _kth_bits(bits, lo, hi, k, hist, buf):
    """The ``k``-th smallest (0-based) of the uint32 words ``bits[lo:hi]`` (radix select)."""
    src = bits[lo:hi]  # the candidates: first the segment, then the ones left in buf
    n = hi - lo
    kmin = src[0]
    kmax = src[0]
    for e in range(1, n):
        b = src[e]
        if b < kmin:
            kmin = b
        elif b > kmax:
            kmax = b
    while kmin != kmax:
        span = np.int64(kmax) - np.int64(kmin)
        shift = 0
        while (span >> shift) >= _RADIX_BUCKETS:
            shift += 1
        width = (span >> shift) + 1
        hist[:width] = 0
        base = np.int64(kmin)
        for e in range(n):
            hist[(np.int64(src[e]) - base) >> shift] += 1
        bucket = 0
        while k >= hist[bucket]:
            k -= hist[bucket]
            bucket += 1
        m = 0
        new_min = kmax
        new_max = kmin
        for e in range(n):  # compacts in place when src is buf: m never passes e
            b = src[e]
            if ((np.int64(b) - base) >> shift) == bucket:
                buf[m] = b
                m += 1
                new_min = min(new_min, b)
                new_max = max(new_max, b)
        src = buf[:m]
        n = m
        kmin = new_min
        kmax = new_max
    return kmin


@_kernel()
def select_images(starts, images, c0, c1, target, rank, size):
    """For columns ``c0:c1``: the images of the two middle elements (``target[c, 0]`` lower,
    ``[c, 1]`` upper; equal for odd counts), each one's rank among the values sharing its
    image (``rank``) and how many share it (``size``).
    """
    bits = images.view(np.uint32)
    cap = 1
    for c in range(c0, c1):
        cap = max(cap, starts[c + 1] - starts[c])
    hist = np.empty(_RADIX_BUCKETS, np.int64)
    buf = np.empty(cap, np.uint32)
    for c in range(c0, c1):
        lo, hi = starts[c], starts[c + 1]
        n = hi - lo
        if n == 0:
            size[c, 0] = 0
            size[c, 1] = 0
            continue
        k = n // 2
        up = _kth_bits(bits, lo, hi, k, hist, buf)
        below = 0
        equal = 0
        under = np.uint32(0)
        for e in range(lo, hi):
            b = bits[e]
            if b < up:
                below += 1
                if b > under:
                    under = b
            elif b == up:
                equal += 1
        target[c, 1] = up
        rank[c, 1] = k - below
        size[c, 1] = equal
        kl = k if n % 2 else k - 1
        if kl >= below:  # the lower middle shares the upper's image
            target[c, 0] = up
            rank[c, 0] = kl - below
            size[c, 0] = equal
        else:  # it is the largest image below: rank counted from the top of its group
            eq_under = 0
            for e in range(lo, hi):
                if bits[e] == under:
                    eq_under += 1
            target[c, 0] = under
            rank[c, 0] = eq_under - 1
            size[c, 0] = eq_under


@_kernel()
def collect_hits(indptr, indices, data, col_ok, r0, r1, target_sum, totals, target, slot, value):
    """From row ``r0`` on (before ``r1``), as many whole rows as ``slot`` holds the hits of: each
    float64 value whose float32 image is a column's target image (``target[c, 0]`` lower,
    ``[c, 1]`` upper middle, as float32), its group ``2 * c + s`` in ``slot`` and the value in
    ``value``. A lower target equal to the upper one shares the upper group. Returns (hits,
    the first row not read); ``slot`` must hold the longest row.
    """
    m = 0
    for i in range(r0, r1):
        if m + indptr[i + 1] - indptr[i] > slot.shape[0]:
            return m, i
        t = totals[i]
        for j in range(indptr[i], indptr[i + 1]):
            c = indices[j]
            if data[j] > 0 and col_ok[c]:
                v = np.float64(data[j]) / t * target_sum
                img = np.float32(v)
                if img == target[c, 1]:
                    g = 2 * c + 1
                elif img == target[c, 0]:
                    g = 2 * c
                else:
                    continue
                slot[m] = g
                value[m] = v
                m += 1
    return m, r1


@_kernel()
def place_hits(slot, value, m, gstart, gpos, out):
    """Write ``m`` hits into their groups: group ``g`` from ``gstart[g]`` on (``gpos`` counts)."""
    for e in range(m):
        g = slot[e]
        out[gstart[g] + gpos[g]] = value[e]
        gpos[g] += 1


@_kernel()
def exact_medians(counts, gstart, rank, size, target, groups, out):
    """``np.median`` of each column (NaN where empty) from the float64 values collected
    around its middle (``groups``).
    """
    for c in range(counts.shape[0]):
        n = counts[c]
        if n == 0:
            out[c] = np.nan
            continue
        a = gstart[c, 1]
        upper_group = np.sort(groups[a : a + size[c, 1]])
        upper = upper_group[rank[c, 1]]
        if n % 2:
            out[c] = upper
            continue
        if target[c, 0] == target[c, 1]:
            lower = upper_group[rank[c, 0]]
        else:
            a = gstart[c, 0]
            lower = np.sort(groups[a : a + size[c, 0]])[rank[c, 0]]
        out[c] = (lower + upper) / 2.0  # numpy: the mean of the two middle values
