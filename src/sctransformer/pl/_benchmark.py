"""``sct.pl.benchmark``: bar chart of the classifier comparison."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd
from anndata import AnnData

from .._docs import doc_params, doc_show_save
from ._utils import check_return_fig, check_save, finish


@doc_params(doc_show_save=doc_show_save)
def benchmark(
    adata: AnnData,
    *,
    metrics: str | Sequence[str] = ("macro_f1", "accuracy"),
    key: str = "sct_benchmark",
    sort: bool = True,
    ax=None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool | None = None,
):
    """Horizontal bars of each method's mean score with its spread over seeds (± std).

    Transformer arms and baselines are drawn in two colours; methods that were not scored on a
    metric (e.g. a representation on a label metric) are left out of its panel.

    Parameters
    ----------
    adata
        AnnData with ``uns["sct_benchmark"]`` from :func:`sctransformer.tl.benchmark` (its
        ``"summary"`` of mean and std over seeds, else its ``"table"``).
    metrics
        Metrics to draw, one panel each: label prediction's ``"macro_f1"``, ``"accuracy"``,
        ``"balanced_accuracy"``, ``"auroc"``, ``"time_s"``; embedding's ``"leiden_ari"``,
        ``"leiden_nmi"``, ``"asw_label"``; integration's ``"asw_batch"``, ``"ilisi"``, …
    key
        ``uns`` key of the table.
    sort
        Order methods by the first metric.
    ax
        Draw the (single) metric into this Axes.
    {doc_show_save}

    Returns
    -------
    ``None`` when the figure is shown; otherwise the Axes for one metric, the Figure for
    several.
    """
    import matplotlib.pyplot as plt

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("table"), pd.DataFrame):
        raise ValueError(
            f"uns[{key!r}]['table'] is not a benchmark table; run sct.tl.benchmark first"
        )
    stats = _mean_std(entry)
    known = sorted(set(stats["metric"]))
    bad = [m for m in metrics if m not in known]
    if bad or not metrics:
        raise ValueError(f"metrics {bad} not in uns[{key!r}]; available: {known}")
    if ax is not None and len(metrics) != 1:
        raise ValueError("ax= draws one metric; pass a single metric or no ax")
    save = check_save(save)
    return_fig = check_return_fig(return_fig, "benchmark")
    stats = stats[stats["metric"].isin(metrics)]
    mean = stats.pivot_table(index=["method", "family"], columns="metric", values="mean")
    std = stats.pivot_table(index=["method", "family"], columns="metric", values="std")
    mean, std = mean.reindex(columns=metrics), std.reindex(index=mean.index, columns=metrics)
    wide = mean.reset_index()
    if sort:
        wide = wide.sort_values(metrics[0], ascending=metrics[0] == "time_s", na_position="last")
    spread = std.reindex(pd.MultiIndex.from_frame(wide[["method", "family"]])).fillna(0.0)
    if ax is None:
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(3.2 * len(metrics) + 1, 0.35 * len(wide) + 1.2), sharey=True
        )
        axes = [axes] if len(metrics) == 1 else list(axes)
    else:
        fig, axes = ax.figure, [ax]
    colours = {"transformer": "C1", "baseline": "C0"}
    y = range(len(wide))
    for a, metric in zip(axes, metrics, strict=True):
        values, err = wide[metric].to_numpy(), spread[metric].to_numpy()
        a.barh(
            list(y), values, xerr=err, color=[colours.get(f, "0.5") for f in wide["family"]],
            error_kw={"elinewidth": 1, "capsize": 2},
        )  # fmt: skip
        for yi, v, e in zip(y, values, err, strict=True):
            if v == v:  # not NaN
                label = f" {v:.2f}" + (f" ± {e:.2f}" if e > 0 else "")
                a.text(v + e, yi, label, va="center", fontsize=8)
        a.set_yticks(list(y), wide["method"])
        a.invert_yaxis()
        a.set_xlabel(metric.replace("_", " "))
        if metric not in ("time_s", "ilisi"):
            a.set_xlim(0, 1.3)
        a.spines[["top", "right"]].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    axes[-1].legend(handles, list(colours), frameon=False, loc="lower right", fontsize=8)
    if ax is None:
        fig.tight_layout()
    result = axes[0] if len(axes) == 1 else fig
    return finish(fig, result, show=show, save=save, return_fig=return_fig)


def _mean_std(entry: dict) -> pd.DataFrame:
    """``method, family, metric, mean, std`` over seeds: the benchmark's summary, or computed
    from its table (seed means of fold means) when there is none.
    """
    summary = entry.get("summary")
    if isinstance(summary, pd.DataFrame) and {"mean", "std", "metric"} <= set(summary.columns):
        return summary[["method", "family", "metric", "mean", "std"]]
    t = entry["table"]
    t = t[t["label"] == ""]
    by = ["method", "family", "metric"]
    per_seed = t.groupby([*by, "seed"] if "seed" in t else by, observed=True)["value"].mean()
    out = per_seed.groupby(level=by, observed=True).agg(["mean", "std"]).reset_index()
    return out.fillna({"std": 0.0})
