"""``sct.tl.benchmark``: transformer arms against tuned classical baselines, on shared splits,
over several seeds, with the label-prediction, embedding and integration tasks of the field's
benchmarks (cz-benchmarks, scIB).

The front door and its choice of methods; the checks, splits, arms, scores and tables live in
the ``_benchmark_*`` modules beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from anndata import AnnData

from .. import logging as logg
from ..models._model import record_params
from ._baselines import (
    ALIASES,
    BASELINES,
    EMBEDDINGS,
    TRANSFORMER,
    classification_metrics,
    has_scvi,
)
from ._benchmark_arms import cell_inputs, label_rows, prepared_model, representation, timed_latent
from ._benchmark_checks import check_data, check_seeds, check_tasks
from ._benchmark_scores import embedding_rows
from ._benchmark_splits import (
    integration_batches,
    labelled_cells,
    run_head,
    scored_methods,
    scored_subset,
    seed_splits,
    write_split,
)
from ._benchmark_tables import COLUMNS, summarise, summary, to_czbenchmarks
from ._common import copy_of, resolve_device

__all__ = [
    "benchmark",
    "classification_metrics",
    "default_methods",
    "summary",
    "to_czbenchmarks",
]


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
    seeds = check_seeds(seed, seeds, n_seeds)
    check_data(adata, labels_key, split_key, test_groups, layer, test_size, cv, n_folds,
               test_adata, n_neighbors, scvi_epochs, max_cells, leiden_resolutions)  # fmt: skip
    methods = _check_methods(methods, model)
    tasks, kw = check_tasks(adata, tasks, test_adata, batch_key, annotate_kwds)
    cells, cells_b, y, shared = labelled_cells(adata, labels_key, test_adata)
    label_methods, reps = scored_methods(methods, tasks)
    batches = (integration_batches(adata, cells, test_adata, cells_b, batch_key)
               if "integration" in tasks and reps else None)  # fmt: skip
    splits = {s: seed_splits(adata, cells, y, split_key, test_groups, test_size, n_folds,
                             test_adata, s) for s in seeds}  # fmt: skip
    arms = [m for m in label_methods if m in TRANSFORMER]
    baselines = [m for m in label_methods if m in BASELINES]
    match = dict(gene_key=gene_key, min_gene_fraction=min_gene_fraction)
    net = None
    if arms or "sct" in reps:
        net = prepared_model(model, adata, test_adata, kw, batch_key=batch_key,
                             min_genes=min_genes, **match)  # fmt: skip
    run = None
    if net is not None:
        run = net.inference(batch_size=batch_size, device=device, precision=precision,
                            layer=kw["layer"], pooling=kw["pooling"])  # fmt: skip
    dev = resolve_device(device) if run is None else run.device

    n_runs = sum(len(v) for v in splits.values())
    start = logg.info(
        f"benchmarking {len(methods)} methods on {len(y)} labelled cells, {len(seeds)} seed(s), "
        f"{n_runs} split(s)"
    )
    inp = cell_inputs(
        adata, cells, test_adata, cells_b, shared, y, net, run,
        need_x=bool(baselines) or "pca" in reps or "scvi" in reps,
        need_frozen=bool({"sct_linear", "sct_knn"} & set(arms)) or "sct" in reps, layer=layer,
        batch_key=batch_key, **match,
    )  # fmt: skip
    scored = scored_subset(len(y), max_cells, seeds[0])
    settings = dict(n_top_genes=n_top_genes, n_pcs=n_pcs)
    rows: list[dict] = []
    bar = logg.progress(total=len(seeds), desc="benchmark", unit="seed")
    for s in seeds:
        latent, scvi_time = None, 0.0
        if "scvi_logreg" in baselines or "scvi" in reps:
            latent, scvi_time = timed_latent(inp, batches, n_top_genes=n_top_genes,
                                             epochs=scvi_epochs, seed=s, device=dev)  # fmt: skip
        for fold, tr_idx, te_idx in splits[s]:
            base = {"task": "label_prediction", **run_head(dataset, s, fold, tr_idx, te_idx)}
            rows += label_rows(
                inp, latent, scvi_time, tr_idx, te_idx, baselines, arms, kw, base, run, cv=cv,
                batch_key=batch_key, seed=s, **settings,
            )  # fmt: skip
        for rep in reps:
            rows += embedding_rows(
                rep, representation(rep, inp, latent, seed=s, **settings)[scored], y[scored],
                None if batches is None else batches[scored], tasks, n_neighbors=n_neighbors,
                resolutions=leiden_resolutions, seed=s,
                head=run_head(dataset, s, -1, scored[:0], scored),
            )  # fmt: skip
        bar.update(1)
    bar.close()

    table = pd.DataFrame(rows, columns=COLUMNS)
    adata = copy_of(adata) if copy else adata
    if test_adata is None:
        write_split(adata, cells, splits[seeds[0]], n_folds=n_folds, key_added=key_added)
    params = record_params(
        net, device=dev, seed=seeds[0], seeds=[int(s) for s in seeds], labels_key=labels_key,
        split_key=split_key, test_groups=[] if test_groups is None else [str(g) for g in test_groups],
        test_size=float(test_size), n_folds=0 if n_folds is None else int(n_folds),
        test_adata=test_adata is not None, n_shared_genes=len(shared),
        methods=methods, tasks=tasks,
        n_top_genes=int(n_top_genes), n_pcs=int(n_pcs), cv=int(cv), batch_key=batch_key,
        scvi_epochs=int(scvi_epochs), n_neighbors=int(n_neighbors),
        leiden_resolutions=[float(r) for r in leiden_resolutions], max_cells=int(max_cells),
        dataset=dataset, gene_key=gene_key, min_gene_fraction=min_gene_fraction,
    )  # fmt: skip
    adata.uns[key_added] = {"table": table, "summary": summarise(table), "params": params}
    obs_key = "" if test_adata is not None else (
        f", obs['{key_added}_{'split' if n_folds is None else 'fold'}']")  # fmt: skip
    logg.info("    finished", time=start, deep=f"added uns[{key_added!r}]{obs_key}")
    return adata if copy else None


def _check_methods(methods, model) -> list[str]:
    """The methods asked for (``None``: every one that is installed), checked."""
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
    return methods
