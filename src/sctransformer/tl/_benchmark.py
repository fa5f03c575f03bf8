"""``sct.tl.benchmark``: transformer arms against tuned classical baselines, on shared splits,
over several seeds, with the label-prediction, embedding and integration tasks of the field's
benchmarks (cz-benchmarks, scIB).
"""

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
from . import _metrics
from ._annotator_fit import fit_annotator
from ._baselines import (
    ALIASES,
    BASELINES,
    EMBEDDINGS,
    METRICS,
    TRANSFORMER,
    _baseline,
    _counts,
    _hvg,
    _normalise,
    classification_metrics,
    has_scvi,
    pca_embedding,
    scvi_latent,
    split_cells,
)
from ._common import batch_values, copy_of, resolve_device
from ._sklearn import cv_splitter

__all__ = [
    "benchmark",
    "classification_metrics",
    "default_methods",
    "summary",
    "to_czbenchmarks",
]

TASKS = ("label_prediction", "embedding", "integration")
EMBEDDING_METRICS = ("leiden_ari", "leiden_nmi", "asw_label")
INTEGRATION_METRICS = ("asw_batch", "ilisi", "ilisi_scaled", "batch_entropy", "kbet_acceptance")
# our metric -> (cz-benchmarks task, cz-benchmarks MetricType value); cz-benchmarks'
# src/czbenchmarks/metrics/types.py names the metrics
CZ_METRICS = {
    ("label_prediction", "accuracy"): ("label_prediction", "mean_fold_accuracy"),
    ("label_prediction", "macro_f1"): ("label_prediction", "mean_fold_f1"),
    ("label_prediction", "auroc"): ("label_prediction", "mean_fold_auroc"),
    ("embedding", "leiden_ari"): ("clustering", "adjusted_rand_index"),
    ("embedding", "leiden_nmi"): ("clustering", "normalized_mutual_info"),
    ("embedding", "asw_label"): ("embedding", "silhouette_score"),
    ("integration", "batch_entropy"): ("batch_integration", "entropy_per_cell"),
    ("integration", "asw_batch"): ("batch_integration", "batch_silhouette"),
}


def has_xgboost() -> bool:
    import importlib.util

    return importlib.util.find_spec("xgboost") is not None


def default_methods(model) -> list[str]:
    """Every baseline (XGBoost and scVI when installed) and, with a model, every transformer
    arm; the representations ``pca`` (and ``scvi``, ``sct``) for the embedding tasks.
    """
    out = [m for m in BASELINES
           if (m != "xgboost" or has_xgboost()) and (m != "scvi_logreg" or has_scvi())]  # fmt: skip
    out += ["pca", *(["scvi"] if has_scvi() else [])]
    if model is not None:
        out.extend([*TRANSFORMER, "sct"])
    return out


