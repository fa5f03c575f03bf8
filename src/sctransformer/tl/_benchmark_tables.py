"""The tables of ``sct.tl.benchmark``: the tidy table's columns, the summary over seeds and
folds, and the wide and cz-benchmarks views of a result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._baselines import METRICS

COLUMNS = [
    "dataset", "task", "method", "family", "metric", "label", "value", "seed", "fold",
    "n_train", "n_test", "split_sha", "best_params",
]  # fmt: skip
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


def summarise(table: pd.DataFrame) -> pd.DataFrame:
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
