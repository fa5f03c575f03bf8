"""The parser's building blocks: the help formatter, value types and the option groups that
several subcommands share.

Option names are the keywords of the Python function each subcommand calls, in kebab case;
options that exist only on the command line (reading, writing, config) are listed apart in
each subcommand's help.
"""

from __future__ import annotations

import argparse
import json

PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
METHODS = ["rank", "bin", "adaptive_bin", "value", "sentence"]
PLOT_FORMATS = ["png", "pdf", "svg"]
INPUT_FORMATS = ["auto", "h5ad", "10x-h5", "10x-mtx"]
DEFAULT_MODEL = "sct-tiny-pbmc"
IMAGE_OUTPUT = "image to write (.png, .pdf, .svg)"


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default after its description (unless the text says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default:" in text or action.default is argparse.SUPPRESS:
            return text
        if action.option_strings and action.default is not None and action.nargs != 0:
            return f"{text} (default: %(default)s)"
        if isinstance(action, argparse.BooleanOptionalAction) and action.default is not None:
            return f"{text} (default: {'yes' if action.default else 'no'})"
        return text


def int_or_all(text: str):
    return text if text == "all" else int(text)


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"epochs\": 2}'")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def flag(p, name: str, help: str, default=None):
    p.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=help)


def common_options(p, *, output_help: str, model_default: str | None = DEFAULT_MODEL, model=True):
    """Positionals and the options every data subcommand shares."""
    p.add_argument("input", help="h5ad file, 10x Genomics .h5 file or 10x mtx folder")
    p.add_argument("output", help=output_help)
    io = p.add_argument_group("command-line options")
    io.add_argument("--config", metavar="FILE.toml", help="read options from this TOML file")
    io.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        default="auto",
        help="how to read INPUT; auto: a folder is 10x mtx, an HDF5 file is told apart by its keys",
    )
    io.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads (sct.settings.n_jobs and torch); default: every core",
    )
    flag(io, "--quiet", "no progress bars, warnings or messages", default=False)
    debug_option(io)
    if model:
        p.add_argument(
            "--model",
            default=model_default,
            help="registry name (see `sctransformer models list`), model folder, or a .tar of one"
            + ("" if model_default else "; default: none"),
        )


def debug_option(p):
    flag(p, "--debug", "show the traceback of an error", default=False)


def no_data_options(p):
    """The command-line options of a subcommand that reads no data set."""
    debug_option(p)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.set_defaults(quiet=False, threads=None)


def counts_options(p, *, counts_layer=True, gene_match=True):
    """How a model-based subcommand reads counts and matches genes to the vocabulary."""
    if counts_layer:
        p.add_argument(
            "--counts-layer",
            metavar="NAME",
            help="read counts from this layer instead of X; default: X",
        )
    if gene_match:
        p.add_argument("--gene-key", help="var column of gene names to match; default: var_names")
        p.add_argument(
            "--min-gene-fraction",
            type=float,
            help="fail when fewer than this fraction of genes are in the vocabulary; "
            "default: the function's (0.2)",
        )
        p.add_argument(
            "--min-genes",
            type=int,
            help="fail when fewer genes are in the vocabulary; default: the function's",
        )
    flag(
        p,
        "--allow-non-counts",
        "accept a matrix that is not integer counts (e.g. log-normalised) for a method that "
        "normalises counts itself",
        default=False,
    )


def runtime_options(
    p, *, precision=True, batch_size: int | None = 32, chunk_size: int | None = None
):
    if batch_size is not None:
        p.add_argument("--batch-size", type=positive_int, default=batch_size, help="cells per pass")
    if chunk_size is not None:
        p.add_argument(
            "--chunk-size", type=positive_int, default=chunk_size, help="cells read at a time"
        )
    if precision:
        p.add_argument(
            "--precision",
            choices=PRECISIONS,
            default="auto",
            help="auto: bf16 where it is measured faster, else fp32",
        )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def pooling_layer_options(p):
    p.add_argument(
        "--pooling", choices=["cls", "mean"], help="cell embedding; default: the model's"
    )
    p.add_argument(
        "--layer",
        type=int,
        help="transformer layer: -1 last, -2 the one before, 1..n from the bottom; "
        "default: the model's",
    )


def tokens_key_option(p):
    p.add_argument("--tokens-key", default="sct", help="prefix of the token arrays in obsm")


def batch_key_option(p):
    p.add_argument("--batch-key", help="obs column that becomes a <batch=...> token")


def model_options(
    p,
    key_added: str,
    key_help: str,
    *exports: tuple[str, ...],
    outputs_first: bool = False,
    tokens_key: bool = True,
    counts_layer: bool = True,
    **runtime,
):
    """The options of a subcommand that runs a model over the cells, in their help order.

    The runtime ones (:func:`runtime_options`) and ``--tokens-key``; ``--key-added`` and the extra
    outputs, each ``(flag, help)`` or ``(flag, help, metavar)`` (FILE.tsv unless named), after
    them or, with ``outputs_first``, before; last how counts are read and genes matched.
    """

    def outputs():
        p.add_argument("--key-added", default=key_added, help=key_help)
        for flag, help, *metavar in exports:
            p.add_argument(flag, metavar=metavar[0] if metavar else "FILE.tsv", help=help)

    if outputs_first:
        outputs()
    runtime_options(p, **runtime)
    if tokens_key:
        tokens_key_option(p)
    if not outputs_first:
        outputs()
    counts_options(p, counts_layer=counts_layer)


def plot_output_options(p):
    p.add_argument(
        "--format",
        choices=PLOT_FORMATS,
        help="image format; default: OUTPUT's extension (.png, .pdf, .svg)",
    )
    p.add_argument("--dpi", type=positive_int, default=150, help="resolution of PNG output")


def command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose description is its one-line help."""
    return sub.add_parser(name, help=help, description=help, formatter_class=Formatter)


def data_command(sub, name: str, help: str, *, output_help="h5ad to write", **common):
    """A subcommand that reads INPUT and writes OUTPUT."""
    p = command(sub, name, help)
    common_options(p, output_help=output_help, **common)
    return p
