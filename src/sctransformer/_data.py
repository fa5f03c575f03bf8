"""Read an AnnData's expression in CSR chunks of cells, whatever its storage."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp


def expression_matrix(adata, layer: str | None):
    """The matrix to read: ``X`` or a layer (works on backed AnnData)."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise ValueError(f"layer {layer!r} not found; available layers: {list(adata.layers)}")
    return adata.layers[layer]


def to_csr(block) -> sp.csr_matrix:
    """A chunk as CSR with sorted indices and no duplicates.

    A chunk already in that form is returned as it is (callers only read it); anything else is
    converted into a new matrix, so the user's data is never edited.
    """
    if sp.issparse(block) and block.format == "csr" and block.has_canonical_format:
        return block
    if sp.issparse(block):
        csr = sp.csr_matrix(block, copy=True)
    else:
        dense = np.asarray(block)
        # scipy.sparse has no float16; float32 holds every float16 value exactly
        csr = sp.csr_matrix(dense.astype(np.float32) if dense.dtype == np.float16 else dense)
    csr.sum_duplicates()
    csr.sort_indices()
    return csr


def iter_chunks(
    adata, *, layer: str | None = None, chunk_size: int = 4096, whole_csr: bool = False
) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Yield ``(start, stop, csr)`` over cells; backed data are read one chunk at a time.

    ``whole_csr``: an in-memory CSR matrix in canonical form is yielded as one chunk, without
    the copy that slicing makes (for consumers whose memory does not grow with the chunk).
    """
    x = expression_matrix(adata, layer)
    if (
        whole_csr
        and not adata.isbacked
        and isinstance(x, sp.csr_matrix | sp.csr_array)
        and x.has_canonical_format
    ):
        yield 0, adata.n_obs, x
        return
    if isinstance(x, sp.csc_matrix | sp.csc_array):
        x = x.tocsr()  # row slices of CSC cost a full pass each
    n = adata.n_obs
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        yield start, stop, to_csr(x[start:stop])
