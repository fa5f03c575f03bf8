"""``sct.pl.training_history``: the pretraining loss curve."""

from __future__ import annotations

import os

from anndata import AnnData

from .._docs import doc_params, doc_show_save_ax
from ._utils import check_return_fig, check_save, finish


@doc_params(doc_show_save_ax=doc_show_save_ax)
def training_history(
    adata: AnnData,
    *,
    key: str = "sct_pretrain",
    smooth: int = 10,
    ax=None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool | None = None,
):
    """Plot the loss (and learning rate) recorded by :func:`sctransformer.tl.pretrain`.

    Parameters
    ----------
    adata
        AnnData with ``uns[key]["history"]``.
    key
        ``uns`` key written by ``pretrain``.
    smooth
        Window of the running mean drawn over the raw loss.
    {doc_show_save_ax}

    Returns
    -------
    ``None`` when the figure is shown, else the loss Axes (the learning rate is on its twin,
    sharing the x axis).
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    if key not in adata.uns or "history" not in adata.uns[key]:
        raise ValueError(f"uns[{key!r}]['history'] not found; run sct.tl.pretrain first")
    hist = pd.DataFrame(adata.uns[key]["history"])
    if hist.empty:
        raise ValueError(f"uns[{key!r}]['history'] is empty")
    save = check_save(save)
    return_fig = check_return_fig(return_fig, "training_history")
    own_figure = ax is None
    fig = ax.figure if ax is not None else plt.figure(figsize=(5, 3.5))
    ax = ax or fig.add_subplot(111)
    ax.plot(hist["step"], hist["loss"], color="0.75", lw=0.8, label="loss")
    ax.plot(
        hist["step"],
        hist["loss"].rolling(max(1, smooth), min_periods=1).mean(),
        color="C0",
        label=f"running mean ({smooth})",
    )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("pretraining")
    ax.legend(frameon=False)
    lr_ax = ax.twinx()
    lr_ax.plot(hist["step"], hist["lr"], color="C1", lw=0.8, ls="--")
    lr_ax.set_ylabel("learning rate", color="C1")
    if own_figure:
        fig.tight_layout()
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)
