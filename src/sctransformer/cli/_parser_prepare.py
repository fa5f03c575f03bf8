"""Subcommands that make tokens and models: ``tokenize`` and ``pretrain``."""

from __future__ import annotations

from ._options import (
    METHODS,
    PRECISIONS,
    batch_key_option,
    counts_options,
    data_command,
    flag,
    positive_int,
    tokens_key_option,
)


def add_prepare_commands(sub) -> None:
    """``tokenize`` and ``pretrain``."""
    # --- tokenize -------------------------------------------------------------------------
    t = data_command(
        sub, "tokenize", "sct.pp.tokenize: counts -> token arrays in obsm", model_default=None
    )
    t.add_argument(
        "--method",
        choices=METHODS,
        help="encoding; default: the model's (required without --model)",
    )
    t.add_argument("--layer", help="read this layer instead of X; default: X")
    t.add_argument("--gene-key", help="var column of gene names to match; default: var_names")
    t.add_argument("--max-length", type=positive_int, help="tokens per cell; default: the method's")
    t.add_argument("--target-sum", type=float, help="normalisation total; default: 10000")
    flag(t, "--normalize", "normalise to --target-sum (--no-normalize: use X as it is)")
    t.add_argument("--n-bins", type=positive_int, help="bins of bin/adaptive_bin; default: 6 / 51")
    t.add_argument("--bin-width", type=float, help="bin width of bin; default: 1")
    t.add_argument(
        "--select", choices=["top", "random"], help="value encodings: which genes; default: top"
    )
    flag(
        t,
        "--include-zeros",
        "value encodings: every vocabulary gene, expressed or not; default: no",
    )
    flag(t, "--add-cls", "prepend <cls>; default: yes")
    flag(t, "--add-eos", "append <eos>; default: no")
    t.add_argument("--pad-value", type=float, help="value at padding positions; default: -2")
    t.add_argument(
        "--gene-medians",
        choices=["vocab", "data", "none"],
        help="rank only; default: the vocabulary's, else the data's",
    )
    batch_key_option(t)
    t.add_argument("--seed", type=int, default=0, help="seeds tie-breaking and random selection")
    t.add_argument(
        "--min-gene-fraction",
        type=float,
        default=0.2,
        help="fail when fewer than this fraction of genes are in the vocabulary",
    )
    t.add_argument("--chunk-size", type=positive_int, default=4096, help="cells read at a time")
    t.add_argument("--key-added", default="sct", help="prefix of the keys written")
    flag(
        t,
        "--allow-non-counts",
        "accept a matrix that is not integer counts (else use --layer or --no-normalize)",
        default=False,
    )

    # --- pretrain -------------------------------------------------------------------------
    r = data_command(
        sub,
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
    r.add_argument("--max-length", type=positive_int, help="tokens per cell when tokenizing here")
    tokens_key_option(r)
    batch_key_option(r)
    r.add_argument("--epochs", type=positive_int, default=1, help="passes over the cells")
    r.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    r.add_argument("--batch-size", type=positive_int, default=16, help="cells per step")
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
    flag(r, "--archive", "write OUTPUT as a .tar of the model folder", default=False)
    counts_options(r, gene_match=False)
