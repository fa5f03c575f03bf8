"""sct.tl.embed_cells accepts converted Geneformer and scGPT models and uses their defaults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData

import sctransformer as sct

transformers = pytest.importorskip("transformers")

from test_models_geneformer import V1, V2_SMALL, write_geneformer_folder  # noqa: E402
from test_models_scgpt import GENES, ReferenceScGPT, scgpt_vocab, write_scgpt_folder  # noqa: E402


def _counts(var_names, n_cells=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.5, size=(n_cells, len(var_names))).astype(np.float32)
    x[:, 0] += 1  # no empty cell
    return AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=list(var_names)))


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_embed_cells_with_converted_geneformer(tmp_path, v2):
    cfg = dict(
        V2_SMALL if v2 else V1,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
    )
    bert, *_ = write_geneformer_folder(tmp_path, cfg, n_genes=80, v2=v2)
    model = sct.models.load(tmp_path)
    adata = _counts([f"SYM{j}" for j in range(80)])
    sct.tl.embed_cells(adata, model, precision="fp32", device="cpu")
    params = adata.uns["sct_embed"]["params"]
    assert params["pooling"] == ("cls" if v2 else "mean") and params["layer"] == -2
    emb = adata.obsm["X_sct"]
    # the same cells through transformers, embedded the way Geneformer's extractor does
    sct.pp.tokenize(adata, vocab=model)
    tokens = torch.from_numpy(adata.obsm["sct_tokens"].astype(np.int64))
    pad = tokens != 0
    with torch.no_grad():
        h = bert(input_ids=tokens, attention_mask=pad.long(), output_hidden_states=True)
    h = h.hidden_states[-2]
    if v2:
        ref = h[:, 0]
    else:
        w = pad[..., None].float()
        ref = (h * w).sum(1) / w.sum(1)
    assert np.abs(emb - ref.numpy()).max() < 1e-4


def test_embed_cells_with_converted_scgpt(tmp_path):
    sd = write_scgpt_folder(tmp_path / "scgpt")
    model = sct.models.load(tmp_path / "scgpt")
    adata = _counts(GENES)
    sct.tl.embed_cells(adata, model, precision="fp32", device="cpu")
    assert adata.uns["sct_embed"]["params"]["pooling"] == "cls"
    sct.pp.tokenize(adata, vocab=model)
    vocab = scgpt_vocab()
    tokens = torch.from_numpy(adata.obsm["sct_tokens"].astype(np.int64))
    values = torch.from_numpy(adata.obsm["sct_values"])
    ref = ReferenceScGPT(sd, len(vocab), vocab["<pad>"]).eval()
    with torch.no_grad():
        cls = ref(tokens, values, tokens == vocab["<pad>"])[:, 0]
    # scGPT L2-normalises its cell embeddings; embed_cells returns the raw <cls> state
    assert np.abs(adata.obsm["X_sct"] - cls.numpy()).max() < 1e-4
