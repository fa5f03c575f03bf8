"""Subcommands that draw a figure: ``plot-heads`` and ``plot-grn``."""

from __future__ import annotations

from ._options import (
    IMAGE_OUTPUT,
    counts_options,
    data_command,
    int_or_all,
    plot_output_options,
    positive_int,
    tokens_key_option,
)


def add_plot_commands(sub) -> None:
    """``plot-heads`` and ``plot-grn``."""
    # --- plots ----------------------------------------------------------------------------
    h = data_command(
        sub,
        "plot-heads",
        "sct.pl.attention_heads: attention heatmaps per layer and head",
        output_help=IMAGE_OUTPUT,
        model_default=None,
    )
    h.add_argument("--genes", nargs="+", required=True, help="genes to show, in this order")
    h.add_argument("--cells", nargs="+", help="obs names to average over; default: all")
    h.add_argument("--layers", nargs="+", type=int_or_all, default=["all"], help="layers")
    h.add_argument("--heads", nargs="+", default=["all"], help="all or 0-based head indices")
    h.add_argument(
        "--normalize", choices=["rank", "softmax", "none"], default="softmax", help="what is shown"
    )
    h.add_argument("--key", default="sct_grn", help="uns key of stored networks (no --model)")
    h.add_argument("--batch-size", type=positive_int, default=16, help="cells per pass")
    h.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    tokens_key_option(h)
    h.add_argument("--cmap", default="viridis", help="matplotlib colour map")
    h.add_argument("--vmin", type=float, help="colour scale minimum; default: data range")
    h.add_argument("--vmax", type=float, help="colour scale maximum; default: data range")
    h.add_argument("--panel-size", type=float, default=2.4, help="inches per panel")
    plot_output_options(h)
    counts_options(h, gene_match=False)

    pg = data_command(
        sub,
        "plot-grn",
        "sct.pl.grn: draw the strongest edges of a network",
        output_help=IMAGE_OUTPUT,
        model=False,
    )
    pg.add_argument("--group", help="a group's network; default: over all cells")
    pg.add_argument("--top", type=positive_int, default=50, help="edges drawn")
    pg.add_argument("--key", default="sct_grn", help="uns key written by grn")
    pg.add_argument(
        "--layout",
        choices=["spring", "kamada_kawai", "circular", "shell"],
        default="spring",
        help="networkx layout of the nodes",
    )
    pg.add_argument("--seed", type=int, default=0, help="seed of the spring layout")
    pg.add_argument("--node-size", type=float, default=600, help="marker area of the nodes")
    plot_output_options(pg)
