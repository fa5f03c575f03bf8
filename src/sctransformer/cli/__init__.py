"""Command line: ``sctransformer SUBCOMMAND INPUT OUTPUT [options]`` (Galaxy-friendly).

Every subcommand reads one data set, runs one ``sct`` step and writes the result atomically,
so each step can be wrapped as a tool of its own. Building the parser imports nothing heavy:
``--help`` answers before torch, anndata or scanpy are loaded.
"""

from ._main import main
from ._parser import build_parser

__all__ = ["build_parser", "main"]
