"""Train the bundled demonstration model ``sct-tiny-pbmc``.

Seeded and CPU-only; a few minutes on 2 cores. Writes the checkpoint folder into the package
(``src/sctransformer/models/weights/sct-tiny-pbmc``) so ``sct.models.load("sct-tiny-pbmc")``
works offline. It is a demonstration model trained on 700 cells, not a foundation model.

    python scripts/train_tiny.py [--out FOLDER] [--epochs N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import sctransformer as sct
from sctransformer.demo import knn_accuracy
from sctransformer.nn import TransformerConfig
from sctransformer.tokenizers import GeneVocab

DEFAULT_OUT = Path(__file__).parents[1] / "src/sctransformer/models/weights/sct-tiny-pbmc"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(2)

    adata = sct.datasets.pbmc68k_counts()
    # 765 genes, at most ~410 expressed per cell: 512 tokens hold every expressed gene
    sct.pp.tokenize(adata, method="rank", max_length=512, add_cls=True)
    vocab = GeneVocab.from_json(adata.uns["sct"]["vocab"])
    config = TransformerConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        ffn_size=128,
        max_positions=512,
        dropout=0.1,
        attention_dropout=0.1,
        pad_token_id=vocab.pad_id,
        heads=["mlm"],
    )
    start = time.time()
    model = sct.tl.pretrain(
        adata,
        model=config,
        epochs=args.epochs,
        batch_size=16,
        lr=3e-3,
        seed=args.seed,
        precision="fp32",
        device="cpu",
    )
    minutes = (time.time() - start) / 60
    hist = adata.uns["sct_pretrain"]["history"]
    sct.tl.embed_cells(adata, model, precision="fp32", device="cpu")
    acc = knn_accuracy(adata.obsm["X_sct"], adata.obs["bulk_labels"])
    model.metadata.update(
        {
            "name": "sct-tiny-pbmc",
            "description": "demonstration model, not a foundation model",
            "training_data": "sct.datasets.pbmc68k_counts(): 700 PBMCs x 765 genes",
            "training_minutes_2_cpu_cores": round(minutes, 2),
            "final_loss": round(float(hist["loss"].tail(20).mean()), 4),
            "initial_loss": round(float(hist["loss"].head(5).mean()), 4),
            "knn_accuracy_bulk_labels": round(acc, 3),
            "pooling": "cls",
            "seed": args.seed,
        }
    )
    sct.models.save(model, args.out)
    print(
        f"trained {len(hist)} steps in {minutes:.1f} min; loss {hist['loss'].iloc[0]:.3f} "
        f"-> {hist['loss'].tail(20).mean():.3f}; 5-fold kNN accuracy {acc:.3f}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
