"""The argument parser, defined statically: building it imports nothing of the library.

Each group of subcommands is declared in a module of its own (``_parser_prepare``,
``_parser_tasks``, ``_parser_plots``); the options they share are in ``_options``.
"""

from __future__ import annotations

import argparse

from ._options import Formatter, command, flag, no_data_options, positive_int
from ._parser_plots import add_plot_commands
from ._parser_prepare import add_prepare_commands
from ._parser_tasks import add_task_commands


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sctransformer",
        description="Transformer models for single-cell data, one scanpy step per subcommand.\n"
        "Exit status: 0 success, 1 data or runtime error (one line on stderr), 2 usage error.",
        formatter_class=Formatter,
    )
    from .._version import __version__

    p.add_argument("--version", action="version", version=f"sctransformer {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    add_prepare_commands(sub)
    add_task_commands(sub)
    add_plot_commands(sub)

    # --- models ---------------------------------------------------------------------------
    m = command(sub, "models", "the model registry: list, fetch, files")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def action(name, help):
        return msub.add_parser(name, help=help, formatter_class=Formatter)

    ml = action("list", "every named model")
    ml.add_argument("--tsv", action="store_true", help="tab-separated, every column")
    mf = action("fetch", "download (sha256-checked), convert and cache a model; print its folder")
    mf.add_argument("name", help="a name from `sctransformer models list`")
    mf.add_argument("--output", metavar="FOLDER", help="also copy the model folder here")
    mfi = action("files", "the files a model needs, their sha256 and where to place them offline")
    mfi.add_argument("name", help="a name from `sctransformer models list`")
    for mp in (ml, mf, mfi):
        no_data_options(mp)

    # --- demo -----------------------------------------------------------------------------
    d = command(
        sub, "demo", "tokenize -> model -> embed -> UMAP -> annotate -> network on bundled PBMCs"
    )
    d.add_argument("--out", default="sct_demo", help="output folder")
    flag(d, "--pretrain", "pretrain a fresh model first", default=False)
    d.add_argument("--epochs", type=positive_int, default=3, help="epochs with --pretrain")
    no_data_options(d)
    return p
