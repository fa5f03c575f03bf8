"""``sct.tl.benchmark``: transformer arms against tuned classical baselines on one split."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._settings import settings
from .._version import __version__
from ._annotate import (
    check_known_genes,
    cv_splitter,
    default_layer,
    default_pooling,
    embed_arrays,
    fit_annotator,
    fit_quietly,
    subset,
    token_arrays,
    with_batch_tokens,
)
from ._inputs import check_model_vocab, model_name, resolve_device, weights_sha256

BASELINES = ("majority", "logreg_hvg", "pca_logreg", "pca_knn", "xgboost")
TRANSFORMER = ("sct_linear", "sct_knn", "sct_finetune")
METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "time_s")


def has_xgboost() -> bool:
    import importlib.util

    return importlib.util.find_spec("xgboost") is not None


def default_methods(model) -> list[str]:
    """Every baseline (XGBoost when installed) and, with a model, every transformer arm."""
    out = [m for m in BASELINES if m != "xgboost" or has_xgboost()]
    if model is not None:
        out.extend(TRANSFORMER)
    return out


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[dict, dict]:
    """Accuracy, macro-F1 (over classes in truth or prediction, as scikit-learn), balanced
    accuracy (mean recall over classes in truth) and per-class F1 (0 where undefined)."""
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


def _log_normalised(adata: AnnData, layer: str | None):
    import scipy.sparse as sp

    x = adata.layers[layer] if layer is not None else adata.X
    x = sp.csr_matrix(x, dtype=np.float64)
    _validate.check_values(x)
    totals = np.asarray(x.sum(1)).ravel()
    x = sp.diags(1e4 / np.where(totals > 0, totals, 1)) @ x
    x.data = np.log1p(x.data)
    return sp.csr_matrix(x)


def _hvg(x_train, n_top: int) -> np.ndarray:
    """Indices of the ``n_top`` genes of highest normalised dispersion (Seurat's flavour,
    computed on the training cells only)."""
    n_genes = x_train.shape[1]
    if n_top >= n_genes:
        return np.arange(n_genes)
    mean = np.asarray(x_train.mean(0)).ravel()
    sq = np.asarray(x_train.multiply(x_train).mean(0)).ravel()
    var = np.maximum(sq - mean**2, 0)
    disp = np.where(mean > 0, var / np.where(mean > 0, mean, 1), 0)
    log_mean = np.log1p(mean)
    bins = pd.cut(log_mean, 20, labels=False)
    norm = np.zeros(n_genes)
    for b in np.unique(bins):
        sel = bins == b
        d = disp[sel]
        sd = d.std()
        norm[sel] = (d - d.mean()) / sd if sd > 0 else 0.0
    norm[mean == 0] = -np.inf
    return np.sort(np.argsort(-norm, kind="stable")[:n_top])


def _baseline(name: str, x_tr, y_tr, *, cv: int, n_pcs: int, seed: int):
    """Fit one baseline, tuned by cross-validation on the training cells; returns
    ``(predict function, best parameters)``."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "majority":
        values, counts = np.unique(y_tr, return_counts=True)
        top = values[np.argmax(counts)]
        return (lambda x: np.full(x.shape[0], top)), {"class": str(top)}
    splitter = cv_splitter(y_tr, cv, seed)
    x_tr = x_tr.toarray() if hasattr(x_tr, "toarray") else np.asarray(x_tr)
    n_comp = int(max(2, min(n_pcs, x_tr.shape[0] // 2, x_tr.shape[1] - 1)))
    lr = LogisticRegression(max_iter=1000, class_weight="balanced")
    if name == "logreg_hvg":
        est = Pipeline([("scale", StandardScaler()), ("clf", lr)])
        grid = {"clf__C": [0.001, 0.01, 0.1, 1.0]}
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
        if counts.min() >= 2:
            search = GridSearchCV(model, grid, cv=cv_splitter(codes, cv, seed), scoring="f1_macro")
            fit_quietly(search, x_tr, codes)
            best, params = search.best_estimator_, search.best_params_
        else:  # a class with one training cell cannot appear in every fold
            best, params = (
                model.set_params(max_depth=6, n_estimators=100).fit(x_tr, codes),
                {"untuned": "a class has one training cell"},
            )

        def predict(x):
            x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
            return classes[best.predict(x)]

        return predict, params
    else:  # pragma: no cover - names are validated before
        raise ValueError(name)
    search = GridSearchCV(est, grid, cv=splitter, scoring="f1_macro")
    fit_quietly(search, x_tr, y_tr)
    best = search.best_estimator_

    def predict(x):
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        return best.predict(x)

    return predict, {k.removeprefix("clf__"): v for k, v in search.best_params_.items()}


def benchmark(
    adata: AnnData,
    *,
    labels_key: str,
    split_key: str | None = None,
    test_groups: Sequence[str] | None = None,
    test_size: float = 0.2,
    methods: Sequence[str] | None = None,
    model=None,
    layer: str | None = None,
    n_top_genes: int = 2000,
    n_pcs: int = 50,
    cv: int = 3,
    batch_key: str | None = None,
    annotate_kwds: dict | None = None,
    batch_size: int = 32,
    precision: str = "auto",
    device: str = "auto",
    seed: int = 0,
    key_added: str = "sct_benchmark",
    copy: bool = False,
) -> AnnData | None:
    """Compare cell-type classifiers on one train/test split: transformer arms and baselines.

    Every method is trained on the same training cells and scored on the same test cells.
    Baselines are tuned by cross-validation on the training cells only (an untuned baseline
    is the unfair comparison the literature warns about); the test cells are touched once.

    Methods (``methods=None`` runs every one that applies):

    ``"majority"``
        The most frequent training label (the floor every method must clear).
    ``"logreg_hvg"``
        Logistic regression on log-normalised highly variable genes (standardised; ``C``
        tuned; genes chosen on the training cells).
    ``"pca_logreg"``
        PCA (fit on the training cells) + logistic regression (``C`` tuned).
    ``"pca_knn"``
        PCA + k-nearest neighbours (``k`` tuned).
    ``"xgboost"``
        Gradient-boosted trees on the same genes (depth and rounds tuned); only when the
        ``xgboost`` package is installed.
    ``"sct_linear"``, ``"sct_knn"``, ``"sct_finetune"``
        ``model`` with :func:`sctransformer.tl.annotate`'s ``method="linear"``, ``"knn"`` and
        ``"finetune"`` (needs ``model``).

    Parameters
    ----------
    adata
        Cells × genes, raw counts in ``X`` (or ``layer``); cells without a label are ignored.
    labels_key
        ``obs`` column of the labels.
    split_key
        ``obs`` column of batches or donors: cells of ``test_groups`` are the test set (a
        cross-batch split, the one that shows whether a method generalises).
    test_groups
        Values of ``split_key`` held out; default the last one in sorted order.
    test_size
        Without ``split_key``: the share of cells held out, stratified by label.
    methods
        Names from the list above.
    model
        A model (object, registry name or folder) for the transformer arms.
    layer
        Counts layer (default ``X``).
    n_top_genes, n_pcs, cv
        Baseline features and cross-validation folds.
    batch_key
        Passed to the transformer arms (batch condition tokens).
    annotate_kwds
        Extra arguments of the transformer arms (e.g. ``{"epochs": 5, "freeze": True}``).
    batch_size, precision, device, seed
        As in :func:`sctransformer.tl.annotate`; ``seed`` also fixes the split.
    key_added
        Prefix of the keys written.
    copy
        Work on a copy.

    Returns
    -------
    ``None`` or the copy. Writes:

    ``uns["sct_benchmark"]``
        Tidy DataFrame, one row per method × metric (× class for ``"f1"``): ``method``,
        ``family`` (``"baseline"`` / ``"transformer"``), ``metric`` (``accuracy``,
        ``macro_f1``, ``balanced_accuracy``, ``time_s`` — seconds of preprocessing, tuning,
        fitting and predicting — and per-class ``f1``), ``label`` (the class for ``f1``, else
        ``""``), ``value``, ``n_train``, ``n_test``, ``split_sha`` (identical for every method:
        the split is shared) and ``best_params`` (JSON).
    ``obs["sct_benchmark_split"]``
        ``"train"``, ``"test"`` or ``"unlabelled"``.
    ``uns["sct_benchmark_params"]``
        The call's settings, with model name, weights sha256 and version.
    """
    _validate.check_nonempty(adata)
    _validate.check_key(adata.obs, labels_key, where="adata.obs")
    if split_key is not None:
        _validate.obs_column(adata, split_key, fix="fill them first")
    elif test_groups is not None:
        raise ValueError("test_groups needs split_key")
    if layer is not None:
        _validate.check_key(adata.layers, layer, where="adata.layers")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    if cv < 2:
        raise ValueError(f"cv must be at least 2, got {cv}")
    methods = list(default_methods(model) if methods is None else methods)
    unknown = [m for m in methods if m not in BASELINES + TRANSFORMER]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}; use some of {list(BASELINES + TRANSFORMER)}")
    if "xgboost" in methods and not has_xgboost():
        raise ValueError("method 'xgboost' needs the xgboost package: pip install xgboost")
    arms = [m for m in methods if m in TRANSFORMER]
    if arms and model is None:
        raise ValueError(f"methods {arms} need model=")
    kw = dict(annotate_kwds or {})
    allowed = {
        "freeze",
        "epochs",
        "lr",
        "encoder_lr",
        "weight_decay",
        "class_weight",
        "validation_fraction",
        "patience",
        "n_neighbors",
        "pooling",
        "layer",
    }
    bad = sorted(set(kw) - allowed)
    if bad:
        raise ValueError(f"annotate_kwds {bad} not understood; use some of {sorted(allowed)}")

    labels_col = adata.obs[labels_key]
    labelled = labels_col.notna().to_numpy()
    cells = np.flatnonzero(labelled)
    y = labels_col.astype(str).to_numpy()[cells]
    if len(set(y)) < 2:
        raise ValueError(f"obs[{labels_key!r}] needs at least 2 classes, has {sorted(set(y))}")
    test = split_cells(
        adata.obs.iloc[cells],
        y,
        split_key=split_key,
        test_groups=test_groups,
        test_size=test_size,
        seed=seed,
    )
    tr_idx, te_idx = np.flatnonzero(~test), np.flatnonzero(test)
    split_sha = hashlib.sha256(np.asarray(cells[te_idx], dtype=np.int64).tobytes()).hexdigest()[:16]
    net = None
    if arms:
        from ..models import resolve

        net = resolve(model)
        check_model_vocab(net)
        pooling = default_pooling(net, kw.pop("pooling", None))
        emb_layer = default_layer(net, kw.pop("layer", None))
        check_known_genes(adata, net, what="data", min_gene_fraction=0.2, min_genes=50)
        if batch_key is not None:
            from ._annotate import check_batches

            net, _ = with_batch_tokens(net, check_batches(adata, batch_key, what="data"))
    dev = resolve_device(device)

    start = logg.info(
        f"benchmarking {len(methods)} methods on {len(tr_idx)} training and {len(te_idx)} test "
        "cells"
    )
    rows: list[dict] = []

    def record(name: str, family: str, pred, seconds: float, params: dict) -> None:
        overall, f1 = classification_metrics(y[te_idx], pred)
        base = {
            "method": name,
            "family": family,
            "n_train": len(tr_idx),
            "n_test": len(te_idx),
            "split_sha": split_sha,
            "best_params": json.dumps(params, default=str, sort_keys=True),
        }
        for metric, v in {**overall, "time_s": seconds}.items():
            rows.append({**base, "metric": metric, "label": "", "value": float(v)})
        for c, v in f1.items():
            rows.append({**base, "metric": "f1", "label": c, "value": float(v)})
        logg.hint(f"    {name}: macro-F1 {overall['macro_f1']:.3f} ({seconds:.1f} s)")

    bar = logg.progress(total=len(methods), desc="benchmark", unit="method")
    base_methods = [m for m in methods if m in BASELINES]
    if base_methods:
        t0 = time.perf_counter()
        sub = adata[cells]
        x = _log_normalised(sub, layer)
        genes = _hvg(x[tr_idx], n_top_genes)
        x = x[:, genes]
        prep = time.perf_counter() - t0
        for name in base_methods:
            t0 = time.perf_counter()
            predict, params = _baseline(name, x[tr_idx], y[tr_idx], cv=cv, n_pcs=n_pcs, seed=seed)
            pred = predict(x[te_idx])
            record(name, "baseline", pred, prep + time.perf_counter() - t0, params)
            bar.update(1)
    if arms:
        t0 = time.perf_counter()
        data = subset(token_arrays(adata, net, batch_key=batch_key), cells)
        classes = sorted(set(y[tr_idx]))
        code = {c: i for i, c in enumerate(classes)}
        y_tr = np.array([code[v] for v in y[tr_idx]])
        prep = time.perf_counter() - t0
        frozen = None
        frozen_time = 0.0
        if {"sct_linear", "sct_knn"} & set(arms):
            t0 = time.perf_counter()
            net.to(dev).eval()
            frozen = embed_arrays(
                net,
                data,
                pooling=pooling,
                layer=emb_layer,
                batch_size=batch_size,
                device=dev,
                precision=precision,
            )
            frozen_time = time.perf_counter() - t0
        for name in arms:
            method = name.removeprefix("sct_")
            t0 = time.perf_counter()
            args = {
                k: v
                for k, v in kw.items()
                if method == "finetune" or k in ("n_neighbors", "class_weight")
            }
            annot = fit_annotator(
                net,
                subset(data, tr_idx),
                y_tr,
                classes,
                classes,
                method=method,
                pooling=pooling,
                layer=emb_layer,
                batch_key=batch_key,
                batch_size=batch_size,
                precision=precision,
                device=dev,
                seed=seed,
                embeddings=None if frozen is None else frozen[tr_idx],
                **args,
            )
            if method == "finetune":
                proba = annot._proba_arrays(
                    subset(data, te_idx), batch_size=batch_size, device=dev, precision=precision
                )
                extra = 0.0
            else:
                proba = annot.proba_from_embeddings(frozen[te_idx])
                extra = frozen_time
            pred = np.asarray(classes, dtype=object)[proba.argmax(1)]
            params = {"method": method, **args}
            if method == "linear":
                params["C"] = "cv over [0.01, 0.1, 1, 10]"
            record(name, "transformer", pred, prep + extra + time.perf_counter() - t0, params)
            bar.update(1)
    bar.close()

    table = pd.DataFrame(
        rows,
        columns=[
            "method",
            "family",
            "metric",
            "label",
            "value",
            "n_train",
            "n_test",
            "split_sha",
            "best_params",
        ],
    )
    adata = adata.copy() if copy else adata
    split = np.full(adata.n_obs, "unlabelled", dtype=object)
    split[cells[tr_idx]] = "train"
    split[cells[te_idx]] = "test"
    adata.obs[f"{key_added}_split"] = pd.Categorical(
        split, categories=["train", "test", "unlabelled"]
    )
    adata.uns[key_added] = table
    adata.uns[f"{key_added}_params"] = {
        "labels_key": labels_key,
        "split_key": split_key or "",
        "test_groups": [] if test_groups is None else [str(g) for g in test_groups],
        "test_size": float(test_size),
        "methods": methods,
        "model": model_name(net) if net is not None else "",
        "weights_sha256": weights_sha256(net) if net is not None else "",
        "n_top_genes": int(n_top_genes),
        "n_pcs": int(n_pcs),
        "cv": int(cv),
        "batch_key": batch_key or "",
        "seed": int(seed),
        "device": str(dev),
        "version": __version__,
    }
    logg.info(
        "    finished",
        time=start,
        deep=f"added uns[{key_added!r}], uns['{key_added}_params'], obs['{key_added}_split']",
    )
    return adata if copy else None


def summary(adata: AnnData, *, key: str = "sct_benchmark") -> pd.DataFrame:
    """The benchmark as a wide table: one row per method, one column per overall metric."""
    if key not in adata.uns or not isinstance(adata.uns[key], pd.DataFrame):
        raise ValueError(f"uns[{key!r}] not found; run sct.tl.benchmark first")
    t = adata.uns[key]
    t = t[t["metric"].isin(METRICS)]
    wide = t.pivot_table(index=["method", "family"], columns="metric", values="value", sort=False)
    return wide.reset_index().set_index("method")[["family", *METRICS]]
