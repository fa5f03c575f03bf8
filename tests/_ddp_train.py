"""Helper for test_train_ddp.py: pretrain a tiny model and save its parameters.

Run directly (one process) or under ``python -m torch.distributed.run --nproc_per_node N``;
rank 0 writes the parameters and the loss history to ``OUT``.

    python tests/_ddp_train.py OUT [--objective mlm] [--steps 6] [--batch-size 8] [--cells 36]
        [--distributed ddp|fsdp] [--checkpoint-every N] [--resume-from STEP_FOLDER]

``--checkpoint-every N`` writes ``OUT/ckpt/step-N`` folders.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

import sctransformer as sct
from sctransformer.nn import TransformerConfig
from sctransformer.tokenizers import GeneVocab


def generated(n_cells: int, n_genes: int = 120, seed: int = 0) -> AnnData:
    rng = np.random.default_rng(seed)
    mu = rng.lognormal(-1.0, 1.2, size=n_genes) * rng.lognormal(0, 0.5, size=(n_cells, 1))
    counts = rng.poisson(mu).astype(np.float32)
    return AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]),
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--objective", default="mlm")
    p.add_argument("--method", default="rank")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cells", type=int, default=36)
    p.add_argument("--distributed", default="ddp")
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--resume-from", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    sct.settings.progress_bars = False
    sct.settings.verbosity = 0

    adata = generated(args.cells)
    sct.pp.tokenize(adata, method=args.method, max_length=32)
    vocab = GeneVocab.from_json(adata.uns["sct"]["vocab"])
    heads = ["ntp"] if args.objective == "ntp" else ["mlm"]
    if args.method == "bin":
        heads.append("bins")
    config = TransformerConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        ffn_size=64,
        max_positions=32,
        # dropout masks are drawn per process; without dropout the update is deterministic
        dropout=0.0,
        attention_dropout=0.0,
        value_input="bins" if args.method == "bin" else "none",
        pad_token_id=vocab.pad_id,
        heads=heads,
    )
    model = sct.tl.pretrain(
        adata,
        model=config,
        objective=args.objective,
        max_steps=args.steps,
        epochs=10,
        batch_size=args.batch_size,
        lr=5e-3,
        warmup_steps=1,
        seed=3,
        device="cpu",
        precision="fp32",
        distributed=args.distributed,
        checkpoint_every=args.checkpoint_every,
        checkpoint_dir=os.path.join(args.out, "ckpt") if args.checkpoint_every else None,
        resume_from=args.resume_from,
    )
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        from safetensors.torch import save_file

        os.makedirs(args.out, exist_ok=True)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(args.out, "params.safetensors"))
        hist = adata.uns["sct_pretrain"]["history"]
        with open(os.path.join(args.out, "history.json"), "w") as fh:
            json.dump(hist.to_dict(orient="list"), fh)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
