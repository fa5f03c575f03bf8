"""``sct.pl.attention_heads``: what each attention head looks at, among chosen genes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
from anndata import AnnData

from .._docs import doc_params, doc_show_save
from ._utils import check_return_fig, check_save, finish


def _stored_maps(adata: AnnData, key: str, genes, layers, heads) -> dict:
    """Per-head maps among ``genes`` from ``uns[key]["heads"]`` (kept by ``attention_grn``)."""
    from ..tl._attention_grn import resolve_heads

    if key not in adata.uns or "heads" not in adata.uns[key]:
        raise ValueError(
            f"uns[{key!r}]['heads'] not found: pass a model, or run "
            "sct.tl.attention_grn(adata, model, heads='all', top_k=None) first"
        )
    stored = adata.uns[key]["heads"]
    pairs = []
    for name in stored:
        lay, head = name.removeprefix("layer").split("_head")
        pairs.append((int(lay), int(head)))
    all_layers = sorted({p[0] for p in pairs})
    all_heads = sorted({p[1] for p in pairs})
    if isinstance(layers, str) and layers == "all":
        use_layers = all_layers
    else:
        seq = [layers] if np.isscalar(layers) else list(layers)
        use_layers = [all_layers[i] if i < 0 else i for i in seq]
    use_heads = all_heads if isinstance(heads, str) else resolve_heads(heads, max(all_heads) + 1)
    missing = [(la, h) for la in use_layers for h in use_heads if (la, h) not in pairs]
    if missing:
        raise ValueError(
            f"uns[{key!r}]['heads'] has no network for (layer, head) {missing[:5]}; it holds "
            f"{sorted(pairs)}"
        )
    genes = [genes] if isinstance(genes, str) else list(genes)
    pos = adata.var_names.get_indexer(genes)
    if (pos < 0).any():
        raise ValueError(f"genes not found in adata.var_names: {np.asarray(genes)[pos < 0][:10]}")
    maps = np.full((len(use_layers), len(use_heads), len(genes), len(genes)), np.nan)
    for i, la in enumerate(use_layers):
        for j, h in enumerate(use_heads):
            m = stored[f"layer{la}_head{h}"].tocsr()[pos][:, pos].tocoo()
            maps[i, j, m.row, m.col] = m.data
    return {"maps": maps, "layers": use_layers, "heads": use_heads, "genes": genes}


@doc_params(doc_show_save=doc_show_save)
def attention_heads(
    adata: AnnData,
    model=None,
    *,
    genes: Sequence[str],
    cells=None,
    layers: int | Sequence[int] | Literal["all"] = "all",
    heads: Literal["all"] | Sequence[int] = "all",
    normalize: Literal["rank", "softmax"] | None = "softmax",
    key: str = "sct_grn",
    batch_size: int = 16,
    device: str = "auto",
    tokens_key: str = "sct",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    panel_size: float = 2.4,
    ax=None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool | None = None,
):
    """Heatmaps of attention among ``genes``, one per layer (rows) and head (columns).

    Each panel shows the attention from a gene's token (row, query) to another gene's token
    (column, key), averaged over the chosen cells in which both genes are present (blank where
    they never met). All panels share one colour scale, so heads can be compared.

    Parameters
    ----------
    adata
        Cells × genes.
    model
        A model, registry name or checkpoint folder: the maps are computed now over ``cells``.
        ``None`` draws the per-head networks stored by
        ``sct.tl.attention_grn(adata, model, heads="all", top_k=None)`` in
        ``uns[key]["heads"]`` (edges dropped there by ``top_k`` are blank).
    genes
        The genes to show (``var_names``), in this order.
    cells
        Cells to average over: obs names, a boolean mask or positions; default all.
    layers
        ``"all"``, ``-1`` (last), ``1..n``, or a list of those.
    heads
        ``"all"`` or 0-based head indices.
    normalize
        ``"softmax"`` (attention probabilities), ``"rank"`` or ``None``, as in
        :func:`sctransformer.tl.attention_grn`.
    key
        ``uns`` key of stored networks (``model=None``).
    batch_size, device, tokens_key
        As in :func:`sctransformer.tl.attention_grn`.
    cmap, vmin, vmax
        Colour map and shared limits (default: the range over all panels).
    panel_size
        Inches per panel.
    ax
        Draw a single panel into this Axes; needs one layer and one head (``layers=-1,
        heads=[0]`` for example). A grid of several panels makes its own Figure.
    {doc_show_save}

    Returns
    -------
    ``None`` when the figure is shown; otherwise the Axes when one panel is drawn, the Figure
    for a grid of several.
    """
    import matplotlib.pyplot as plt

    if genes is None or (not isinstance(genes, str) and len(genes) == 0):
        raise ValueError("genes is required: the genes to show")
    if ax is not None:
        one_layer = isinstance(layers, int | np.integer) or (
            not isinstance(layers, str) and len(list(layers)) == 1
        )
        one_head = not isinstance(heads, str) and len(list(heads)) == 1
        if not (one_layer and one_head):
            raise ValueError(
                "ax= draws one panel: pass one layer and one head (e.g. layers=-1, heads=[0]), "
                "or omit ax to draw the grid"
            )
    save = check_save(save)
    return_fig = check_return_fig(return_fig, "attention_heads")
    if model is None:
        if cells is not None:
            raise ValueError("cells needs a model: stored networks are averages over all cells")
        res = _stored_maps(adata, key, genes, layers, heads)
    else:
        from ..tl._attention_grn import attention_maps

        res = attention_maps(
            adata,
            model,
            genes=genes,
            cells=cells,
            layers=layers,
            heads=heads,
            normalize=normalize,
            batch_size=batch_size,
            device=device,
            tokens_key=tokens_key,
        )
    maps, names = res["maps"], res["genes"]
    n_rows, n_cols = maps.shape[:2]
    finite = maps[np.isfinite(maps)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if ax is None:
        fig, axes = plt.subplots(
            n_rows,
            n_cols,
            figsize=(panel_size * n_cols + 1.2, panel_size * n_rows + 0.4),
            squeeze=False,
            sharex=True,
            sharey=True,
            layout="constrained",
        )
    else:
        fig, axes = ax.figure, np.array([[ax]])
    ticks = np.arange(len(names))
    image = None
    for i, layer in enumerate(res["layers"]):
        for j, head in enumerate(res["heads"]):
            panel = axes[i, j]
            image = panel.imshow(
                np.ma.masked_invalid(maps[i, j]), cmap=cmap, vmin=lo, vmax=hi, aspect="equal"
            )
            panel.set_title(f"layer {layer} · head {head}", fontsize=9)
            panel.set_xticks(ticks, labels=names, rotation=90, fontsize=7)
            panel.set_yticks(ticks, labels=names, fontsize=7)
            panel.tick_params(labelbottom=i == n_rows - 1, labelleft=j == 0)
            panel.grid(False)  # a style's grid would cut through the cells
    label = {"softmax": "attention", "rank": "rank-normalised attention", None: "score q·k/√d"}
    fig.colorbar(
        image, ax=axes if ax is None else ax, shrink=0.8, label=label.get(normalize, "attention")
    )
    if ax is None:
        fig.supylabel("query gene (row)", fontsize=9)
        fig.supxlabel("key gene (column)", fontsize=9)
    else:
        ax.set_ylabel("query gene (row)", fontsize=9)
        ax.set_xlabel("key gene (column)", fontsize=9)
    result = axes[0, 0] if axes.size == 1 else fig
    return finish(fig, result, show=show, save=save, return_fig=return_fig)
