"""Backed AnnData: where results can go."""

from __future__ import annotations


def check_writable(adata, *, copy: bool) -> None:
    """Refuse to write results into an AnnData backed by a file opened read-only.

    anndata lets ``obsm``/``obs``/``uns`` of a ``backed="r"`` AnnData be set in memory, but they
    can never reach the file (``adata.write()`` then fails half-way). Raised before any work, so
    nothing is written anywhere.
    """
    if copy or not getattr(adata, "isbacked", False):
        return
    mode = getattr(getattr(adata, "file", None), "_filemode", None)
    if mode == "r":
        raise ValueError(
            f"adata is backed by {adata.filename} opened read-only (backed='r'), so the results "
            "cannot be stored with it. Open it with anndata.read_h5ad(path, backed='r+') "
            "(the matrix stays on disk; adata.write() then saves the results), or pass "
            "copy=True (which loads the matrix into memory)"
        )
