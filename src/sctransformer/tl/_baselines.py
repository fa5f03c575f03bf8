"""The classical baselines of ``sct.tl.benchmark`` and the shared split and metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from .._settings import settings
from ._sklearn import cv_splitter, fit_quietly

BASELINES = (
    "majority", "logreg_l2", "logreg_l1", "pca_logreg", "pca_knn", "xgboost", "scvi_logreg",
)  # fmt: skip
TRANSFORMER = ("sct_linear", "sct_knn", "sct_finetune")
# representations scored on the embedding and integration tasks
EMBEDDINGS = ("pca", "scvi", "sct")
ALIASES = {"logreg_hvg": "logreg_l2"}  # the L2 model's earlier name
METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "auroc", "time_s")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[dict, dict]:
    """Accuracy, macro-F1 (over classes in truth or prediction, as scikit-learn), balanced
    accuracy (mean recall over classes in truth) and per-class F1 (0 where undefined).
    """
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    labels = sorted(set(y_true) | set(y_pred))
    f1 = {}
    recalls = []
    for c in labels:
        tp = float(np.sum((y_true == c) & (y_pred == c)))
        n_true = float(np.sum(y_true == c))
        n_pred = float(np.sum(y_pred == c))
        f1[c] = 2 * tp / (n_true + n_pred) if n_true + n_pred else 0.0
        if n_true:
            recalls.append(tp / n_true)
    overall = {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(np.mean(list(f1.values()))),
        "balanced_accuracy": float(np.mean(recalls)),
    }
    return overall, f1


def split_cells(
    obs: pd.DataFrame,
    labels: np.ndarray,
    *,
    split_key: str | None,
    test_groups: Sequence[str] | None,
    test_size: float,
    seed: int,
) -> np.ndarray:
    """Boolean test mask over the labelled cells (``labels`` = their labels)."""
    if split_key is not None:
        groups = obs[split_key].astype(str).to_numpy()
        uniq = sorted(set(groups))
        if test_groups is None:
            test_groups = [uniq[-1]]
        test_groups = [str(g) for g in test_groups]
        unknown = [g for g in test_groups if g not in uniq]
        if unknown:
            raise ValueError(f"test_groups {unknown} are not values of obs[{split_key!r}] ({uniq})")
        test = np.isin(groups, test_groups)
        if test.all() or not test.any():
            raise ValueError(
                f"obs[{split_key!r}] must leave cells for both training and testing; it has "
                f"groups {uniq} and test_groups={test_groups}"
            )
        return test
    from sklearn.model_selection import train_test_split

    n = len(labels)
    n_test = round(n * test_size)
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"test_size={test_size} leaves no test or training cells out of {n}")
    _, counts = np.unique(labels, return_counts=True)
    strat = labels if counts.min() >= 2 and n_test >= len(counts) else None
    _, te = train_test_split(np.arange(n), test_size=n_test, random_state=seed, stratify=strat)
    test = np.zeros(n, dtype=bool)
    test[te] = True
    return test


def _counts(adata: AnnData, cells: np.ndarray, layer: str | None):
    """The counts of ``cells`` (``X`` or ``layer``) as float64 CSR, after checking them."""
    import scipy.sparse as sp

    if adata.isbacked:
        sub = adata[cells].to_memory()
        x = sub.layers[layer] if layer is not None else sub.X
    else:
        x = (adata.layers[layer] if layer is not None else adata.X)[cells]
    x = sp.csr_matrix(x, dtype=np.float64)
    _validate.check_values(x)
    return x


def _normalise(counts):
    """log1p of counts scaled to 10,000 per cell (scanpy's normalize_total + log1p), CSR."""
    import scanpy as sc
    import scipy.sparse as sp

    sub = AnnData(counts.copy())
    sc.pp.normalize_total(sub, target_sum=1e4)
    sc.pp.log1p(sub)
    return sp.csr_matrix(sub.X)


def _log_normalised(adata: AnnData, cells: np.ndarray, layer: str | None):
    """log1p of counts scaled to 10,000 per cell (scanpy's normalize_total + log1p), CSR."""
    return _normalise(_counts(adata, cells, layer))


def _hvg(x_train, n_top: int) -> np.ndarray:
    """Indices of the ``n_top`` most variable genes of the training cells (scanpy's
    ``highly_variable_genes``, Seurat flavour, on log-normalised values).
    """
    import scanpy as sc

    if n_top >= x_train.shape[1]:
        return np.arange(x_train.shape[1])
    hv = sc.pp.highly_variable_genes(
        AnnData(x_train), n_top_genes=n_top, flavor="seurat", inplace=False
    )
    return np.flatnonzero(hv["highly_variable"].to_numpy())


def _dense(x) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def _baseline(name: str, x_tr, y_tr, *, cv: int, n_pcs: int, seed: int):
    """Fit one baseline, tuned by cross-validation on the training cells; returns
    ``(probability function, its class columns, best parameters)``.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    y_tr = np.asarray(y_tr).astype(str)
    if name == "majority":
        values, counts = np.unique(y_tr, return_counts=True)
        top = int(np.argmax(counts))

        def proba(x):
            out = np.zeros((x.shape[0], len(values)))
            out[:, top] = 1.0
            return out

        return proba, list(values), {"class": str(values[top])}
    splitter = cv_splitter(y_tr, cv, seed)
    x_tr = _dense(x_tr)
    n_comp = int(max(2, min(n_pcs, x_tr.shape[0] // 2, x_tr.shape[1] - 1)))
    lr = LogisticRegression(max_iter=1000, class_weight="balanced")
    if name in ("logreg_l2", "scvi_logreg"):
        est = Pipeline([("scale", StandardScaler()), ("clf", lr)])
        grid = {"clf__C": [0.001, 0.01, 0.1, 1.0]}
        if name == "scvi_logreg":  # a few latent dimensions: less shrinkage
            grid = {"clf__C": [0.01, 0.1, 1.0, 10.0]}
    elif name == "logreg_l1":
        l1 = LogisticRegression(l1_ratio=1.0, solver="saga", max_iter=300, tol=1e-3,
                                class_weight="balanced", random_state=seed)  # fmt: skip
        est = Pipeline([("scale", StandardScaler()), ("clf", l1)])
        grid = {"clf__C": [0.01, 0.1, 1.0]}
    elif name == "pca_logreg":
        est = Pipeline(
            [("scale", StandardScaler()), ("pca", PCA(n_comp, random_state=seed)), ("clf", lr)]
        )
        grid = {"clf__C": [0.01, 0.1, 1.0, 10.0]}
    elif name == "pca_knn":
        est = Pipeline(
            [
                ("scale", StandardScaler()),
                ("pca", PCA(n_comp, random_state=seed)),
                ("clf", KNeighborsClassifier()),
            ]
        )
        max_k = max(1, int(len(y_tr) * (1 - 1 / splitter.get_n_splits())) - 1)
        grid = {"clf__n_neighbors": sorted({min(k, max_k) for k in (5, 15, 30)})}
    elif name == "xgboost":
        from xgboost import XGBClassifier

        classes, codes = np.unique(y_tr, return_inverse=True)
        model = XGBClassifier(
            tree_method="hist",
            learning_rate=0.1,
            n_jobs=settings.effective_n_jobs(),
            random_state=seed,
        )
        grid = {"max_depth": [3, 6], "n_estimators": [100, 300]}
        _, counts = np.unique(codes, return_counts=True)
        if counts.min() >= 2 and len(classes) > 1:
            search = GridSearchCV(model, grid, cv=cv_splitter(codes, cv, seed), scoring="f1_macro")
            fit_quietly(search, x_tr, codes)
            best, params = search.best_estimator_, search.best_params_
        else:  # a class with one training cell cannot appear in every fold
            best, params = (
                model.set_params(max_depth=6, n_estimators=100).fit(x_tr, codes),
                {"untuned": "a class has one training cell"},
            )
        return (lambda x: best.predict_proba(_dense(x))), list(classes), params
    else:  # pragma: no cover - names are validated before
        raise ValueError(name)
    search = GridSearchCV(est, grid, cv=splitter, scoring="f1_macro")
    fit_quietly(search, x_tr, y_tr)
    best = search.best_estimator_
    params = {k.removeprefix("clf__"): v for k, v in search.best_params_.items()}
    return (lambda x: best.predict_proba(_dense(x))), [str(c) for c in best.classes_], params


def has_scvi() -> bool:
    import importlib.util

    return importlib.util.find_spec("scvi") is not None


def pca_embedding(x, fit: np.ndarray, *, n_top_genes: int, n_pcs: int, seed: int) -> np.ndarray:
    """Scanpy's PCA of the log-normalised highly variable genes, fit on the cells ``fit`` (genes
    and components chosen there) and applied to every row of ``x``.
    """
    import scanpy as sc

    genes = _hvg(x[fit], n_top_genes)
    x = x[:, genes]
    n_comp = int(max(2, min(n_pcs, len(fit) - 1, x.shape[1] - 1)))
    ad = AnnData(x[fit])
    sc.pp.pca(ad, n_comps=n_comp, random_state=seed)
    mean = np.asarray(x[fit].mean(0)).ravel()
    return np.asarray((_dense(x) - mean) @ ad.varm["PCs"], dtype=np.float32)


def scvi_latent(counts, x_norm, batches, *, n_top_genes: int, epochs: int, seed: int,
                device) -> np.ndarray:  # fmt: skip
    """ScVI (Lopez et al., Nature Methods 2018; scvi-tools) latent means of every cell, trained
    without labels on all of them (raw counts of the highly variable genes, ``batches`` as the
    batch covariate when given).
    """
    import warnings

    import scvi

    genes = _hvg(x_norm, n_top_genes)
    ad = AnnData(counts[:, genes].astype(np.float32))
    if batches is not None:
        ad.obs["batch"] = pd.Categorical(np.asarray(batches).astype(str))
    with warnings.catch_warnings():  # the trainer's advice about workers and devices
        warnings.simplefilter("ignore")
        scvi.settings.seed = int(seed)
        scvi.model.SCVI.setup_anndata(ad, batch_key="batch" if batches is not None else None)
        model = scvi.model.SCVI(ad, n_latent=10)
        model.train(
            max_epochs=int(epochs),
            accelerator="gpu" if str(device).startswith("cuda") else "cpu",
            devices=1,
            enable_progress_bar=False,
            logger=False,
            enable_checkpointing=False,
        )
        return np.asarray(model.get_latent_representation(), dtype=np.float32)
