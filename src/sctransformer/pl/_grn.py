"""``sct.pl.grn``: draw an attention gene network."""

from __future__ import annotations

from anndata import AnnData


def _networkx():
    try:
        import networkx as nx
    except ImportError as e:  # pragma: no cover - scanpy depends on networkx
        raise ImportError(
            "sct.pl.grn needs networkx for the layout; install it with `pip install networkx`"
        ) from e
    return nx


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
    return_fig: bool = False,
):
    """Draw the strongest edges of a network from :func:`sctransformer.tl.attention_grn`.

    Nodes are placed by a networkx layout; each arrow goes from the source (query) gene to the
    target (key) gene, its width proportional to the edge weight.

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
        Draw into this Axes.
    show
        Show the figure (default: when not returning it).
    return_fig
        Return the Figure.

    Returns
    -------
    The Figure when ``return_fig`` or ``show=False``, else ``None``.
    """
    if key not in adata.uns or "edges" not in adata.uns[key]:
        raise ValueError(f"uns[{key!r}]['edges'] not found; run sct.tl.attention_grn first")
    if top < 1:
        raise ValueError(f"top must be positive, got {top}")
    layouts = ("spring", "kamada_kawai", "circular", "shell")
    if layout not in layouts:
        raise ValueError(f"layout={layout!r}; use one of {list(layouts)}")
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
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=8)
    ax.set_title(f"attention network · {name} · top {len(sub)} edges", fontsize=10)
    ax.set_axis_off()
    if return_fig or show is False:
        return fig
    plt.show()
    return None
