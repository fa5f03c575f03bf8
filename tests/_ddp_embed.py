"""Helper for test_embed_ddp.py: embed generated cells with a seeded untrained model.

Run directly (one process) or under ``python -m torch.distributed.run --nproc_per_node N``;
rank 0 saves the embedding to ``OUT/emb.npy``; every rank records what it holds afterwards.
With ``--grn METHOD``, ``tl.attention_grn`` runs instead and rank 0 pickles what it wrote to
``OUT/grn.pkl``.

    python tests/_ddp_embed.py OUT [--cells 37] [--pooling cls] [--stored] [--grn attention]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

import sctransformer as sct
from _ddp_train import generated
from sctransformer.models import Model
from sctransformer.nn import CellTransformer, TransformerConfig
from sctransformer.tokenizers import GeneVocab


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--cells", type=int, default=37)
    p.add_argument("--pooling", default="cls")
    p.add_argument("--stored", action="store_true", help="tokenize first (tokens reused)")
    p.add_argument("--genes", action="store_true", help="tl.embed_genes (groupby) instead")
    p.add_argument("--soma", help="embed this SOMA experiment's cells instead (tl.embed_soma)")
    p.add_argument("--grn", help="tl.attention_grn with this method (groupby, compare) instead")
    args = p.parse_args()
    torch.set_num_threads(1)
    sct.settings.progress_bars = False
    sct.settings.verbosity = 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    adata = generated(args.cells)
    ref = adata.copy()
    sct.pp.tokenize(ref, method="rank", max_length=24)
    vocab = GeneVocab.from_json(ref.uns["sct"]["vocab"])
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=len(vocab), hidden_size=32, num_layers=2, num_heads=4, ffn_size=64,
        max_positions=24, dropout=0.0, attention_dropout=0.0, pad_token_id=vocab.pad_id,
    )  # fmt: skip
    module = CellTransformer(config).eval()
    params = {k: v for k, v in ref.uns["sct"]["params"].items() if k != "version"}
    model = Model(module, vocab=vocab, tokenize_params=params, metadata={"name": "ddp-test"})
    rank = int(os.environ.get("RANK", "0"))
    if args.soma:
        emb = sct.tl.embed_soma(
            args.soma, model, X_name="data", var_key="var_id", pooling=args.pooling,
            precision="fp32", device="cpu", min_genes=10, batch_size=4, chunk_size=5,
        )  # fmt: skip
        if emb is not None:
            np.save(out / "emb.npy", emb.to_numpy())
            np.save(out / "joinids.npy", emb.index.to_numpy())
        (out / f"rank{rank}.json").write_text(json.dumps({"result": emb is not None}))
        return
    if args.stored:
        sct.pp.tokenize(adata, vocab=model)
    if args.grn:
        adata.obs["group"] = [f"g{i % 3}" for i in range(adata.n_obs)]
        sct.tl.attention_grn(
            adata, model, method=args.grn, groupby="group", compare=("g0", "g1"),
            n_permutations=5, deletion_cells=9, top_k=None, min_cells=1, device="cpu",
            min_genes=10, batch_size=4, chunk_size=5,
        )  # fmt: skip
        written = "sct_grn" in adata.uns
        if written:
            varp = {k: adata.varp[k] for k in ("sct_grn", "sct_grn_n_cells")}
            (out / "grn.pkl").write_bytes(pickle.dumps({"varp": varp, "uns": adata.uns["sct_grn"]}))
        held = {"result": written, "varp": sorted(adata.varp), "uns": sorted(adata.uns)}
        (out / f"rank{rank}.json").write_text(json.dumps(held))
        return
    if args.genes:
        adata.obs["group"] = [f"g{i % 3}" for i in range(adata.n_obs)]
        sct.tl.embed_genes(
            adata, model, groupby="group", precision="fp32", device="cpu", min_genes=10,
            batch_size=4, chunk_size=5,
        )  # fmt: skip
        if "sct_gene" in adata.varm:
            groups = adata.uns["sct_gene"]["groups"]
            np.save(out / "emb.npy", np.stack([adata.varm["sct_gene"], *(groups[g] for g in
                                                ("g0", "g1", "g2"))]))  # fmt: skip
            np.save(out / "n_cells.npy", adata.var["sct_gene_n_cells"].to_numpy())
        (out / f"rank{rank}.json").write_text(json.dumps({"result": "sct_gene" in adata.varm}))
        return
    sct.tl.embed_cells(
        adata, model, pooling=args.pooling, precision="fp32", device="cpu", min_genes=10,
        batch_size=4, chunk_size=5,
    )  # fmt: skip
    if "X_sct" in adata.obsm and rank == 0:
        np.save(out / "emb.npy", adata.obsm["X_sct"])
    held = {
        "X_sct": "X_sct" in adata.obsm,
        "uns": sorted(k for k in adata.uns if k.endswith("_embed")),
        "world_size": adata.uns["sct_embed"]["params"]["world_size"]
        if "sct_embed" in adata.uns and "world_size" in adata.uns["sct_embed"]["params"]
        else 1,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(held))


if __name__ == "__main__":
    main()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # rank 0 may still be writing; exit together, cleanly
        torch.distributed.destroy_process_group()