def benchmark(
    adata: AnnData,
    *,
    labels_key: str,
    split_key: str | None = None,
    test_groups: Sequence[str] | None = None,
    test_size: float = 0.2,
    n_folds: int | None = None,
    test_adata: AnnData | None = None,
    methods: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    model=None,
    layer: str | None = None,
    n_top_genes: int = 2000,
    n_pcs: int = 50,
    cv: int = 3,
    batch_key: str | None = None,
    annotate_kwds: dict | None = None,
    scvi_epochs: int = 100,
    n_neighbors: int = 15,
    leiden_resolutions: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
    max_cells: int = 20000,
    batch_size: int = 32,
    precision: str = "auto",
    device: str = "auto",
    gene_key: str | None = None,
    min_gene_fraction: float = 0.2,
    min_genes: int = 50,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    n_seeds: int | None = None,
    dataset: str = "adata",
    key_added: str = "sct_benchmark",
    copy: bool = False,
) -> AnnData | None:
    """Compare cell-type classifiers and cell representations: transformer arms and baselines.

    Every method is trained on the same training cells and scored on the same test cells, for
    each seed and fold. Baselines are tuned by cross-validation on the training cells only (an
    untuned baseline is the unfair comparison the literature warns about); the test cells are
    touched once per split.

    Tasks (``tasks=None`` runs every one that applies):

    ``"label_prediction"``
        Classifiers trained on the training cells, scored on the test cells: accuracy, macro-F1,
        balanced accuracy, one-vs-rest macro AUROC from the predicted probabilities, seconds,
        and per-class F1. Splits: one stratified split (``test_size``), ``n_folds``-fold
        stratified cross-validation (every labelled cell is tested once per seed), groups of
        ``split_key`` held out (cross-batch / cross-donor transfer), or every cell of
        ``test_adata`` (a held-out data set).
    ``"embedding"``
        Representations (``pca``, ``scvi``, ``sct``) of all labelled cells (with
        ``test_adata``: of both data sets), scored without training on labels as scIB does:
        Leiden clusters of scanpy's kNN graph at the resolution of ``leiden_resolutions`` whose
        clusters match the labels best (by NMI), their ARI and NMI against the labels, and the
        label silhouette scaled to ``(s + 1) / 2``.
    ``"integration"``
        With ``batch_key`` (or with ``test_adata``, whose cells then form the second batch):
        batch silhouette per label as ``1 - |s|`` averaged over labels, iLISI over
        ``n_neighbors`` neighbours (raw, 1 to the number of batches, and scaled to 0–1),
        normalised batch entropy, and a kBET-style acceptance rate (chi-squared test of each
        neighbourhood's batch counts at level 0.05). Label conservation is the embedding
        task's rows of the same representation.

    Methods (``methods=None`` runs every one that applies):

    ``"majority"``
        The most frequent training label (the floor every method must clear).
    ``"logreg_l2"``, ``"logreg_l1"``
        Logistic regression with an L2 or L1 penalty on standardised log-normalised highly
        variable genes (genes chosen on the training cells; ``C`` tuned). ``"logreg_hvg"`` is
        the L2 model's earlier name.
    ``"pca_logreg"``, ``"pca_knn"``
        PCA (fit on the training cells) + logistic regression (``C`` tuned) or k-nearest
        neighbours (``k`` tuned).
    ``"xgboost"``
        Gradient-boosted trees on the same genes (depth and rounds tuned); only when the
        ``xgboost`` package is installed.
    ``"scvi_logreg"``
        Logistic regression (``C`` tuned) on scVI's latent space; only when ``scvi-tools`` is
        installed (``pip install sctransformer[scvi]``).
    ``"sct_linear"``, ``"sct_knn"``, ``"sct_finetune"``
        ``model`` with :func:`sctransformer.tl.annotate`'s ``method="linear"``, ``"knn"`` and
        ``"finetune"`` (needs ``model``).
    ``"pca"``, ``"scvi"``, ``"sct"``
        Representations for the embedding and integration tasks: scanpy's PCA of the
        highly variable genes (fit on ``adata``'s labelled cells), scVI's latent space
        (trained without labels on every scored cell for ``scvi_epochs`` epochs, with
        ``batch_key`` as its batch covariate) and ``model``'s frozen cell embedding.

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
        Without ``split_key``, ``n_folds`` or ``test_adata``: the share of cells held out,
        stratified by label (a new split per seed).
    n_folds
        k-fold cross-validation instead of one split: stratified folds, reshuffled per seed.
    test_adata
        A second data set (counts, the same ``labels_key``): methods train on ``adata``'s
        labelled cells and are scored on ``test_adata``'s (the baselines on the genes both
        share). Nothing is written to ``test_adata``.
    methods
        Names from the list above.
    tasks
        Names from the list above.
    model
        A model (object, registry name or folder) for the transformer arms.
    layer
        Counts layer (default ``X``; also read from ``test_adata``).
    n_top_genes, n_pcs, cv
        Baseline features and the folds of the baselines' tuning.
    batch_key
        ``obs`` column of batches: batch tokens of the transformer arms, scVI's batch
        covariate and the batches of the integration task.
    annotate_kwds
        Extra arguments of the transformer arms (e.g. ``{"epochs": 5, "freeze": True}``).
    scvi_epochs
        scVI's training epochs.
    n_neighbors
        Neighbourhood size of the Leiden graph, iLISI, entropy and kBET.
    leiden_resolutions
        The resolutions tried for the embedding task.
    max_cells
        The embedding and integration tasks score a seeded random subset of this many cells
        when there are more.
    batch_size, precision, device
        As in :func:`sctransformer.tl.annotate`.
    gene_key, min_gene_fraction, min_genes
        How the data's genes are matched to the model's vocabulary, as in
        :func:`sctransformer.tl.annotate`.
    seed, seeds, n_seeds
        The seeds of splits, tuning, training and clustering: ``seeds`` (a list), else
        ``n_seeds`` seeds counted up from ``seed``, else ``seed`` alone.
    dataset
        The data set's name in the table (for :func:`to_czbenchmarks`).
    key_added
        Prefix of the keys written.
    copy
        Work on a copy.

    Returns
    -------
    ``None`` or the copy. Writes:

    ``uns["sct_benchmark"]["table"]``
        Tidy DataFrame, one row per seed × fold × task × method × metric (× class for
        ``"f1"``): ``dataset``, ``task``, ``method``, ``family`` (``"baseline"`` /
        ``"transformer"``), ``metric``, ``label`` (the class for ``f1``, else ``""``),
        ``value``, ``seed``, ``fold`` (-1 for the embedding and integration tasks),
        ``n_train``, ``n_test`` (cells scored), ``split_sha`` (the same for every method of a
        seed and fold: the split is shared) and ``best_params`` (JSON).
    ``uns["sct_benchmark"]["summary"]``
        One row per task × method × metric: ``mean``, ``std`` and ``n`` (the spread over
        seeds of each seed's mean over folds; over folds with one seed; 0 with one run) and
        ``spread_over`` (``"seeds"``, ``"folds"`` or ``"none"``).
    ``obs["sct_benchmark_split"]``
        ``"train"``, ``"test"`` or ``"unlabelled"`` (one split: the first seed's); with
        ``n_folds``, ``obs["sct_benchmark_fold"]`` instead (the first seed's test fold of each
        cell, -1 unlabelled). Nothing in ``obs`` with ``test_adata``.
    ``uns["sct_benchmark"]["params"]``
        The call's settings, with model name, weights sha256, version, device and seeds.
    """
    seeds = _seeds(seed, seeds, n_seeds)
    methods, tasks, kw = _check_args(
        adata, labels_key, split_key, test_groups, layer, test_size, cv, methods, model,
        annotate_kwds, n_folds, test_adata, tasks, batch_key, n_neighbors, leiden_resolutions,
        scvi_epochs, max_cells,
    )  # fmt: skip
    labels_col = adata.obs[labels_key]
    cells = np.flatnonzero(labels_col.notna().to_numpy())
    y = labels_col.astype(str).to_numpy()[cells]
    n_a = len(cells)
    cells_b = np.zeros(0, dtype=np.int64)
    if test_adata is not None:
        col_b = test_adata.obs[labels_key]
        cells_b = np.flatnonzero(col_b.notna().to_numpy())
        if len(cells_b) == 0:
            raise ValueError(f"test_adata.obs[{labels_key!r}] has no labelled cells")
        y = np.concatenate([y, col_b.astype(str).to_numpy()[cells_b]])
        shared = adata.var_names.intersection(test_adata.var_names)
        if len(shared) == 0:
            raise ValueError(
                "test_adata shares no genes (var_names) with adata; give both the same gene "
                "identifiers (e.g. both Ensembl ids or both symbols)"
            )
    if len(set(y[:n_a])) < 2:
        raise ValueError(f"obs[{labels_key!r}] needs at least 2 classes, has {sorted(set(y))}")
    label_methods = [m for m in methods if m not in EMBEDDINGS]
    reps = [m for m in methods if m in EMBEDDINGS]
    if "label_prediction" not in tasks:
        label_methods = []
    if not {"embedding", "integration"} & set(tasks):
        reps = []
    if not label_methods and not reps:
        raise ValueError(
            f"methods {methods} have nothing to score in tasks {tasks}: label_prediction scores "
            f"classifiers, embedding and integration score {list(EMBEDDINGS)}"
        )
    batches = None
    if "integration" in tasks and reps:
        batches = _integration_batches(adata, cells, test_adata, cells_b, batch_key)
    splits = {s: _splits(adata, cells, y, n_a, split_key, test_groups, test_size, n_folds,
                         test_adata, s) for s in seeds}  # fmt: skip
    arms = [m for m in label_methods if m in TRANSFORMER]
    match = dict(gene_key=gene_key, min_gene_fraction=min_gene_fraction)
    net = None
    if arms or "sct" in reps:
        net = resolve(model)
        kw["pooling"], kw["layer"] = net.pooling(kw.get("pooling")), net.layer(kw.get("layer"))
        net.check_genes(adata, min_genes=min_genes, **match)
        if test_adata is not None:
            net.check_genes(test_adata, what="test_adata", min_genes=min_genes, **match)
        if batch_key is not None:
            values = batch_values(adata, batch_key)
            if test_adata is not None:
                values = np.concatenate([values, batch_values(test_adata, batch_key,
                                                              what="test_adata")])  # fmt: skip
            net, _ = net.with_batch_tokens(values)
    dev = resolve_device(device)

    n_runs = sum(len(v) for v in splits.values())
    start = logg.info(
        f"benchmarking {len(methods)} methods on {len(y)} labelled cells, {len(seeds)} seed(s), "
        f"{n_runs} split(s)"
    )
    rows: list[dict] = []
    base_methods = [m for m in label_methods if m in BASELINES]
    need_x = base_methods or "pca" in reps or "scvi" in reps
    x = counts = None
    prep = 0.0
    if need_x:
        t0 = time.perf_counter()
        counts = _counts(adata, cells, layer)
        if test_adata is not None:
            import scipy.sparse as sp

            ia = adata.var_names.get_indexer(shared)
            ib = test_adata.var_names.get_indexer(shared)
            cb = _counts(test_adata, cells_b, layer)
            x = sp.vstack([_normalise(counts)[:, ia], _normalise(cb)[:, ib]]).tocsr()
            counts = sp.vstack([counts[:, ia], cb[:, ib]]).tocsr()
        else:
            x = _normalise(counts)
        prep = time.perf_counter() - t0
    frozen, frozen_time, data = None, 0.0, None
    if net is not None:
        t0 = time.perf_counter()
        data = [model_tokens(adata, net, cells=cells, batch_key=batch_key, **match)]
        if test_adata is not None:
            data.append(model_tokens(test_adata, net, cells=cells_b, batch_key=batch_key, **match))
        if {"sct_linear", "sct_knn"} & set(arms) or "sct" in reps:
            net.to(dev).eval()
            frozen = np.concatenate([
                infer.pooled(net.module, d, pooling=kw["pooling"], layer=kw["layer"],
                             is_gene=net.vocab.is_gene, batch_size=batch_size, device=dev,
                             precision=precision)
                for d in data
            ])  # fmt: skip
        frozen_time = time.perf_counter() - t0
    scored = np.arange(len(y))
    if len(scored) > max_cells:
        scored = np.sort(np.random.default_rng(seeds[0]).choice(len(y), max_cells, replace=False))

    bar = logg.progress(total=len(seeds), desc="benchmark", unit="seed")
    for s in seeds:
        latent = None
        if "scvi_logreg" in base_methods or "scvi" in reps:
            t0 = time.perf_counter()
            latent = scvi_latent(counts, x, None if batches is None else batches,
                                 n_top_genes=n_top_genes, epochs=scvi_epochs, seed=s,
                                 device=dev)  # fmt: skip
            scvi_time = time.perf_counter() - t0
        for fold, tr_idx, te_idx in splits[s]:
            base = {
                "dataset": dataset, "task": "label_prediction", "seed": int(s), "fold": fold,
                "n_train": len(tr_idx), "n_test": len(te_idx), "split_sha": _sha(tr_idx, te_idx),
            }  # fmt: skip
            if base_methods:
                for name, proba, classes, seconds, params in _run_baselines(
                    x, latent, y, tr_idx, te_idx, base_methods, n_top_genes=n_top_genes,
                    n_pcs=n_pcs, cv=cv, seed=s,
                ):  # fmt: skip
                    if name == "scvi_logreg":
                        seconds += scvi_time
                    rows += _rows(name, "baseline", y[te_idx], proba, classes, prep + seconds,
                                  params, base)  # fmt: skip
            if arms:
                for name, proba, classes, seconds, params in _run_transformer(
                    net, data, n_a, frozen, y, tr_idx, te_idx, arms, dict(kw),
                    batch_key=batch_key, batch_size=batch_size, precision=precision,
                    device=dev, seed=s,
                ):  # fmt: skip
                    rows += _rows(name, "transformer", y[te_idx], proba, classes,
                                  frozen_time + seconds, params, base)  # fmt: skip
        for rep in reps:
            if rep == "pca":
                emb = pca_embedding(x, np.arange(n_a), n_top_genes=n_top_genes, n_pcs=n_pcs,
                                    seed=s)  # fmt: skip
            else:
                emb = latent if rep == "scvi" else frozen
            rows += _embedding_rows(
                rep, emb[scored], y[scored], None if batches is None else batches[scored],
                tasks, n_neighbors=n_neighbors, resolutions=leiden_resolutions, seed=s,
                head={"dataset": dataset, "seed": int(s), "fold": -1, "n_train": 0,
                      "n_test": len(scored), "split_sha": _sha(scored[:0], scored)},
            )  # fmt: skip
        bar.update(1)
    bar.close()

    table = pd.DataFrame(rows, columns=COLUMNS)
    adata = copy_of(adata) if copy else adata
    if test_adata is None:
        _, tr_idx, te_idx = splits[seeds[0]][0]
        if n_folds is None:
            split = np.full(adata.n_obs, "unlabelled", dtype=object)
            split[cells[tr_idx]] = "train"
            split[cells[te_idx]] = "test"
            adata.obs[f"{key_added}_split"] = pd.Categorical(
                split, categories=["train", "test", "unlabelled"]
            )
        else:
            fold_of = np.full(adata.n_obs, -1, dtype=np.int64)
            for fold, _, te in splits[seeds[0]]:
                fold_of[cells[te]] = fold
            adata.obs[f"{key_added}_fold"] = fold_of
    params = record_params(
        net, device=dev, seed=seeds[0], seeds=[int(s) for s in seeds], labels_key=labels_key,
        split_key=split_key, test_groups=[] if test_groups is None else [str(g) for g in test_groups],
        test_size=float(test_size), n_folds=0 if n_folds is None else int(n_folds),
        test_adata=test_adata is not None,
        n_shared_genes=int(len(shared) if test_adata is not None else adata.n_vars),
        methods=methods, tasks=tasks,
        n_top_genes=int(n_top_genes), n_pcs=int(n_pcs), cv=int(cv), batch_key=batch_key,
        scvi_epochs=int(scvi_epochs), n_neighbors=int(n_neighbors),
        leiden_resolutions=[float(r) for r in leiden_resolutions], max_cells=int(max_cells),
        dataset=dataset, gene_key=gene_key, min_gene_fraction=min_gene_fraction,
    )  # fmt: skip
    adata.uns[key_added] = {"table": table, "summary": _summarise(table), "params": params}
    obs_key = "" if test_adata is not None else (
        f", obs['{key_added}_{'split' if n_folds is None else 'fold'}']")  # fmt: skip
    logg.info("    finished", time=start, deep=f"added uns[{key_added!r}]{obs_key}")
    return adata if copy else None


