"""``sct.tl.integration_metrics``: batch mixing and label conservation of any representation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._version import __version__


def _representation(adata: AnnData, rep: str) -> np.ndarray:
    if rep == "X":
        x = adata.X
    else:
        _validate.check_key(adata.obsm, rep, where="adata.obsm")
        x = adata.obsm[rep]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    if x.ndim != 2 or x.shape[0] != adata.n_obs:
        raise ValueError(f"{rep!r} is not a cells × features matrix (shape {x.shape})")
    if not np.isfinite(x).all():
        raise ValueError(f"{rep!r} contains NaN or infinite values")
    return x.astype(np.float64)


def batch_mixing(x: np.ndarray, batches: np.ndarray, *, n_neighbors: int) -> tuple[float, float]:
    """Mean normalised batch entropy and mean iLISI over each cell's ``n_neighbors`` neighbours.

    Entropy is divided by ``log(n_batches)`` (1 = neighbourhoods as mixed as possible); iLISI is
    the inverse Simpson index of the batches among the neighbours (1 = one batch, up to
    ``n_batches``), the unweighted k-nearest-neighbour form of the LISI score.
    """
    from sklearn.neighbors import NearestNeighbors

    codes, uniq = pd.factorize(pd.Series(batches))
    n_b = len(uniq)
    k = int(min(n_neighbors, len(x) - 1))
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    idx = nn.kneighbors(x, return_distance=False)[:, 1:]
    counts = np.zeros((len(x), n_b))
    np.add.at(counts, (np.repeat(np.arange(len(x)), k), codes[idx].ravel()), 1)
    p = counts / k
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0).sum(1)
    entropy = float(ent.mean() / np.log(n_b)) if n_b > 1 else 0.0
    ilisi = float((1.0 / (p**2).sum(1)).mean())
    return entropy, ilisi


def integration_metrics(
    adata: AnnData,
    *,
    batch_key: str,
    labels_key: str,
    use_rep: str | Sequence[str] = "X_sct",
    n_neighbors: int = 30,
    max_cells: int = 20000,
    seed: int = 0,
    key_added: str = "sct_integration",
) -> pd.DataFrame:
    """How well a representation mixes batches while keeping cell types apart.

    Compare representations side by side, e.g. ``use_rep=["X_sct", "X_pca"]``.

    Parameters
    ----------
    adata
        AnnData with the representation(s) in ``obsm`` (or ``"X"``).
    batch_key
        ``obs`` column of batches (at least two).
    labels_key
        ``obs`` column of cell types.
    use_rep
        One ``obsm`` key (or ``"X"``), or several.
    n_neighbors
        Neighbourhood size for batch mixing.
    max_cells
        Score a seeded random subset of this many cells when there are more (kNN and
        silhouette are quadratic at worst).
    seed
        Seeds that subset.
    key_added
        ``uns`` key of the result.

    Returns
    -------
    DataFrame indexed by representation with ``batch_entropy`` (mean normalised entropy of
    the batches among each cell's neighbours, 0–1, higher = better mixed), ``ilisi`` (mean
    inverse Simpson index of neighbour batches, 1–``n_batches``, higher = better mixed),
    ``label_silhouette`` (silhouette of the labels, -1–1, higher = cell types better kept
    apart), ``batch_silhouette`` (silhouette of the batches; near 0 or below = mixed),
    ``n_cells``, ``n_batches``. Also written to ``uns["sct_integration"]`` (with
    ``uns["sct_integration_params"]``).
    """
    from sklearn.metrics import silhouette_score

    reps = [use_rep] if isinstance(use_rep, str) else [str(r) for r in use_rep]
    if not reps:
        raise ValueError("use_rep is empty")
    _validate.check_nonempty(adata)
    for key in (batch_key, labels_key):
        _validate.obs_column(adata, key, fix="fill or drop those cells first")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be positive, got {n_neighbors}")
    batches = adata.obs[batch_key].astype(str).to_numpy()
    labels = adata.obs[labels_key].astype(str).to_numpy()
    if len(set(batches)) < 2:
        raise ValueError(f"obs[{batch_key!r}] has one batch; batch mixing needs at least two")
    if len(set(labels)) < 2:
        raise ValueError(f"obs[{labels_key!r}] has one label; silhouette needs at least two")
    if adata.n_obs < 3:
        raise ValueError("at least 3 cells are needed")
    xs = {rep: _representation(adata, rep) for rep in reps}
    cells = np.arange(adata.n_obs)
    if adata.n_obs > max_cells:
        cells = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))

    start = logg.info(f"scoring integration of {reps} on {len(cells)} cells")
    rows = []
    for rep, x in xs.items():
        x = x[cells]
        entropy, ilisi = batch_mixing(x, batches[cells], n_neighbors=n_neighbors)
        rows.append(
            {
                "use_rep": rep,
                "batch_entropy": entropy,
                "ilisi": ilisi,
                "label_silhouette": float(silhouette_score(x, labels[cells])),
                "batch_silhouette": float(silhouette_score(x, batches[cells])),
                "n_cells": len(cells),
                "n_batches": len(set(batches[cells])),
            }
        )
    table = pd.DataFrame(rows).set_index("use_rep")
    adata.uns[key_added] = table
    adata.uns[f"{key_added}_params"] = {
        "batch_key": batch_key,
        "labels_key": labels_key,
        "use_rep": reps,
        "n_neighbors": int(n_neighbors),
        "max_cells": int(max_cells),
        "seed": int(seed),
        "version": __version__,
    }
    logg.info("    finished", time=start, deep=f"added uns[{key_added!r}]")
    return table
