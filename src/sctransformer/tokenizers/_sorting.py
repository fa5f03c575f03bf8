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

_EMPTY = np.uint64(np.iinfo(np.uint64).max)
_LOW32 = np.uint32(0xFFFFFFFF)
_LOW = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_LITTLE = np.little_endian  # the high word of a uint64 is its second uint32


@dataclass
class Ranked:
    """Each row's usable elements in order, padded to a common width.

    ``pos[i, t]`` is the position (within CSR row ``i``) of the element ranked ``t``; -1 past
    ``lengths[i]``, the number of usable elements of the row.
    """

    pos: np.ndarray  # (n, W) int64
    lengths: np.ndarray  # (n,) int64


def row_ids(indptr: np.ndarray) -> np.ndarray:
    """Row index of each stored element of a CSR matrix."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def row_totals(csr) -> np.ndarray:
    """Per-row sums in float64 whatever the stored dtype (float32 sums drift)."""
    rows = row_ids(csr.indptr)
    return np.bincount(rows, weights=csr.data, minlength=csr.shape[0]).astype(np.float64)


def _sorted_keys(indptr, rows, offset, hi, usable, width):
    """Row-wise sorted (hi << 32 | offset) keys; unusable elements sort last as EMPTY."""
    keys = (hi.astype(np.uint64) << _SHIFT) | offset
    if usable is not None:
        keys[~usable] = _EMPTY
    n = len(indptr) - 1
    padded = np.full((n, width), _EMPTY, dtype=np.uint64)
    padded[rows, offset] = keys
    padded.sort(axis=1)
    return padded


def _positions(keys: np.ndarray, lengths: np.ndarray, k: int | None) -> np.ndarray:
    keys = keys if k is None else keys[:, :k]
    pos = (keys & _LOW).astype(np.int64)
    pos[np.arange(keys.shape[1])[None, :] >= lengths[:, None]] = -1
    return pos


def _layout(indptr: np.ndarray, usable: np.ndarray | None):
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(len(counts)), counts)
    offset = (np.arange(len(rows), dtype=np.int64) - indptr[rows]).astype(np.uint64)
    lengths = counts.astype(np.int64)
    if usable is not None:
        lengths = lengths - np.bincount(rows[~usable], minlength=len(counts))
    width = int(counts.max()) if len(counts) else 0
    return rows, offset, lengths, width


def float32_exact(x: np.ndarray) -> bool:
    """Whether every value survives a round trip through float32 (e.g. counts < 2**24)."""
    if x.dtype in (np.float32, np.float16, np.int8, np.uint8, np.int16, np.uint16):
        return True
    return bool(np.array_equal(x.astype(np.float32), x))


def descending_order(
    indptr: np.ndarray,
    score: np.ndarray,
    usable: np.ndarray | None = None,
    k: int | None = None,
    *,
    exact32: bool = False,
) -> Ranked:
    """Order each row's usable elements by ``score`` descending, ties by position.

    Equals a stable float64 argsort of every row; only the first ``k`` ranks are returned
    (all when ``None``). ``score`` must be non-negative; ``exact32`` promises that float32
    holds every score exactly, which skips the rounding check.
    """
    rows, offset, lengths, width = _layout(indptr, usable)
    bits = score.astype(np.float32).view(np.uint32)
    keys = _sorted_keys(indptr, rows, offset, _LOW32 - bits, usable, width)
    pos = _positions(keys, lengths, k)
    if exact32 or not keys.size:
        return Ranked(pos=pos, lengths=lengths)
    # float32 rounding can merge distinct float64 scores into one key: where two neighbours
    # share a key image, compare their float64 scores and redo the rare out-of-order rows
    score = np.asarray(score, dtype=np.float64)
    hi = keys.view(np.uint32)[:, 1::2] if _LITTLE else (keys >> _SHIFT)
    hi = hi[:, : width if k is None else min(width, k + 1)]
    tie = hi[:, 1:] == hi[:, :-1]
    tie &= np.arange(1, hi.shape[1])[None, :] < lengths[:, None]
    if tie.any():
        r, t = np.nonzero(tie)
        first = indptr[r] + (keys[r, t] & _LOW).astype(np.int64)
        second = indptr[r] + (keys[r, t + 1] & _LOW).astype(np.int64)
        for i in np.unique(r[score[first] < score[second]]):
            start, stop = indptr[i], indptr[i + 1]
            ok = np.arange(stop - start) if usable is None else np.flatnonzero(usable[start:stop])
            exact = ok[np.argsort(-score[start:stop][ok], kind="stable")]
            m = pos.shape[1]
            pos[i, : min(m, len(exact))] = exact[:m]
    return Ranked(pos=pos, lengths=lengths)


def hashed_order(
    indptr: np.ndarray, u: np.ndarray, usable: np.ndarray | None = None, k: int | None = None
) -> np.ndarray:
    """Positions of each row's usable elements ordered by a uniform hash ``u`` (a seeded
    shuffle), first ``k`` only; -1 padded."""
    rows, offset, lengths, width = _layout(indptr, usable)
    hi = (u * 2.0**32).astype(np.uint32)
    keys = _sorted_keys(indptr, rows, offset, hi, usable, width)
    return _positions(keys, lengths, k)


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