COLUMNS = [
    "dataset", "task", "method", "family", "metric", "label", "value", "seed", "fold",
    "n_train", "n_test", "split_sha", "best_params",
]  # fmt: skip
ANNOTATE_KWDS = {
    "freeze", "epochs", "lr", "encoder_lr", "weight_decay", "class_weight",
    "validation_fraction", "patience", "n_neighbors", "pooling", "layer",
}  # fmt: skip


def _seeds(seed, seeds, n_seeds) -> list[int]:
    if seeds is not None and n_seeds is not None:
        raise ValueError("give seeds= or n_seeds=, not both")
    if seeds is not None:
        seeds = [seeds] if isinstance(seeds, int | np.integer) else list(seeds)
        if not seeds:
            raise ValueError("seeds is empty; give at least one seed, e.g. seeds=[0, 1, 2]")
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int | np.integer)]
        if bad:
            raise ValueError(f"seeds must be integers, got {bad}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds} repeat a seed; each seed must be given once")
        return [int(s) for s in seeds]
    if n_seeds is not None:
        if isinstance(n_seeds, bool) or not isinstance(n_seeds, int | np.integer) or n_seeds < 1:
            raise ValueError(f"n_seeds must be a positive integer, got {n_seeds!r}")
        return [int(seed) + i for i in range(n_seeds)]
    return [int(seed)]


