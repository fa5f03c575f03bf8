"""Command line: ``sctransformer SUBCOMMAND in.h5ad out ...`` (Galaxy-friendly).

Every subcommand reads an h5ad, runs one ``sct`` step and writes the result, so each step can
be wrapped as a tool of its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _read(path: str):
    import anndata as ad

    return ad.read_h5ad(path)


def _cmd_tokenize(args) -> None:
    import sctransformer as sct

    adata = _read(args.input)
    vocab = sct.models.load(args.model) if args.model else None
    sct.pp.tokenize(
        adata,
        method=args.method,
        vocab=vocab,
        layer=args.layer,
        gene_key=args.gene_key,
        max_length=args.max_length,
        batch_key=args.batch_key,
    )
    adata.write_h5ad(args.output)


def _cmd_embed(args) -> None:
    import sctransformer as sct

    adata = _read(args.input)
    sct.tl.embed_cells(
        adata, args.model, pooling=args.pooling, batch_size=args.batch_size, device=args.device
    )
    adata.write_h5ad(args.output)


def _cmd_pretrain(args) -> None:
    import sctransformer as sct

    adata = _read(args.input)
    model = sct.tl.pretrain(
        adata,
        objective=args.objective,
        method=args.method,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
    )
    sct.models.save(model, args.output)


def _cmd_models(args) -> None:
    import pandas as pd

    import sctransformer as sct

    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(sct.models.available()[["size_mb", "license", "description"]])


def _cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(Path(args.out), pretrain=args.pretrain, epochs=args.epochs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sctransformer", description="Transformer models for single-cell data."
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="tokenize → model → embed → UMAP on bundled PBMC data")
    d.add_argument("--out", default="sct_demo", help="output folder (default: sct_demo)")
    d.add_argument("--pretrain", action="store_true", help="pretrain a fresh model first")
    d.add_argument("--epochs", type=int, default=3, help="epochs when --pretrain")
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("tokenize", help="sct.pp.tokenize on an h5ad")
    t.add_argument("input")
    t.add_argument("output")
    t.add_argument("--method", choices=["rank", "bin", "adaptive_bin", "value", "sentence"])
    t.add_argument("--model", help="tokenize for this model (name or folder)")
    t.add_argument("--layer")
    t.add_argument("--gene-key")
    t.add_argument("--max-length", type=int)
    t.add_argument("--batch-key")
    t.set_defaults(func=_cmd_tokenize)

    e = sub.add_parser("embed", help="sct.tl.embed_cells on an h5ad")
    e.add_argument("input")
    e.add_argument("output")
    e.add_argument("--model", default="sct-tiny-pbmc")
    e.add_argument("--pooling", choices=["cls", "mean"])
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=_cmd_embed)

    r = sub.add_parser("pretrain", help="sct.tl.pretrain; writes a model folder")
    r.add_argument("input")
    r.add_argument("output", help="model folder to write")
    r.add_argument("--objective", default="mlm", choices=["mlm", "ntp", "generative"])
    r.add_argument("--method", default="rank", choices=["rank", "bin", "adaptive_bin", "value"])
    r.add_argument("--epochs", type=int, default=1)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto")
    r.set_defaults(func=_cmd_pretrain)

    m = sub.add_parser("models", help="list the named models")
    m.set_defaults(func=_cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
