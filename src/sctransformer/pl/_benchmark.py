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
    """Horizontal bars of each method's score, transformer arms and baselines in two colours.

    Parameters
    ----------
    adata
        AnnData with ``uns["sct_benchmark"]["table"]`` from :func:`sctransformer.tl.benchmark`.
    metrics
        Overall metrics to draw, one panel each: ``"macro_f1"``, ``"accuracy"``,
        ``"balanced_accuracy"``, ``"time_s"``.
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
    table = entry["table"]
    overall = table[table["label"] == ""]
    known = sorted(set(overall["metric"]))
    bad = [m for m in metrics if m not in known]
    if bad or not metrics:
        raise ValueError(f"metrics {bad} not in uns[{key!r}]; available: {known}")
    if ax is not None and len(metrics) != 1:
        raise ValueError("ax= draws one metric; pass a single metric or no ax")
    save = check_save(save)
    return_fig = check_return_fig(return_fig, "benchmark")
    wide = overall.pivot_table(index=["method", "family"], columns="metric", values="value")
    wide = wide.reset_index()
    if sort:
        wide = wide.sort_values(metrics[0], ascending=metrics[0] == "time_s")
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
        a.barh(list(y), wide[metric], color=[colours.get(f, "0.5") for f in wide["family"]])
        for yi, v in zip(y, wide[metric], strict=True):
            a.text(v, yi, f" {v:.2f}", va="center", fontsize=8)
        a.set_yticks(list(y), wide["method"])
        a.invert_yaxis()
        a.set_xlabel(metric.replace("_", " "))
        if metric != "time_s":
            a.set_xlim(0, 1.15)
        a.spines[["top", "right"]].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    axes[-1].legend(handles, list(colours), frameon=False, loc="lower right", fontsize=8)
    if ax is None:
        fig.tight_layout()
    result = axes[0] if len(axes) == 1 else fig
    return finish(fig, result, show=show, save=save, return_fig=return_fig)
