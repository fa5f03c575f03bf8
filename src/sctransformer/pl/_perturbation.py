"""``sct.pl.perturbation``: how far each in silico perturbation moved the cells."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import doc_params, doc_show_save_ax
from ._utils import check_return_fig, check_save, finish


@doc_params(doc_show_save_ax=doc_show_save_ax)
def perturbation(
    adata: AnnData,
    *,
    metric: str = "cell_shift",
    key: str = "sct_perturb",
    ax=None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool | None = None,
):
    """Bars per gene (one group) or a genes × groups heatmap of a perturbation metric.

    Parameters
    ----------
    adata
        AnnData with ``uns["sct_perturb"]["table"]`` from :func:`sctransformer.tl.in_silico_perturb`.
    metric
        A column of that table: ``"cell_shift"``, ``"gene_shift"`` or ``"target_shift"``.
    key
        ``uns`` key of the table.
    {doc_show_save_ax}

    Returns
    -------
    ``None`` when the figure is shown, else the Axes.
    """
    import matplotlib.pyplot as plt

    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("table"), pd.DataFrame):
        raise ValueError(
            f"uns[{key!r}]['table'] is not a perturbation table; run sct.tl.in_silico_perturb"
        )
    table = entry["table"]
    if metric not in table.columns:
        options = [c for c in ("cell_shift", "gene_shift", "target_shift") if c in table.columns]
        raise ValueError(f"metric {metric!r} is not in uns[{key!r}]; available: {options}")
    save = check_save(save)
    return_fig = check_return_fig(return_fig, "perturbation")
    wide = table.pivot_table(index="gene", columns="group", values=metric, sort=False)
    mode = str(table["mode"].iloc[0]) if len(table) else ""
    label = f"{metric.replace('_', ' ')} ({mode})"
    n_genes, n_groups = wide.shape
    own_figure = ax is None
    if own_figure:
        fig, ax = plt.subplots(figsize=(max(3.5, 0.6 * n_groups + 2.5), 0.35 * n_genes + 1.4))
    else:
        fig = ax.figure
    if n_groups == 1:
        values = wide.iloc[:, 0].sort_values(ascending=False)
        ax.barh(range(len(values)), values.to_numpy(), color="C0")
        sem = f"{metric}_sem"
        if sem in table.columns:
            err = table.set_index("gene")[sem].reindex(values.index).to_numpy()
            ax.errorbar(values.to_numpy(), range(len(values)), xerr=err, fmt="none", c="k", lw=0.8)
        ax.set_yticks(range(len(values)), values.index)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.spines[["top", "right"]].set_visible(False)
    else:
        v = wide.to_numpy(dtype=float)
        diverging = metric == "target_shift"
        lim = np.nanmax(np.abs(v)) if np.isfinite(v).any() else 1.0
        im = ax.imshow(
            v,
            aspect="auto",
            cmap="RdBu_r" if diverging else "viridis",
            vmin=-lim if diverging else None,
            vmax=lim if diverging else None,
        )
        ax.set_xticks(range(n_groups), wide.columns, rotation=90)
        ax.set_yticks(range(n_genes), wide.index)
        ax.grid(False)  # a style's grid would cut through the cells
        fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    if own_figure:
        fig.tight_layout()
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)
