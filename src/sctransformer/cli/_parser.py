"""The argument parser, defined statically: building it imports nothing of the library.

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


class _Formatter(argparse.RawDescriptionHelpFormatter):
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


def _int_or_all(text: str):
    return text if text == "all" else int(text)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"epochs\": 2}'")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _flag(p, name: str, help: str, default=None):
    p.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=help)


def _common(p, *, output_help: str, model_default: str | None = DEFAULT_MODEL, model=True):
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
        type=_positive_int,
        help="CPU threads (sct.settings.n_jobs and torch); default: every core",
    )
    _flag(io, "--quiet", "no progress bars, warnings or messages", default=False)
    _debug(io)
    if model:
        p.add_argument(
            "--model",
            default=model_default,
            help="registry name (see `sctransformer models list`), model folder, or a .tar of one"
            + ("" if model_default else "; default: none"),
        )


def _debug(p):
    _flag(p, "--debug", "show the traceback of an error", default=False)


def _no_data(p):
    """The command-line options of a subcommand that reads no data set."""
    _debug(p)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.set_defaults(quiet=False, threads=None)


def _counts_options(p, *, counts_layer=True, gene_match=True):
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
    _flag(
        p,
        "--allow-non-counts",
        "accept a matrix that is not integer counts (e.g. log-normalised) for a method that "
        "normalises counts itself",
        default=False,
    )


def _runtime(p, *, precision=True, batch_size: int | None = 32, chunk_size: int | None = None):
    if batch_size is not None:
        p.add_argument(
            "--batch-size", type=_positive_int, default=batch_size, help="cells per pass"
        )
    if chunk_size is not None:
        p.add_argument(
            "--chunk-size", type=_positive_int, default=chunk_size, help="cells read at a time"
        )
    if precision:
        p.add_argument(
            "--precision",
            choices=PRECISIONS,
            default="auto",
            help="auto: bf16 where it is measured faster, else fp32",
        )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def _pooling_layer(p):
    p.add_argument(
        "--pooling", choices=["cls", "mean"], help="cell embedding; default: the model's"
    )
    p.add_argument(
        "--layer",
        type=int,
        help="transformer layer: -1 last, -2 the one before, 1..n from the bottom; "
        "default: the model's",
    )


def _tokens_key(p):
    p.add_argument("--tokens-key", default="sct", help="prefix of the token arrays in obsm")


def _batch_key(p):
    p.add_argument("--batch-key", help="obs column that becomes a <batch=...> token")


def _model_options(
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

    The runtime ones (:func:`_runtime`) and ``--tokens-key``; ``--key-added`` and the extra
    outputs, each ``(flag, help)`` or ``(flag, help, metavar)`` (FILE.tsv unless named), after
    them or, with ``outputs_first``, before; last how counts are read and genes matched.
    """

    def outputs():
        p.add_argument("--key-added", default=key_added, help=key_help)
        for flag, help, *metavar in exports:
            p.add_argument(flag, metavar=metavar[0] if metavar else "FILE.tsv", help=help)

    if outputs_first:
        outputs()
    _runtime(p, **runtime)
    if tokens_key:
        _tokens_key(p)
    if not outputs_first:
        outputs()
    _counts_options(p, counts_layer=counts_layer)


