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
from .._tokens import model_tokens
from ..models import resolve
from ..models._model import record_params
from ..train import infer
from ._annotator import fit_annotator
from ._baselines import (
    BASELINES,
    METRICS,
    TRANSFORMER,
    _baseline,
    _hvg,
    _log_normalised,
    classification_metrics,
    split_cells,
)
from ._common import batch_values, copy_of, resolve_device

__all__ = ["benchmark", "classification_metrics", "default_methods", "summary"]


def has_xgboost() -> bool:
    import importlib.util

    return importlib.util.find_spec("xgboost") is not None


def default_methods(model) -> list[str]:
    """Every baseline (XGBoost when installed) and, with a model, every transformer arm."""
    out = [m for m in BASELINES if m != "xgboost" or has_xgboost()]
    if model is not None:
        out.extend(TRANSFORMER)
    return out


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
    gene_key: str | None = None,
    min_gene_fraction: float = 0.2,
    min_genes: int = 50,
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
    gene_key, min_gene_fraction, min_genes
        How the data's genes are matched to the model's vocabulary, as in
        :func:`sctransformer.tl.annotate`.
    key_added
        Prefix of the keys written.
    copy
        Work on a copy.

    Returns
    -------
    ``None`` or the copy. Writes:

    ``uns["sct_benchmark"]["table"]``
        Tidy DataFrame, one row per method × metric (× class for ``"f1"``): ``method``,
        ``family`` (``"baseline"`` / ``"transformer"``), ``metric`` (``accuracy``,
        ``macro_f1``, ``balanced_accuracy``, ``time_s`` — seconds of preprocessing, tuning,
        fitting and predicting — and per-class ``f1``), ``label`` (the class for ``f1``, else
        ``""``), ``value``, ``n_train``, ``n_test``, ``split_sha`` (identical for every method:
        the split is shared) and ``best_params`` (JSON).
    ``obs["sct_benchmark_split"]``
        ``"train"``, ``"test"`` or ``"unlabelled"``.
    ``uns["sct_benchmark"]["params"]``
        The call's settings, with model name, weights sha256, version, device and seed.
    """
    methods, kw = _check_args(
        adata, labels_key, split_key, test_groups, layer, test_size, cv, methods, model,
        annotate_kwds,
    )  # fmt: skip
    labels_col = adata.obs[labels_key]
    cells = np.flatnonzero(labels_col.notna().to_numpy())
    y = labels_col.astype(str).to_numpy()[cells]
    if len(set(y)) < 2:
        raise ValueError(f"obs[{labels_key!r}] needs at least 2 classes, has {sorted(set(y))}")
    test = split_cells(
        adata.obs.iloc[cells], y, split_key=split_key, test_groups=test_groups,
        test_size=test_size, seed=seed,
    )  # fmt: skip
    tr_idx, te_idx = np.flatnonzero(~test), np.flatnonzero(test)
    split_sha = hashlib.sha256(np.asarray(cells[te_idx], dtype=np.int64).tobytes()).hexdigest()[:16]
    arms = [m for m in methods if m in TRANSFORMER]
    match = dict(gene_key=gene_key, min_gene_fraction=min_gene_fraction)
    net = None
    if arms:
        net = resolve(model)
        kw["pooling"], kw["layer"] = net.pooling(kw.get("pooling")), net.layer(kw.get("layer"))
        net.check_genes(adata, min_genes=min_genes, **match)
        if batch_key is not None:
            net, _ = net.with_batch_tokens(batch_values(adata, batch_key))
    dev = resolve_device(device)

    start = logg.info(
        f"benchmarking {len(methods)} methods on {len(tr_idx)} training and {len(te_idx)} test "
        "cells"
    )
    rows: list[dict] = []
    base = {"n_train": len(tr_idx), "n_test": len(te_idx), "split_sha": split_sha}
    bar = logg.progress(total=len(methods), desc="benchmark", unit="method")
    base_methods = [m for m in methods if m in BASELINES]
    if base_methods:
        for name, pred, seconds, params in _run_baselines(
            adata, cells, y, tr_idx, te_idx, base_methods, layer=layer,
            n_top_genes=n_top_genes, n_pcs=n_pcs, cv=cv, seed=seed,
        ):  # fmt: skip
            rows.extend(_rows(name, "baseline", y[te_idx], pred, seconds, params, base))
            bar.update(1)
    if arms:
        t0 = time.perf_counter()
        data = model_tokens(adata, net, cells=cells, batch_key=batch_key, **match)
        prep = time.perf_counter() - t0
        for name, pred, seconds, params in _run_transformer(
            net, data, y, tr_idx, te_idx, arms, kw, batch_key=batch_key, batch_size=batch_size,
            precision=precision, device=dev, seed=seed,
        ):  # fmt: skip
            rows.extend(_rows(name, "transformer", y[te_idx], pred, prep + seconds, params, base))
            bar.update(1)
    bar.close()

    adata = copy_of(adata) if copy else adata
    split = np.full(adata.n_obs, "unlabelled", dtype=object)
    split[cells[tr_idx]] = "train"
    split[cells[te_idx]] = "test"
    adata.obs[f"{key_added}_split"] = pd.Categorical(
        split, categories=["train", "test", "unlabelled"]
    )
    params = record_params(
        net, device=dev, seed=seed, labels_key=labels_key, split_key=split_key,
        test_groups=[] if test_groups is None else [str(g) for g in test_groups],
        test_size=float(test_size), methods=methods, n_top_genes=int(n_top_genes),
        n_pcs=int(n_pcs), cv=int(cv), batch_key=batch_key, gene_key=gene_key,
        min_gene_fraction=min_gene_fraction,
    )  # fmt: skip
    adata.uns[key_added] = {"table": pd.DataFrame(rows, columns=COLUMNS), "params": params}
    logg.info(
        "    finished", time=start, deep=f"added uns[{key_added!r}], obs['{key_added}_split']"
    )
    return adata if copy else None


COLUMNS = [
    "method", "family", "metric", "label", "value", "n_train", "n_test", "split_sha",
    "best_params",
]  # fmt: skip
ANNOTATE_KWDS = {
    "freeze", "epochs", "lr", "encoder_lr", "weight_decay", "class_weight",
    "validation_fraction", "patience", "n_neighbors", "pooling", "layer",
}  # fmt: skip


def _check_args(adata, labels_key, split_key, test_groups, layer, test_size, cv, methods, model,
                annotate_kwds) -> tuple[list[str], dict]:  # fmt: skip
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
    bad = sorted(set(kw) - ANNOTATE_KWDS)
    if bad:
        raise ValueError(f"annotate_kwds {bad} not understood; use some of {sorted(ANNOTATE_KWDS)}")
    return methods, kw


def _rows(name, family, y_true, pred, seconds, params, base) -> list[dict]:
    """Tidy rows of one method: overall metrics, time and per-class F1."""
    overall, f1 = classification_metrics(y_true, pred)
    head = {
        "method": name,
        "family": family,
        **base,
        "best_params": json.dumps(params, default=str, sort_keys=True),
    }
    logg.hint(f"    {name}: macro-F1 {overall['macro_f1']:.3f} ({seconds:.1f} s)")
    out = [{**head, "metric": m, "label": "", "value": float(v)}
           for m, v in {**overall, "time_s": seconds}.items()]  # fmt: skip
    out += [{**head, "metric": "f1", "label": c, "value": float(v)} for c, v in f1.items()]
    return out


def _run_baselines(adata, cells, y, tr_idx, te_idx, names, *, layer, n_top_genes, n_pcs, cv,
                   seed):  # fmt: skip
    """Yield ``(name, test predictions, seconds, best parameters)`` per baseline."""
    t0 = time.perf_counter()
    x = _log_normalised(adata, cells, layer)
    x = x[:, _hvg(x[tr_idx], n_top_genes)]
    prep = time.perf_counter() - t0
    for name in names:
        t0 = time.perf_counter()
        predict, params = _baseline(name, x[tr_idx], y[tr_idx], cv=cv, n_pcs=n_pcs, seed=seed)
        pred = predict(x[te_idx])
        yield name, pred, prep + time.perf_counter() - t0, params


def _run_transformer(net, data, y, tr_idx, te_idx, arms, kw, *, batch_key, batch_size,
                     precision, device, seed):  # fmt: skip
    """Yield ``(name, test predictions, seconds, parameters)`` per transformer arm."""
    pooling, emb_layer = kw.pop("pooling"), kw.pop("layer")
    classes = sorted(set(y[tr_idx]))
    code = {c: i for i, c in enumerate(classes)}
    y_tr = np.array([code[v] for v in y[tr_idx]])
    frozen, frozen_time = None, 0.0
    if {"sct_linear", "sct_knn"} & set(arms):
        t0 = time.perf_counter()
        net.to(device).eval()
        frozen = infer.pooled(
            net.module, data, pooling=pooling, layer=emb_layer, is_gene=net.vocab.is_gene,
            batch_size=batch_size, device=device, precision=precision,
        )  # fmt: skip
        frozen_time = time.perf_counter() - t0
    for name in arms:
        method = name.removeprefix("sct_")
        t0 = time.perf_counter()
        args = {k: v for k, v in kw.items()
                if method == "finetune" or k in ("n_neighbors", "class_weight")}  # fmt: skip
        annot = fit_annotator(
            net, data.subset(tr_idx), y_tr, classes, classes, method=method, pooling=pooling,
            layer=emb_layer, batch_key=batch_key, batch_size=batch_size, precision=precision,
            device=device, seed=seed,
            embeddings=None if frozen is None else frozen[tr_idx], **args,
        )  # fmt: skip
        if method == "finetune":
            proba = annot.proba_arrays(
                data.subset(te_idx), batch_size=batch_size, device=device, precision=precision
            )
            extra = 0.0
        else:
            proba = annot.proba_from_embeddings(frozen[te_idx])
            extra = frozen_time
        pred = np.asarray(classes, dtype=object)[proba.argmax(1)]
        params = {"method": method, **args}
        if method == "linear":
            params["C"] = "cv over [0.01, 0.1, 1, 10]"
        yield name, pred, extra + time.perf_counter() - t0, params


def summary(adata: AnnData, *, key: str = "sct_benchmark") -> pd.DataFrame:
    """The benchmark as a wide table: one row per method, one column per overall metric."""
    t = _table(adata, key)
    t = t[t["metric"].isin(METRICS)]
    wide = t.pivot_table(index=["method", "family"], columns="metric", values="value", sort=False)
    return wide.reset_index().set_index("method")[["family", *METRICS]]


def _table(adata: AnnData, key: str) -> pd.DataFrame:
    entry = adata.uns.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("table"), pd.DataFrame):
        return entry["table"]
    raise ValueError(f"uns[{key!r}]['table'] not found; run sct.tl.benchmark first")