def _check_args(adata, labels_key, split_key, test_groups, layer, test_size, cv, methods, model,
                annotate_kwds, n_folds, test_adata, tasks, batch_key, n_neighbors,
                resolutions, scvi_epochs, max_cells) -> tuple[list[str], list[str], dict]:  # fmt: skip
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
    if n_folds is not None:
        if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
            raise ValueError(f"n_folds must be an integer of at least 2, got {n_folds!r}")
        if split_key is not None:
            raise ValueError("n_folds and split_key are two ways to split; give one of them")
    if test_adata is not None:
        if not isinstance(test_adata, AnnData):
            raise ValueError(f"test_adata must be an AnnData, got {type(test_adata).__name__}")
        if split_key is not None or n_folds is not None:
            raise ValueError("test_adata is the test set; drop split_key and n_folds")
        _validate.check_nonempty(test_adata)
        _validate.check_key(test_adata.obs, labels_key, where="test_adata.obs")
        if layer is not None:
            _validate.check_key(test_adata.layers, layer, where="test_adata.layers")
    for name, v in {"n_neighbors": n_neighbors, "scvi_epochs": scvi_epochs,
                    "max_cells": max_cells}.items():  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    res = list(resolutions)
    if not res or any(not np.isfinite(r) or r <= 0 for r in res):
        raise ValueError(f"leiden_resolutions must be positive numbers, got {res}")
    methods = [ALIASES.get(m, m) for m in (default_methods(model) if methods is None else methods)]
    known = list(BASELINES + TRANSFORMER + EMBEDDINGS)
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}; use some of {known}")
    methods = list(dict.fromkeys(methods))
    if "xgboost" in methods and not has_xgboost():
        raise ValueError("method 'xgboost' needs the xgboost package: pip install xgboost")
    scvi_wanted = [m for m in methods if m in ("scvi", "scvi_logreg")]
    if scvi_wanted and not has_scvi():
        raise ValueError(
            f"methods {scvi_wanted} need scvi-tools: pip install 'sctransformer[scvi]'"
        )
    arms = [m for m in methods if m in (*TRANSFORMER, "sct")]
    if arms and model is None:
        raise ValueError(f"methods {arms} need model=")
    integrable = batch_key is not None or test_adata is not None
    if tasks is None:
        tasks = [t for t in TASKS if t != "integration" or integrable]
    else:
        tasks = [tasks] if isinstance(tasks, str) else list(dict.fromkeys(tasks))
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks:
            raise ValueError(f"unknown tasks {bad}; use some of {list(TASKS)}")
        if "integration" in tasks and not integrable:
            raise ValueError("task 'integration' needs batch_key= (or test_adata=)")
    if batch_key is not None:
        batch_values(adata, batch_key)
        if test_adata is not None:
            batch_values(test_adata, batch_key, what="test_adata")
    kw = dict(annotate_kwds or {})
    bad = sorted(set(kw) - ANNOTATE_KWDS)
    if bad:
        raise ValueError(f"annotate_kwds {bad} not understood; use some of {sorted(ANNOTATE_KWDS)}")
    return methods, tasks, kw


