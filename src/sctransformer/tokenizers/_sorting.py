"""Per-row helpers shared by the encodings: float64 row totals and a seeded per-cell hash."""

from __future__ import annotations

import numpy as np


def row_totals(csr) -> np.ndarray:
    """Per-row sums in float64 whatever the stored dtype (float32 sums drift)."""
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    return np.bincount(rows, weights=csr.data, minlength=csr.shape[0]).astype(np.float64)


def uniform_hash(seed: int, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Deterministic uniform numbers in [0, 1) from (seed, cell index, token id).

    splitmix64 of a combined 64-bit word, so a cell's numbers do not depend on chunking,
    threads or which other cells are present. The kernels compute the same numbers per cell.
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
