"""Evaluation metrics of ``sct.tl.benchmark``: label prediction, embedding quality, integration.

The definitions follow the published benchmarks so that figures can be compared:

- label prediction as in cz-benchmarks and Boiarsky et al. (accuracy, macro-F1, one-vs-rest
  macro AUROC from predicted probabilities);
- embedding quality and batch integration as in scIB (Luecken et al., Nature Methods 2022):
  ARI and NMI between Leiden clusters and labels at the resolution that matches the labels best
  (scIB's ``opt_louvain`` on NMI), label silhouette scaled to ``(s + 1) / 2``, batch silhouette
  ``1 - |s|`` per label and averaged over labels, iLISI, and a kBET-style acceptance rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _codes(values) -> tuple[np.ndarray, int]:
    codes, uniq = pd.factorize(pd.Series(np.asarray(values).astype(str)), sort=True)
    return np.asarray(codes), len(uniq)


def contingency(a, b) -> np.ndarray:
    """Counts of cells per (class of ``a``, class of ``b``)."""
    ca, na = _codes(a)
    cb, nb = _codes(b)
    table = np.zeros((na, nb), dtype=np.int64)
    np.add.at(table, (ca, cb), 1)
    return table


def adjusted_rand_index(a, b) -> float:
    """Adjusted Rand index of two labellings (Hubert & Arabie 1985)."""
    table = contingency(a, b)
    n = table.sum()

    def pairs(x):
        x = np.asarray(x, dtype=np.float64)
        return float((x * (x - 1) / 2).sum())

    index = pairs(table)
    rows, cols = pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2) if n > 1 else 0.0
    top = (rows + cols) / 2
    if top == expected:  # both labellings trivial: identical partitions
        return 1.0
    return float((index - expected) / (top - expected))


def normalized_mutual_info(a, b) -> float:
    """Mutual information divided by the arithmetic mean of the two entropies (natural log)."""
    table = contingency(a, b).astype(np.float64)
    n = table.sum()
    p = table / n
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum())

    def entropy(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    ha, hb = entropy(pa), entropy(pb)
    if ha == 0 and hb == 0:
        return 1.0
    denom = (ha + hb) / 2
    return float(mi / denom) if denom > 0 else 0.0


def auroc_ovr_macro(y_true, proba: np.ndarray, classes: Sequence[str]) -> float:
    """One-vs-rest AUROC per class of ``y_true`` from the probability columns (``classes``),
    averaged over classes with both positive and negative cells (NaN when none has).

    A true class without a probability column (never seen in training) scores every cell 0,
    so its AUROC is 0.5. Ties count half (the Mann–Whitney form).
    """
    from scipy.stats import rankdata

    y_true = np.asarray(y_true).astype(str)
    proba = np.asarray(proba, dtype=np.float64)
    col = {str(c): i for i, c in enumerate(classes)}
    aucs = []
    for c in sorted(set(y_true)):
        pos = y_true == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        score = proba[:, col[c]] if c in col else np.zeros(len(y_true))
        ranks = rankdata(score)
        aucs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def asw_label(x: np.ndarray, labels) -> float:
    """ScIB's cell-type ASW: the mean silhouette width of the labels, scaled to ``(s + 1) / 2``
    (0–1, higher = cell types further apart).
    """
    from sklearn.metrics import silhouette_samples

    s = silhouette_samples(x, np.asarray(labels).astype(str))
    return float((np.mean(s) + 1) / 2)


def asw_batch(x: np.ndarray, batches, labels) -> float:
    """ScIB's batch ASW: within each label with at least two batches (and more cells than
    batches), the silhouette of the batches, ``1 - |s|`` per cell, averaged per label and then
    over labels (1 = batches mixed within every cell type). NaN when no label qualifies.
    """
    from sklearn.metrics import silhouette_samples

    batches = np.asarray(batches).astype(str)
    labels = np.asarray(labels).astype(str)
    per_label = []
    for lab in sorted(set(labels)):
        m = labels == lab
        n_b = len(set(batches[m]))
        if n_b < 2 or m.sum() <= n_b:
            continue
        s = silhouette_samples(x[m], batches[m])
        per_label.append(float(np.mean(1 - np.abs(s))))
    return float(np.mean(per_label)) if per_label else float("nan")


def knn_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Each cell's ``k`` nearest other cells (Euclidean)."""
    from sklearn.neighbors import NearestNeighbors

    k = int(min(k, len(x) - 1))
    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]


def kbet_acceptance(x: np.ndarray, batches, *, n_neighbors: int, alpha: float = 0.05) -> float:
    """kBET-style acceptance rate (Büttner et al., Nature Methods 2019): the share of cells whose
    ``n_neighbors`` neighbours' batch counts pass a chi-squared test against the global batch
    frequencies at level ``alpha`` (1 = every neighbourhood as mixed as the data).
    """
    from scipy.stats import chi2

    codes, n_b = _codes(batches)
    if n_b < 2:
        return float("nan")
    idx = knn_indices(x, n_neighbors)
    k = idx.shape[1]
    counts = np.zeros((len(x), n_b))
    np.add.at(counts, (np.repeat(np.arange(len(x)), k), codes[idx].ravel()), 1)
    expected = np.bincount(codes, minlength=n_b) / len(codes) * k
    stat = ((counts - expected) ** 2 / expected).sum(1)
    p = chi2.sf(stat, df=n_b - 1)
    return float(np.mean(p >= alpha))


def leiden_match(
    x: np.ndarray,
    labels,
    *,
    resolutions: Sequence[float],
    n_neighbors: int,
    seed: int,
) -> dict:
    """Leiden clusters of scanpy's kNN graph of ``x`` at each resolution; the ARI and NMI
    against ``labels`` at the resolution with the best NMI (scIB's choice).
    """
    import scanpy as sc
    from anndata import AnnData

    ad = AnnData(np.zeros((len(x), 1), dtype=np.float32))
    ad.obsm["X_rep"] = np.asarray(x, dtype=np.float32)
    sc.pp.neighbors(ad, use_rep="X_rep", n_neighbors=int(min(n_neighbors, len(x) - 1)),
                    random_state=seed)  # fmt: skip
    best = None
    for r in resolutions:
        sc.tl.leiden(ad, resolution=float(r), random_state=seed, flavor="igraph",
                     n_iterations=2, directed=False, key_added="leiden")  # fmt: skip
        clusters = ad.obs["leiden"].to_numpy()
        nmi = normalized_mutual_info(labels, clusters)
        if best is None or nmi > best["nmi"]:
            best = {
                "nmi": nmi,
                "ari": adjusted_rand_index(labels, clusters),
                "resolution": float(r),
                "n_clusters": len(set(clusters)),
            }
    return best