def _integration_batches(adata, cells, test_adata, cells_b, batch_key) -> np.ndarray:
    """The batch of each labelled cell: ``obs[batch_key]``, else the data set it comes from."""
    if batch_key is None:
        return np.array(["adata"] * len(cells) + ["test_adata"] * len(cells_b), dtype=object)
    out = batch_values(adata, batch_key)[cells]
    if test_adata is not None:
        out = np.concatenate([out, batch_values(test_adata, batch_key, what="test_adata")[cells_b]])
    if len(set(out)) < 2:
        raise ValueError(
            f"obs[{batch_key!r}] has one batch among the labelled cells; the integration task "
            "needs at least two (or leave it out with tasks=['label_prediction', 'embedding'])"
        )
    return out


def _splits(adata, cells, y, n_a, split_key, test_groups, test_size, n_folds, test_adata, seed):
    """``[(fold, train indices, test indices)]`` over the labelled cells (those of ``adata``,
    then those of ``test_adata``).
    """
    if test_adata is not None:
        return [(0, np.arange(n_a), np.arange(n_a, len(y)))]
    if n_folds is not None:
        if n_folds > len(y):
            raise ValueError(f"n_folds={n_folds} exceeds the {len(y)} labelled cells")
        splitter = cv_splitter(y, n_folds, seed)
        return [(f, tr, te) for f, (tr, te) in enumerate(splitter.split(np.zeros(len(y)), y))]
    test = split_cells(
        adata.obs.iloc[cells], y, split_key=split_key, test_groups=test_groups,
        test_size=test_size, seed=seed,
    )  # fmt: skip
    return [(0, np.flatnonzero(~test), np.flatnonzero(test))]


