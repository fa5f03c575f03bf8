"""``sct.pl.grn``: draw an attention gene network."""

from __future__ import annotations

import os

import numpy as np
from anndata import AnnData

from .._docs import doc_params, doc_show_save
from ._utils import check_return_fig, check_save, finish


def _networkx():
    try:
        import networkx as nx
    except ImportError as e:  # pragma: no cover - scanpy depends on networkx
        raise ImportError(
            "sct.pl.grn needs networkx for the layout; install it with `pip install networkx`"
        ) from e
    return nx


@doc_params(doc_show_save=doc_show_save)
def grn(
    adata: AnnData,
    *,
    group: str | None = None,
    top: int = 50,
    key: str = "sct_grn",
    layout: str = "spring",
    seed: int = 0,
    node_size: float = 600,
    ax=None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool | None = None,
):
    """Draw the strongest edges of a network from :func:`sctransformer.tl.attention_grn`.

    Nodes are placed by a networkx layout; each arrow goes from the source (query) gene to the
    target (key) gene, its width proportional to the edge weight. Gene labels that would overlap
    are pushed apart (a thin line then joins a moved label to its node), so every name stays
    readable in crowded networks.

    Parameters
    ----------
    adata
        AnnData with ``uns[key]["edges"]``.
    group
        The group's network (a value of ``groupby``); ``None``: the network over all cells.
    top
        Draw this many edges, strongest first.
    key
        ``uns`` key written by ``attention_grn``.
    layout
        ``"spring"``, ``"kamada_kawai"``, ``"circular"`` or ``"shell"``.
    seed
        Seed of the spring layout.
    node_size
        Marker area of the nodes.
    ax
        Draw into this Axes. Labels are placed for the Axes' size when drawn; resizing it
        afterwards (``tight_layout``) can make them touch again.
    {doc_show_save}

    Returns
    -------
    ``None`` when the figure is shown, else the Axes.
    """
    if key not in adata.uns or "edges" not in adata.uns[key]:
        raise ValueError(f"uns[{key!r}]['edges'] not found; run sct.tl.attention_grn first")
    if top < 1:
        raise ValueError(f"top must be positive, got {top}")
    layouts = ("spring", "kamada_kawai", "circular", "shell")
    if layout not in layouts:
        raise ValueError(f"layout={layout!r}; use one of {list(layouts)}")
    save = check_save(save)
    return_fig = check_return_fig(return_fig, "grn")
    nx = _networkx()
    import matplotlib.pyplot as plt

    edges = adata.uns[key]["edges"]
    name = "all" if group is None else str(group)
    available = [str(g) for g in edges["group"].astype(str).unique()]
    if name not in available:
        raise ValueError(f"group {name!r} not in uns[{key!r}]['edges']; available: {available}")
    sub = edges[edges["group"].astype(str) == name]
    sub = sub.sort_values("weight", ascending=False, kind="stable").head(top)
    graph = nx.DiGraph()
    for s, t, w in zip(sub["source"], sub["target"], sub["weight"], strict=True):
        graph.add_edge(str(s), str(t), weight=float(w))
    weights = sub["weight"].to_numpy(dtype=float)
    span = float(weights.max() - weights.min()) if len(weights) else 0.0
    widths = 0.6 + 3.4 * ((weights - weights.min()) / span if span > 0 else 0.5)
    if layout == "spring":
        pos = nx.spring_layout(graph, seed=seed)
    else:
        pos = getattr(nx, f"{layout}_layout")(graph)
    fig = ax.figure if ax is not None else plt.figure(figsize=(6, 6))
    ax = ax or fig.add_subplot(111)
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_size=node_size, node_color="#cfe2f3")
    nx.draw_networkx_edges(
        graph,
        pos,
        ax=ax,
        width=list(widths),
        edge_color="0.35",
        arrows=True,
        arrowsize=10,
        node_size=node_size,
        connectionstyle="arc3,rad=0.08",
    )
    ax.set_title(f"attention network · {name} · top {len(sub)} edges", fontsize=10)
    ax.set_axis_off()
    _place_labels(ax, pos, font_size=8)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)


def _place_labels(ax, pos: dict, *, font_size: float, pad_px: float = 2.0, rounds: int = 500):
    """Label each node, then push overlapping labels apart in display space.

    The axes limits are fixed first (with a margin for moved labels), so display and data
    coordinates stay in a fixed linear relation while labels move. Each round moves both labels
    of every overlapping pair apart along the axis of the smaller overlap; a label that ends far
    from its node gets a thin leader line.
    """
    names = list(pos)
    if not names:
        return
    xy = np.array([pos[n] for n in names], dtype=float)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    margin = np.maximum(0.18 * (hi - lo), 0.25)
    ax.set_xlim(lo[0] - margin[0], hi[0] + margin[0])
    ax.set_ylim(lo[1] - margin[1], hi[1] + margin[1])
    texts = [
        ax.text(
            x,
            y,
            name,
            ha="center",
            va="center",
            fontsize=font_size,
            zorder=4,
            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
        )
        for name, (x, y) in zip(names, xy, strict=True)
    ]
    renderer = ax.figure.canvas.get_renderer()
    to_display = ax.transData
    anchor = to_display.transform(xy)
    centre = anchor.copy()
    boxes = [t.get_window_extent(renderer) for t in texts]
    half = np.array([[b.width / 2, b.height / 2] for b in boxes]) + pad_px / 2
    n = len(names)
    for _ in range(rounds):
        moved = False
        for i in range(n):
            for j in range(i + 1, n):
                d = centre[i] - centre[j]
                overlap = half[i] + half[j] - np.abs(d)
                if (overlap <= 0).any():
                    continue
                axis = int(np.argmin(overlap))
                sign = np.sign(d[axis]) or (1.0 if i % 2 == 0 else -1.0)
                step = overlap[axis] / 2 + 0.25
                centre[i, axis] += sign * step
                centre[j, axis] -= sign * step
                moved = True
        if not moved:
            break
    data = to_display.inverted().transform(centre)
    for t, (x, y) in zip(texts, data, strict=True):
        t.set_position((x, y))
    far = np.hypot(*(centre - anchor).T) > 6.0  # pixels
    for k in np.flatnonzero(far):
        ax.plot([xy[k, 0], data[k, 0]], [xy[k, 1], data[k, 1]], color="0.55", lw=0.5, zorder=3)
