"""Value bins: scBERT's equal-width bins and scGPT's per-cell quantile bins, vectorised."""

from __future__ import annotations

import numpy as np


def equal_width_bins(values: np.ndarray, *, n_bins: int, bin_width: float) -> np.ndarray:
    """``floor(value / bin_width)`` clipped to the top bin ``n_bins - 1`` (scBERT)."""
    return np.minimum(np.floor(values / bin_width), n_bins - 1)


def quantile_edges(ascending: np.ndarray, lengths: np.ndarray, n_edges: int) -> np.ndarray:
    """``np.quantile(row[:length], np.linspace(0, 1, n_edges))`` for every row at once.

    Follows numpy's default ("linear") method operation by operation, so edges are bitwise
    equal to numpy's; rows must be sorted ascending. Returns (n, n_edges) float64.
    """
    q = np.linspace(0, 1, n_edges)
    n = lengths.astype(np.float64)[:, None]
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = n.repeat(n_edges, axis=1)[above] - 1
    nxt[above] = prev[above]
    gamma = virtual - np.floor(virtual)
    gamma[above] = 0.0
    a = np.take_along_axis(ascending, prev.astype(np.int64), axis=1)
    b = np.take_along_axis(ascending, nxt.astype(np.int64), axis=1)
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def _search(ascending: np.ndarray, lengths: np.ndarray, edges: np.ndarray, *, right: bool):
    """Batched binary search: per row and edge, how many values are < (or <=) the edge."""
    n, k = edges.shape
    lo = np.zeros((n, k), dtype=np.int64)
    hi = np.repeat(lengths[:, None], k, axis=1).astype(np.int64)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        v = np.take_along_axis(ascending, np.minimum(mid, ascending.shape[1] - 1), axis=1)
        go_right = (v <= edges) if right else (v < edges)
        lo = np.where(active & go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)


def _count_at_or_above(thresholds: np.ndarray, width: int) -> np.ndarray:
    """For each row and position j, how many thresholds are <= j."""
    n = thresholds.shape[0]
    flat = (np.arange(n)[:, None] * (width + 1) + thresholds).ravel()
    hist = np.bincount(flat, minlength=n * (width + 1)).reshape(n, width + 1)
    return np.cumsum(hist, axis=1)[:, :width]


def quantile_bins(
    ascending: np.ndarray, lengths: np.ndarray, *, n_bins: int, u: np.ndarray
) -> np.ndarray:
    """scGPT's adaptive bins of each row's (positive) values, ascending layout.

    Edges are the row's quantiles at ``linspace(0, 1, n_bins - 1)``. A value's bin lies between
    its left digit (edges <= value) and its right digit (edges < value); where they differ
    (the value sits on tied edges) ``u`` spreads values between them:
    ``ceil(u * (right - left) + left)``, scGPT's rule with a seeded ``u``. Bins run from 1 to
    ``n_bins - 1``; positions past a row's length return 0.
    """
    n, width = ascending.shape
    if n == 0 or width == 0:
        return np.zeros((n, width), dtype=np.int64)
    edges = quantile_edges(ascending, np.maximum(lengths, 1), n_bins - 1)
    left = _count_at_or_above(_search(ascending, lengths, edges, right=False), width)
    right = _count_at_or_above(_search(ascending, lengths, edges, right=True), width)
    digits = np.ceil(u * (right - left) + left).astype(np.int64)
    digits[np.arange(width)[None, :] >= lengths[:, None]] = 0
    return digits
