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


def open_zarr(store, *, mode: str = "r"):
    """An AnnData over a zarr store whose matrix stays on disk (read in row chunks).

    ``obs``, ``var``, ``obsm``, ``varm`` and ``uns`` are read into memory; ``X`` (and each
    layer), when sparse (CSR) or dense, is left in the store and every task of this package
    reads it a chunk of cells at a time, so memory does not grow with the number of cells.
    Results are written into the returned AnnData's annotations in memory; save them into the
    store with ``anndata.io.write_elem(zarr.open(store, mode="r+")["obsm"], "X_sct", ...)`` or
    write a new file. (``anndata.read_zarr`` reads the whole matrix into memory.)

    Parameters
    ----------
    store
        A path to a ``.zarr`` folder (written by ``AnnData.write_zarr``) or an open zarr group.
    mode
        ``"r"`` (default) or ``"r+"``.
    """
    import anndata as ad
    import zarr
    from anndata.io import read_elem, sparse_dataset

    group = zarr.open(store, mode=mode) if not isinstance(store, zarr.Group) else store
    if "X" not in group and "obs" not in group:
        raise ValueError(
            f"{store!r} is not an AnnData zarr store (no 'X' or 'obs'); write one with "
            "adata.write_zarr(path)"
        )

    def matrix(node):
        if isinstance(node, zarr.Group):  # sparse: data/indices/indptr
            enc = node.attrs.get("encoding-type", "")
            if enc != "csr_matrix":
                raise ValueError(
                    f"the store's matrix is {enc or 'an unknown encoding'}; cells are read in "
                    "row chunks, so store it as CSR (adata.X = adata.X.tocsr(); "
                    "adata.write_zarr(path))"
                )
            return sparse_dataset(node)
        return node  # a dense zarr array slices by rows without loading the rest

    parts = {k: read_elem(group[k]) for k in ("obs", "var", "obsm", "varm", "uns") if k in group}
    layers = {k: matrix(group["layers"][k]) for k in group["layers"]} if "layers" in group else {}
    return ad.AnnData(
        X=matrix(group["X"]) if "X" in group else None,
        layers=layers or None,
        **parts,
    )
