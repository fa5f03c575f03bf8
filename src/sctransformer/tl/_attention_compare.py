"""Sparse networks from dense gene × gene weights, and the condition comparison of
``sct.tl.attention_grn`` (group sizes, permuted labels, the difference table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _sparsify(weights, counts, sel, n_vars, *, top_k, threshold, min_cells):
    """Top-k targets per source gene after thresholding, as CSR in var coordinates."""
    g = len(sel)
    ok = (counts >= max(min_cells, 1)) & ~np.eye(g, dtype=bool) & np.isfinite(weights)
    if threshold is not None:
        ok &= weights >= threshold
    k = g if top_k is None else min(top_k, g)
    score = np.where(ok, weights, -np.inf)
    if k < g:
        cols = np.argpartition(-score, k - 1, axis=1)[:, :k]
    else:
        cols = np.broadcast_to(np.arange(g), (g, g))
    rows = np.repeat(np.arange(g), k)
    cols = np.asarray(cols).ravel()
    keep = ok[rows, cols]
    r, c = rows[keep], cols[keep]
    w = weights[r, c].astype(np.float32)
    n = counts[r, c].astype(np.int64)
    shape = (n_vars, n_vars)
    mat = sp.csr_matrix((w, (sel[r], sel[c])), shape=shape)
    cnt = sp.csr_matrix((n, (sel[r], sel[c])), shape=shape)
    mat.sort_indices()
    cnt.sort_indices()
    return mat, cnt, pd.DataFrame({"source": r, "target": c, "weight": w, "n_cells": n})


def _check_group_sizes(codes, group_names, groupby) -> None:
    if not group_names:
        return
    sizes = np.bincount(codes, minlength=len(group_names))
    small = [g for g, n in zip(group_names, sizes, strict=True) if n < 2]
    if small:
        raise ValueError(
            f"obs[{groupby!r}] has groups with a single cell: {small[:10]}; a network needs at "
            "least 2 cells per group: merge those cells into another group or drop them"
        )


def _compare_labels(codes, group_names, groupby, compare, n_permutations):
    """0 / 1 for the cells of the two compared groups, -1 elsewhere (``None`` without compare)."""
    if compare is None:
        return None
    if groupby is None:
        raise ValueError("compare needs groupby: the obs column that holds the two groups")
    if isinstance(compare, str) or len(compare) != 2:
        raise ValueError(f"compare must name two groups of obs[{groupby!r}], got {compare!r}")
    a, b = (str(c) for c in compare)
    if a == b:
        raise ValueError(f"compare names the same group twice: {a!r}")
    missing = [c for c in (a, b) if c not in group_names]
    if missing:
        raise ValueError(f"compare groups not in obs[{groupby!r}]: {missing}; have {group_names}")
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int | np.integer):
        raise ValueError(f"n_permutations must be an integer >= 1, got {n_permutations!r}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be an integer >= 1, got {n_permutations!r}")
    labels = np.full(len(codes), -1, dtype=np.int8)
    labels[codes == group_names.index(a)] = 0
    labels[codes == group_names.index(b)] = 1
    return labels


def _compare_table(stats, perm_stats, ia, ib, sym, sel, var_names, n_perm, **opts):
    """Edges kept in either group's network, their difference and its permutation p-value."""
    wa, wb = sym(stats.weights(ia)), sym(stats.weights(ib))
    ca, cb = stats.pair_counts(ia), stats.pair_counts(ib)
    g = len(sel)
    ka = _sparsify(wa, ca, np.arange(g), g, **opts)[0]
    kb = _sparsify(wb, cb, np.arange(g), g, **opts)[0]
    union = (ka != 0).maximum(kb != 0).tocoo()
    r, c = union.row, union.col
    both = (ca[r, c] >= opts["min_cells"]) & (cb[r, c] >= opts["min_cells"])
    r, c = r[both], c[both]
    observed = wa[r, c] - wb[r, c]

    def diffs():
        for p in range(n_perm):
            yield sym(perm_stats.weights(2 * p))[r, c] - sym(perm_stats.weights(2 * p + 1))[r, c]

    pvalue = permutation_test(observed, diffs())
    table = pd.DataFrame(
        {
            "source": var_names[sel[r]].astype(str),
            "target": var_names[sel[c]].astype(str),
            "weight_a": wa[r, c].astype(np.float32),
            "weight_b": wb[r, c].astype(np.float32),
            "difference": observed.astype(np.float32),
            "n_cells_a": ca[r, c].astype(np.int64),
            "n_cells_b": cb[r, c].astype(np.int64),
            "pvalue": pvalue,
            "fdr": bh_fdr(pvalue),
        }
    )
    order = np.lexsort((-np.abs(table["difference"].to_numpy()), table["pvalue"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def bh_fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values."""
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


def permutation_test(observed: np.ndarray, perm_diffs) -> np.ndarray:
    """Two-sided permutation p-values ``(1 + #{|d_perm| ≥ |d|}) / (1 + n)`` per entry.

    ``perm_diffs`` yields one difference matrix per permutation (NaN where a permuted group
    lacks the pair; such a permutation counts as exceeding, which keeps the test conservative).
    """
    exceed = np.zeros(observed.shape, dtype=np.int64)
    n = 0
    target = np.abs(observed)
    for d in perm_diffs:
        d = np.nan_to_num(np.abs(d), nan=np.inf)
        exceed += d >= target - 1e-9 * np.maximum(target, 1e-3)
        n += 1
    return (1 + exceed) / (1 + n)
