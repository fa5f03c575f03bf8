"""Subcommands that run a model over the cells: ``embed``, ``embed-genes``, ``annotate``,
``grn``, ``perturb`` and ``benchmark``.
"""

from __future__ import annotations

from ._options import (
    batch_key_option,
    data_command,
    flag,
    int_or_all,
    json_object,
    model_options,
    pooling_layer_options,
    positive_int,
)


def add_task_commands(sub) -> None:
    """``embed``, ``embed-genes``, ``annotate``, ``grn``, ``perturb`` and ``benchmark``."""
    # --- embed ----------------------------------------------------------------------------
    e = data_command(sub, "embed", "sct.tl.embed_cells: a cell embedding in obsm")
    pooling_layer_options(e)
    model_options(
        e,
        "X_sct",
        "obsm key of the embedding",
        ("--export-embedding", "also write the embedding as TSV"),
        chunk_size=2048,
    )

    # --- embed-genes ----------------------------------------------------------------------
    g = data_command(sub, "embed-genes", "sct.tl.embed_genes: contextual gene embeddings in varm")
    g.add_argument("--groupby", help="obs column: also average within each group")
    g.add_argument("--layer", type=int, help="transformer layer; default: the model's")
    model_options(
        g,
        "sct_gene",
        "prefix of the keys written",
        ("--export-embedding", "also write the gene embedding as TSV"),
        chunk_size=2048,
    )

    # --- annotate -------------------------------------------------------------------------
    a = data_command(
        sub,
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
    flag(a, "--freeze", "finetune: train the classifier head only", default=False)
    batch_key_option(a)
    pooling_layer_options(a)
    a.add_argument("--epochs", type=positive_int, default=10, help="finetune epochs")
    a.add_argument("--lr", type=float, default=1e-3, help="finetune learning rate")
    a.add_argument("--encoder-lr", type=float, help="encoder learning rate; default: lr / 10")
    a.add_argument("--weight-decay", type=float, default=0.01, help="finetune weight decay")
    flag(a, "--class-weight", "weight classes by inverse frequency", default=True)
    a.add_argument("--validation-fraction", type=float, default=0.1, help="held out for stopping")
    a.add_argument("--patience", type=int, default=3, help="epochs without improvement")
    a.add_argument("--n-neighbors", type=positive_int, default=15, help="knn neighbours")
    a.add_argument(
        "--unknown-threshold", type=float, help='label cells below it "unknown"; default: none'
    )
    a.add_argument("--seed", type=int, default=0, help="seeds the head, split and batch order")
    model_options(
        a,
        "sct_label",
        "prefix of the keys written",
        ("--save-annotator", "also save the fitted annotator", "FOLDER"),
        ("--export-labels", "also write labels and scores"),
        outputs_first=True,
        tokens_key=False,
    )

    # --- grn ------------------------------------------------------------------------------
    n = data_command(sub, "grn", "sct.tl.attention_grn: gene networks from attention")
    n.add_argument("--groupby", help="obs column: one network per group too")
    n.add_argument(
        "--layers",
        nargs="+",
        type=int_or_all,
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
    flag(n, "--symmetrize", "undirected networks: (W + W^T) / 2", default=False)
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
    model_options(
        n,
        "sct_grn",
        "key of the results",
        ("--export-edges", "also write the edge table"),
        precision=False,
        batch_size=16,
        chunk_size=2048,
    )

    # --- perturb --------------------------------------------------------------------------
    q = data_command(
        sub, "perturb", "sct.tl.in_silico_perturb: delete or overexpress genes in silico"
    )
    q.add_argument("--genes", nargs="+", required=True, help="genes to perturb, one at a time")
    q.add_argument(
        "--mode",
        choices=["delete", "overexpress"],
        default="delete",
        help="remove the gene's token, or move it to the front of the cell",
    )
    q.add_argument("--groupby", help="obs column: summarise per group")
    q.add_argument("--target", help="a value of --groupby: measure the shift toward it")
    flag(q, "--gene-shifts", "also measure the other genes' shifts", default=False)
    pooling_layer_options(q)
    model_options(
        q,
        "sct_perturb",
        "prefix of the keys written",
        ("--export-table", "also write the summary table"),
        chunk_size=256,
    )

    # --- benchmark ------------------------------------------------------------------------
    b = data_command(
        sub,
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
        type=json_object,
        help="JSON of sct.tl.annotate options, e.g. '{\"epochs\": 2}'",
    )
    b.add_argument("--seed", type=int, default=0, help="seeds the split and every method")
    model_options(
        b,
        "sct_benchmark",
        "prefix of the keys written",
        ("--table", "where the TSV goes; default: OUTPUT with .tsv"),
        outputs_first=True,
        tokens_key=False,
        counts_layer=False,
    )