def _plot_output(p):
    p.add_argument(
        "--format",
        choices=PLOT_FORMATS,
        help="image format; default: OUTPUT's extension (.png, .pdf, .svg)",
    )
    p.add_argument("--dpi", type=_positive_int, default=150, help="resolution of PNG output")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sctransformer",
        description="Transformer models for single-cell data, one scanpy step per subcommand.\n"
        "Exit status: 0 success, 1 data or runtime error (one line on stderr), 2 usage error.",
        formatter_class=_Formatter,
    )
    from .._version import __version__

    p.add_argument("--version", action="version", version=f"sctransformer {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def cmd(name, help):
        return sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)

    def data_cmd(name, help, *, output_help="h5ad to write", **common):
        """A subcommand that reads INPUT and writes OUTPUT."""
        p = cmd(name, help)
        _common(p, output_help=output_help, **common)
        return p

    # --- tokenize -------------------------------------------------------------------------
    t = data_cmd("tokenize", "sct.pp.tokenize: counts -> token arrays in obsm", model_default=None)
    t.add_argument(
        "--method",
        choices=METHODS,
        help="encoding; default: the model's (required without --model)",
    )
    t.add_argument("--layer", help="read this layer instead of X; default: X")
    t.add_argument("--gene-key", help="var column of gene names to match; default: var_names")
    t.add_argument(
        "--max-length", type=_positive_int, help="tokens per cell; default: the method's"
    )
    t.add_argument("--target-sum", type=float, help="normalisation total; default: 10000")
    _flag(t, "--normalize", "normalise to --target-sum (--no-normalize: use X as it is)")
    t.add_argument("--n-bins", type=_positive_int, help="bins of bin/adaptive_bin; default: 6 / 51")
    t.add_argument("--bin-width", type=float, help="bin width of bin; default: 1")
    t.add_argument(
        "--select", choices=["top", "random"], help="value encodings: which genes; default: top"
    )
    _flag(
        t,
        "--include-zeros",
        "value encodings: every vocabulary gene, expressed or not; default: no",
    )
    _flag(t, "--add-cls", "prepend <cls>; default: yes")
    _flag(t, "--add-eos", "append <eos>; default: no")
    t.add_argument("--pad-value", type=float, help="value at padding positions; default: -2")
    t.add_argument(
        "--gene-medians",
        choices=["vocab", "data", "none"],
        help="rank only; default: the vocabulary's, else the data's",
    )
    _batch_key(t)
    t.add_argument("--seed", type=int, default=0, help="seeds tie-breaking and random selection")
    t.add_argument(
        "--min-gene-fraction",
        type=float,
        default=0.2,
        help="fail when fewer than this fraction of genes are in the vocabulary",
    )
    t.add_argument("--chunk-size", type=_positive_int, default=4096, help="cells read at a time")
    t.add_argument("--key-added", default="sct", help="prefix of the keys written")
    _flag(
        t,
        "--allow-non-counts",
        "accept a matrix that is not integer counts (else use --layer or --no-normalize)",
        default=False,
    )

    # --- pretrain -------------------------------------------------------------------------
    r = data_cmd(
        "pretrain",
        "sct.tl.pretrain: train a model and write its folder",
        output_help="model folder to write (or a .tar with --archive)",
        model_default=None,
    )
    r.add_argument(
        "--objective",
        choices=["mlm", "ntp", "generative"],
        default="mlm",
        help="mlm masked tokens, ntp next token, generative scGPT's attention mask",
    )
    r.add_argument("--method", choices=METHODS[:4], default="rank", help="tokenization")
    r.add_argument("--max-length", type=_positive_int, help="tokens per cell when tokenizing here")
    _tokens_key(r)
    _batch_key(r)
    r.add_argument("--epochs", type=_positive_int, default=1, help="passes over the cells")
    r.add_argument("--max-steps", type=_positive_int, help="stop after this many steps")
    r.add_argument("--batch-size", type=_positive_int, default=16, help="cells per step")
    r.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    r.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    r.add_argument("--warmup-steps", type=int, help="linear warm-up; default: 5%% of the steps")
    r.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
    r.add_argument("--mask-prob", type=float, default=0.15, help="mlm: share of masked tokens")
    r.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="auto: mixed on CUDA, fp32 on CPU"
    )
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    r.add_argument("--seed", type=int, default=0, help="seeds everything random")
    r.add_argument("--checkpoint-dir", help="write step-N checkpoints here")
    r.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints")
    r.add_argument("--resume-from", help="a step-N checkpoint folder to continue from")
    r.add_argument("--export-history", metavar="FILE.tsv", help="write the loss history here")
    _flag(r, "--archive", "write OUTPUT as a .tar of the model folder", default=False)
    _counts_options(r, gene_match=False)

    # --- embed ----------------------------------------------------------------------------
    e = data_cmd("embed", "sct.tl.embed_cells: a cell embedding in obsm")
    _pooling_layer(e)
    _model_options(
        e,
        "X_sct",
        "obsm key of the embedding",
        ("--export-embedding", "also write the embedding as TSV"),
        chunk_size=2048,
    )

    # --- embed-genes ----------------------------------------------------------------------
    g = data_cmd("embed-genes", "sct.tl.embed_genes: contextual gene embeddings in varm")
    g.add_argument("--groupby", help="obs column: also average within each group")
    g.add_argument("--layer", type=int, help="transformer layer; default: the model's")
    _model_options(
        g,
        "sct_gene",
        "prefix of the keys written",
        ("--export-embedding", "also write the gene embedding as TSV"),
        chunk_size=2048,
    )

    # --- annotate -------------------------------------------------------------------------
    a = data_cmd(
        "annotate",
        "sct.tl.annotate: labels from a reference (--reference, --labels-key) or from a "
        "saved annotator (--model FOLDER)",
    )
    a.add_argument("--reference", metavar="REF.h5ad", help="labelled cells (h5ad)")
    a.add_argument("--labels-key", help="obs column of the reference's labels")
    a.add_argument(
        "--method",
        choices=["finetune", "linear", "knn"],
        default="linear",
        help="classifier: a head trained with the encoder, logistic regression, or neighbours",
    )
    _flag(a, "--freeze", "finetune: train the classifier head only", default=False)
    _batch_key(a)
    _pooling_layer(a)
    a.add_argument("--epochs", type=_positive_int, default=10, help="finetune epochs")
    a.add_argument("--lr", type=float, default=1e-3, help="finetune learning rate")
    a.add_argument("--encoder-lr", type=float, help="encoder learning rate; default: lr / 10")
    a.add_argument("--weight-decay", type=float, default=0.01, help="finetune weight decay")
    _flag(a, "--class-weight", "weight classes by inverse frequency", default=True)
    a.add_argument("--validation-fraction", type=float, default=0.1, help="held out for stopping")
    a.add_argument("--patience", type=int, default=3, help="epochs without improvement")
    a.add_argument("--n-neighbors", type=_positive_int, default=15, help="knn neighbours")
    a.add_argument(
        "--unknown-threshold", type=float, help='label cells below it "unknown"; default: none'
    )
    a.add_argument("--seed", type=int, default=0, help="seeds the head, split and batch order")
    _model_options(
        a,
        "sct_label",
        "prefix of the keys written",
        ("--save-annotator", "also save the fitted annotator", "FOLDER"),
        ("--export-labels", "also write labels and scores"),
        outputs_first=True,
        tokens_key=False,
    )

    # --- grn ------------------------------------------------------------------------------
    n = data_cmd("grn", "sct.tl.attention_grn: gene networks from attention")
    n.add_argument("--groupby", help="obs column: one network per group too")
    n.add_argument(
        "--layers",
        nargs="+",
        type=_int_or_all,
        default=[-1],
        help="layers' attention: -1 last, 1..n, several, or all",
    )
    n.add_argument(
        "--heads", nargs="+", default=["mean"], help="mean, all, or 0-based head indices"
    )
    n.add_argument("--genes", nargs="+", help="track only these genes; default: every gene")
    n.add_argument(
        "--normalize",
        choices=["rank", "softmax", "none"],
        default="rank",
        help="what is averaged over cells",
    )
    _flag(n, "--symmetrize", "undirected networks: (W + W^T) / 2", default=False)
    n.add_argument("--top-k", type=int, default=20, help="targets kept per gene; 0 keeps all")
    n.add_argument("--threshold", type=float, help="drop weaker edges; default: none")
    n.add_argument(
        "--method",
        choices=["attention", "embedding", "deletion", "attention_grad"],
        default="attention",
        help="the network estimator",
    )
    n.add_argument(
        "--min-cells",
        type=int,
        help="drop edges seen in fewer cells; default: 5%% of the cells, at most 10",
    )
    n.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="two groupby values: edges that change"
    )
    n.add_argument(
        "--n-permutations", type=int, default=200, help="label permutations for --compare"
    )
    n.add_argument("--n-top-genes", type=int, default=10, help="genes listed per head")
    _model_options(
        n,
        "sct_grn",
        "key of the results",
        ("--export-edges", "also write the edge table"),
        precision=False,
        batch_size=16,
        chunk_size=2048,
    )

    # --- perturb --------------------------------------------------------------------------
    q = data_cmd("perturb", "sct.tl.in_silico_perturb: delete or overexpress genes in silico")
    q.add_argument("--genes", nargs="+", required=True, help="genes to perturb, one at a time")
    q.add_argument(
        "--mode",
        choices=["delete", "overexpress"],
        default="delete",
        help="remove the gene's token, or move it to the front of the cell",
    )
    q.add_argument("--groupby", help="obs column: summarise per group")
    q.add_argument("--target", help="a value of --groupby: measure the shift toward it")
    _flag(q, "--gene-shifts", "also measure the other genes' shifts", default=False)
    _pooling_layer(q)
    _model_options(
        q,
        "sct_perturb",
        "prefix of the keys written",
        ("--export-table", "also write the summary table"),
        chunk_size=256,
    )

    # --- benchmark ------------------------------------------------------------------------
    b = data_cmd(
        "benchmark",
        "sct.tl.benchmark: transformer arms against baselines; table as TSV",
        model_default=None,
    )
    b.add_argument("--labels-key", required=True, help="obs column of the labels")
    b.add_argument("--split-key", help="obs column of batches: --test-groups are held out")
    b.add_argument("--test-groups", nargs="+", help="held-out values; default: the last")
    b.add_argument("--test-size", type=float, default=0.2, help="held-out share without split")
    b.add_argument(
        "--methods",
        nargs="+",
        help="majority logreg_l2 logreg_l1 pca_logreg pca_knn xgboost scvi_logreg sct_linear "
        "sct_knn sct_finetune, representations pca scvi sct; default: every one that applies",
    )
    b.add_argument(
        "--tasks",
        nargs="+",
        choices=["label_prediction", "embedding", "integration"],
        help="default: every task that applies",
    )
    b.add_argument("--n-folds", type=int, help="k-fold cross-validation instead of one split")
    b.add_argument("--seeds", nargs="+", type=int, help="several seeds: mean and spread")
    b.add_argument("--test-data", help="held-out data set (h5ad): train on INPUT, test on it")
    b.add_argument("--layer", help="counts layer; default: X")
    b.add_argument("--n-top-genes", type=int, default=2000, help="baseline genes")
    b.add_argument("--n-pcs", type=int, default=50, help="baseline principal components")
    b.add_argument("--cv", type=int, default=3, help="cross-validation folds")
    b.add_argument("--batch-key", help="batch tokens of the transformer arms")
    b.add_argument(
        "--annotate-kwds",
        type=_json_object,
        help="JSON of sct.tl.annotate options, e.g. '{\"epochs\": 2}'",
    )
    b.add_argument("--seed", type=int, default=0, help="seeds the split and every method")
    _model_options(
        b,
        "sct_benchmark",
        "prefix of the keys written",
        ("--table", "where the TSV goes; default: OUTPUT with .tsv"),
        outputs_first=True,
        tokens_key=False,
        counts_layer=False,
    )

    # --- plots ----------------------------------------------------------------------------
    h = data_cmd(
        "plot-heads",
        "sct.pl.attention_heads: attention heatmaps per layer and head",
        output_help=IMAGE_OUTPUT,
        model_default=None,
    )
    h.add_argument("--genes", nargs="+", required=True, help="genes to show, in this order")
    h.add_argument("--cells", nargs="+", help="obs names to average over; default: all")
    h.add_argument("--layers", nargs="+", type=_int_or_all, default=["all"], help="layers")
    h.add_argument("--heads", nargs="+", default=["all"], help="all or 0-based head indices")
    h.add_argument(
        "--normalize", choices=["rank", "softmax", "none"], default="softmax", help="what is shown"
    )
    h.add_argument("--key", default="sct_grn", help="uns key of stored networks (no --model)")
    h.add_argument("--batch-size", type=_positive_int, default=16, help="cells per pass")
    h.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    _tokens_key(h)
    h.add_argument("--cmap", default="viridis", help="matplotlib colour map")
    h.add_argument("--vmin", type=float, help="colour scale minimum; default: data range")
    h.add_argument("--vmax", type=float, help="colour scale maximum; default: data range")
    h.add_argument("--panel-size", type=float, default=2.4, help="inches per panel")
    _plot_output(h)
    _counts_options(h, gene_match=False)

    pg = data_cmd(
        "plot-grn",
        "sct.pl.grn: draw the strongest edges of a network",
        output_help=IMAGE_OUTPUT,
        model=False,
    )
    pg.add_argument("--group", help="a group's network; default: over all cells")
    pg.add_argument("--top", type=_positive_int, default=50, help="edges drawn")
    pg.add_argument("--key", default="sct_grn", help="uns key written by grn")
    pg.add_argument(
        "--layout",
        choices=["spring", "kamada_kawai", "circular", "shell"],
        default="spring",
        help="networkx layout of the nodes",
    )
    pg.add_argument("--seed", type=int, default=0, help="seed of the spring layout")
    pg.add_argument("--node-size", type=float, default=600, help="marker area of the nodes")
    _plot_output(pg)

    # --- models ---------------------------------------------------------------------------
    m = cmd("models", "the model registry: list, fetch, files")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ml = msub.add_parser("list", help="every named model", formatter_class=_Formatter)
    ml.add_argument("--tsv", action="store_true", help="tab-separated, every column")
    mf = msub.add_parser(
        "fetch",
        help="download (sha256-checked), convert and cache a model; print its folder",
        formatter_class=_Formatter,
    )
    mf.add_argument("name", help="a name from `sctransformer models list`")
    mf.add_argument("--output", metavar="FOLDER", help="also copy the model folder here")
    mfi = msub.add_parser(
        "files",
        help="the files a model needs, their sha256 and where to place them offline",
        formatter_class=_Formatter,
    )
    mfi.add_argument("name", help="a name from `sctransformer models list`")
    for mp in (ml, mf, mfi):
        _no_data(mp)

    # --- demo -----------------------------------------------------------------------------
    d = cmd("demo", "tokenize -> model -> embed -> UMAP -> annotate -> network on bundled PBMCs")
    d.add_argument("--out", default="sct_demo", help="output folder")
    _flag(d, "--pretrain", "pretrain a fresh model first", default=False)
    d.add_argument("--epochs", type=_positive_int, default=3, help="epochs with --pretrain")
    _no_data(d)
    return p
