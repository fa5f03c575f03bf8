"""Vectorised per-row ordering of sparse rows: the workhorse shared by every encoding.

A chunk of cells is laid out as a padded (cells × longest row) matrix of 64-bit sort keys and
sorted row-wise in one call (numpy sorts 64-bit integers with SIMD kernels and releases the GIL,
so threads use every core). The key puts a float32 image of the score in the high 32 bits and
the element's position in its row in the low 32 bits: one integer sort gives "descending score,
ties in var order". float32 rounding can only merge nearly equal float64 scores into a tie;
those rare rows are detected and re-sorted exactly, so the result equals a stable float64
argsort of every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

_EMPTY = np.uint64(np.iinfo(np.uint64).max)
_LOW = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


@dataclass
class PaddedRows:
    """Elements of CSR rows laid out row-wise, padded to the longest row.

    ``pos[i, t]`` is the position (within the CSR row) of the element ranked ``t`` in row ``i``
    (-1 past ``lengths[i]``); ``score`` holds its float64 score.
    """

    pos: np.ndarray  # (n, W) int64
    score: np.ndarray  # (n, W) float64, NaN where padding
    lengths: np.ndarray  # (n,) int64


def row_ids(indptr: np.ndarray) -> np.ndarray:
    """Row index of each stored element of a CSR matrix."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def keep_elements(csr: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The CSR matrix restricted to stored elements where ``keep`` is True (same shape)."""
    rows = row_ids(csr.indptr)
    counts = np.bincount(rows[keep], minlength=csr.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((csr.data[keep], csr.indices[keep], indptr), shape=csr.shape)


def _pad(indptr: np.ndarray, values: np.ndarray, fill) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(indptr) - 1
    lengths = np.diff(indptr).astype(np.int64)
    width = int(lengths.max()) if n else 0
    rows = row_ids(indptr)
    offset = np.arange(len(values)) - indptr[rows]
    out = np.full((n, width), fill, dtype=values.dtype)
    out[rows, offset] = values
    return out, lengths, offset


def descending_order(indptr: np.ndarray, score: np.ndarray) -> PaddedRows:
    """Order each row's elements by ``score`` descending, ties by position (a stable sort)."""
    score = np.ascontiguousarray(score, dtype=np.float64)
    if np.any(score < 0):
        raise ValueError("scores must be non-negative")
    hi = _LOW - score.astype(np.float32).view(np.uint32).astype(np.uint64)
    n = len(indptr) - 1
    offset = np.arange(len(score)) - indptr[row_ids(indptr)]
    keys, lengths, _ = _pad(indptr, (hi << _SHIFT) | offset.astype(np.uint64), _EMPTY)
    keys.sort(axis=1)
    valid = keys != _EMPTY
    pos = np.where(valid, (keys & _LOW).astype(np.int64), -1)
    padded_score, _, _ = _pad(indptr, score, np.nan)
    ranked = np.take_along_axis(padded_score, np.maximum(pos, 0), axis=1)
    ranked[~valid] = np.nan
    # rows where float32 rounding merged two different float64 scores: redo those exactly
    bad = np.flatnonzero(np.any(ranked[:, 1:] > ranked[:, :-1], axis=1)) if n else []
    for i in bad:
        k = lengths[i]
        order = np.argsort(-padded_score[i, :k], kind="stable")
        pos[i, :k] = order
        ranked[i, :k] = padded_score[i, order]
    return PaddedRows(pos=pos, score=ranked, lengths=lengths)


def hashed_order(indptr: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Positions of each row's elements ordered by a uniform hash ``u`` (a seeded shuffle)."""
    hi = (u * 2.0**32).astype(np.uint64)
    offset = np.arange(len(u)) - indptr[row_ids(indptr)]
    keys, _, _ = _pad(indptr, (hi << _SHIFT) | offset.astype(np.uint64), _EMPTY)
    keys.sort(axis=1)
    return np.where(keys != _EMPTY, (keys & _LOW).astype(np.int64), -1)


def uniform_hash(seed: int, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Deterministic uniform numbers in [0, 1) from (seed, cell index, token id).

    splitmix64 of a combined 64-bit word, so a cell's numbers do not depend on chunking,
    threads or which other cells are present.
    """
    with np.errstate(over="ignore"):
        z = (
            np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0xD1B54A32D192ED03)
            + rows.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            + keys.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
