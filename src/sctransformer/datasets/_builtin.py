"""Data sets that ship inside installed packages: no network needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def pbmc68k_counts() -> AnnData:
    """Scanpy's ``pbmc68k_reduced`` (700 PBMCs × 765 genes) with integer counts recovered.

    scanpy ships this subset only log-normalised (``.raw``: ``log1p`` of counts scaled to a
    common total). Counts are reconstructed per cell as
    ``round(expm1(raw) / min nonzero expm1(raw))``: the smallest nonzero value of a cell is
    taken to be one count. This is a reconstruction, exact only when a cell's smallest nonzero
    count was 1 (nearly always the case for UMI data), and the per-cell totals cover the 765
    genes kept, not the whole transcriptome.

    Returns
    -------
    AnnData with counts in ``X`` (float32 CSR) and ``layers["counts"]``; ``obs`` keeps
    ``bulk_labels`` (10 cell types), ``louvain`` and ``phase``; ``obsm["X_umap"]`` from scanpy.
    """
    import scanpy as sc

    ref = sc.datasets.pbmc68k_reduced()
    raw = sp.csr_matrix(ref.raw.X, dtype=np.float64)
    expm1 = raw.copy()
    expm1.data = np.expm1(expm1.data)
    rows = np.repeat(np.arange(expm1.shape[0]), np.diff(expm1.indptr))
    unit = np.minimum.reduceat(expm1.data, expm1.indptr[:-1])
    expm1.data = np.round(expm1.data / unit[rows])
    counts = expm1.astype(np.float32)
    counts.eliminate_zeros()
    obs = ref.obs[["bulk_labels", "louvain", "phase", "n_genes", "percent_mito"]].copy()
    adata = AnnData(counts, obs=obs, var=pd.DataFrame(index=ref.raw.var_names.copy()))
    adata.layers["counts"] = counts.copy()
    adata.obsm["X_umap"] = ref.obsm["X_umap"].copy()
    adata.uns["dataset"] = {
        "name": "pbmc68k_counts",
        "source": "scanpy.datasets.pbmc68k_reduced, counts reconstructed from .raw",
    }
    return adata


def celltypist_sample() -> AnnData:
    """Celltypist's bundled sample: 559 cells × 32,786 genes of raw UMI counts, no labels.

    Needs the ``celltypist`` package (``pip install celltypist``); read from the file it
    ships (``celltypist/data/samples/sample_cell_by_gene.csv``), no download.
    """
    import importlib.util

    # locate the package without importing it: its import is slow and warns under new scanpy
    spec = importlib.util.find_spec("celltypist")
    if spec is None or spec.origin is None:
        raise ImportError(
            "celltypist_sample() reads a file shipped with celltypist; pip install celltypist"
        )
    path = Path(spec.origin).parent / "data" / "samples" / "sample_cell_by_gene.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from this celltypist installation")
    df = pd.read_csv(path, index_col=0)
    x = sp.csr_matrix(df.to_numpy(dtype=np.float32))
    adata = AnnData(
        x,
        obs=pd.DataFrame(index=df.index.astype(str)),
        var=pd.DataFrame(index=df.columns.astype(str)),
    )
    adata.var_names_make_unique()
    adata.uns["dataset"] = {"name": "celltypist_sample", "source": str(path.name)}
    return adata