def _sha(tr_idx, te_idx) -> str:
    h = hashlib.sha256(np.asarray(tr_idx, dtype=np.int64).tobytes())
    h.update(b"|" + np.asarray(te_idx, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _rows(name, family, y_true, proba, classes, seconds, params, base) -> list[dict]:
    """Tidy rows of one classifier on one split: overall metrics, time and per-class F1."""
    pred = np.asarray(classes, dtype=object)[np.asarray(proba).argmax(1)]
    overall, f1 = classification_metrics(y_true, pred)
    overall["auroc"] = _metrics.auroc_ovr_macro(y_true, proba, classes)
    head = {
        "method": name,
        "family": family,
        **base,
        "best_params": json.dumps(params, default=str, sort_keys=True),
    }
    logg.hint(
        f"    {name} (seed {base['seed']}, fold {base['fold']}): macro-F1 "
        f"{overall['macro_f1']:.3f} ({seconds:.1f} s)"
    )
    out = [{**head, "metric": m, "label": "", "value": float(v)}
           for m, v in {**overall, "time_s": seconds}.items()]  # fmt: skip
    out += [{**head, "metric": "f1", "label": c, "value": float(v)} for c, v in f1.items()]
    return out


def _embedding_rows(rep, x, labels, batches, tasks, *, n_neighbors, resolutions, seed, head):
    """Rows of the embedding and integration tasks for one representation."""
    from ._integration import batch_mixing

    family = "transformer" if rep == "sct" else "baseline"
    out = []
    t0 = time.perf_counter()
    if "embedding" in tasks:
        best = _metrics.leiden_match(x, labels, resolutions=resolutions, n_neighbors=n_neighbors,
                                     seed=seed)  # fmt: skip
        params = json.dumps({"resolution": best["resolution"], "n_clusters": best["n_clusters"]})
        values = {
            "leiden_ari": best["ari"],
            "leiden_nmi": best["nmi"],
            "asw_label": _metrics.asw_label(x, labels),
        }
        out += [{**head, "task": "embedding", "method": rep, "family": family, "metric": m,
                 "label": "", "value": float(v), "best_params": params}
                for m, v in values.items()]  # fmt: skip
    if "integration" in tasks and batches is not None:
        entropy, ilisi = batch_mixing(x, batches, n_neighbors=n_neighbors)
        n_b = len(set(batches))
        values = {
            "asw_batch": _metrics.asw_batch(x, batches, labels),
            "ilisi": ilisi,
            "ilisi_scaled": (ilisi - 1) / (n_b - 1),
            "batch_entropy": entropy,
            "kbet_acceptance": _metrics.kbet_acceptance(x, batches, n_neighbors=n_neighbors),
        }
        params = json.dumps({"n_neighbors": int(n_neighbors), "n_batches": n_b})
        out += [{**head, "task": "integration", "method": rep, "family": family, "metric": m,
                 "label": "", "value": float(v), "best_params": params}
                for m, v in values.items()]  # fmt: skip
    logg.hint(f"    {rep} (seed {seed}): scored in {time.perf_counter() - t0:.1f} s")
    return out


def _run_baselines(x, latent, y, tr_idx, te_idx, names, *, n_top_genes, n_pcs, cv, seed):
    """Yield ``(name, test probabilities, classes, seconds, best parameters)`` per baseline."""
    t0 = time.perf_counter()
    xs = x[:, _hvg(x[tr_idx], n_top_genes)] if x is not None else None
    prep = time.perf_counter() - t0
    for name in names:
        t0 = time.perf_counter()
        feats = latent if name == "scvi_logreg" else xs
        proba_of, classes, params = _baseline(
            name, feats[tr_idx], y[tr_idx], cv=cv, n_pcs=n_pcs, seed=seed
        )
        proba = proba_of(feats[te_idx])
        extra = 0.0 if name == "scvi_logreg" else prep
        yield name, proba, classes, extra + time.perf_counter() - t0, params


def _tokens_of(data, n_a, idx):
    """Token arrays of combined cell indices that lie in one data set."""
    if len(data) == 1 or idx.max() < n_a:
        return data[0].subset(idx)
    return data[1].subset(idx - n_a)


def _run_transformer(net, data, n_a, frozen, y, tr_idx, te_idx, arms, kw, *, batch_key,
                     batch_size, precision, device, seed):  # fmt: skip
    """Yield ``(name, test probabilities, classes, seconds, parameters)`` per transformer arm."""
    pooling, emb_layer = kw.pop("pooling"), kw.pop("layer")
    classes = sorted(set(y[tr_idx]))
    code = {c: i for i, c in enumerate(classes)}
    y_tr = np.array([code[v] for v in y[tr_idx]])
    for name in arms:
        method = name.removeprefix("sct_")
        t0 = time.perf_counter()
        args = {k: v for k, v in kw.items()
                if method == "finetune" or k in ("n_neighbors", "class_weight")}  # fmt: skip
        annot = fit_annotator(
            net, _tokens_of(data, n_a, tr_idx), y_tr, classes, classes, method=method,
            pooling=pooling, layer=emb_layer, batch_key=batch_key, batch_size=batch_size,
            precision=precision, device=device, seed=seed,
            embeddings=None if frozen is None else frozen[tr_idx], **args,
        )  # fmt: skip
        if method == "finetune":
            proba = annot.proba_arrays(
                _tokens_of(data, n_a, te_idx), batch_size=batch_size, device=device,
                precision=precision,
            )  # fmt: skip
        else:
            proba = annot.proba_from_embeddings(frozen[te_idx])
        params = {"method": method, **args}
        if method == "linear":
            params["C"] = "cv over [0.01, 0.1, 1, 10]"
        yield name, proba, classes, time.perf_counter() - t0, params


def _summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread per task × method × metric: each seed's mean over folds, then the mean
    and standard deviation over seeds (over folds when there is one seed).
    """
    cols = ["task", "method", "family", "metric", "mean", "std", "n", "spread_over"]
    t = table[table["label"] == ""]
    if t.empty:
        return pd.DataFrame(columns=cols)
    keys = ["task", "method", "family", "metric"]
    out = []
    for k, g in t.groupby(keys, sort=False):
        per_seed = g.groupby("seed")["value"].mean()
        if len(per_seed) > 1:
            vals, over = per_seed.to_numpy(), "seeds"
        elif len(g) > 1:
            vals, over = g["value"].to_numpy(), "folds"
        else:
            vals, over = g["value"].to_numpy(), "none"
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        out.append([*k, float(per_seed.mean()), std, len(vals), over])
    return pd.DataFrame(out, columns=cols)


def summary(adata: AnnData, *, key: str = "sct_benchmark") -> pd.DataFrame:
    """The label-prediction benchmark as a wide table: one row per method, one column per
    overall metric (each the mean over seeds and folds).
    """
    t = _table(adata, key)
    t = t[t["metric"].isin(METRICS) & (t["label"] == "") & (t["task"] == "label_prediction")]
    wide = t.pivot_table(index=["method", "family"], columns="metric", values="value", sort=False)
    wide = wide.reset_index().set_index("method")
    return wide[["family", *[m for m in METRICS if m in wide.columns]]]


def to_czbenchmarks(adata: AnnData, *, key: str = "sct_benchmark", model_name: str | None = None,
                    ) -> pd.DataFrame:  # fmt: skip
    """The benchmark as a long table to put next to cz-benchmarks results.

    One row per data set × task × model × metric × seed, the value averaged over folds (as
    cz-benchmarks' ``mean_fold_*`` metrics are). Metrics with a cz-benchmarks counterpart take
    its name (``MetricType`` values) and task; the others keep this package's name and task.

    ==========================  ===================  ========================
    here (task, metric)         cz-benchmarks task   cz-benchmarks metric
    ==========================  ===================  ========================
    label_prediction accuracy   label_prediction     mean_fold_accuracy
    label_prediction macro_f1   label_prediction     mean_fold_f1
    label_prediction auroc      label_prediction     mean_fold_auroc
    embedding leiden_ari        clustering           adjusted_rand_index
    embedding leiden_nmi        clustering           normalized_mutual_info
    embedding asw_label         embedding            silhouette_score
    integration batch_entropy   batch_integration    entropy_per_cell
    integration asw_batch       batch_integration    batch_silhouette
    ==========================  ===================  ========================

    Parameters
    ----------
    adata
        AnnData with ``uns[key]`` from :func:`sctransformer.tl.benchmark`.
    key
        Its ``uns`` key.
    model_name
        Replaces ``"sct_*"`` method names' ``sct`` prefix (e.g. with the model's name).

    Returns
    -------
    DataFrame with ``dataset``, ``task``, ``model``, ``metric``, ``value``, ``seed``,
    ``n_folds``, ``sct_task`` and ``sct_metric`` (this package's names).
    """
    t = _table(adata, key)
    t = t[(t["label"] == "") & (t["metric"] != "time_s")]
    g = t.groupby(["dataset", "task", "method", "metric", "seed"], sort=False)["value"]
    out = g.agg(["mean", "size"]).reset_index()
    mapped = [CZ_METRICS.get((a, m), (a, m)) for a, m in zip(out["task"], out["metric"],
                                                            strict=True)]  # fmt: skip
    models = out["method"].astype(str)
    if model_name:
        models = models.str.replace(r"^sct(?=_|$)", model_name, regex=True)
    return pd.DataFrame({
        "dataset": out["dataset"].to_numpy(),
        "task": [a for a, _ in mapped],
        "model": models.to_numpy(),
        "metric": [m for _, m in mapped],
        "value": out["mean"].to_numpy(dtype=float),
        "seed": out["seed"].to_numpy(dtype=int),
        "n_folds": out["size"].to_numpy(dtype=int),
        "sct_task": out["task"].to_numpy(),
        "sct_metric": out["metric"].to_numpy(),
    })  # fmt: skip


def _table(adata: AnnData, key: str) -> pd.DataFrame:
    entry = adata.uns.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("table"), pd.DataFrame):
        return entry["table"]
    raise ValueError(f"uns[{key!r}]['table'] not found; run sct.tl.benchmark first")
