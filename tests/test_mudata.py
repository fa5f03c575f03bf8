"""MuData: one sequence per cell over the modalities, against per-cell references."""

from __future__ import annotations

import math
import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData

import sctransformer as sct
from _train_utils import tiny_config, untrained_model
from sctransformer.tokenizers import GeneVocab

md.set_options(pull_on_update=False)


def make_mudata(mods: dict[str, AnnData]) -> md.MuData:
    with warnings.catch_warnings():
        # mudata notes that var_names intersect across modalities (they do, on purpose)
        warnings.simplefilter("ignore", UserWarning)
        return md.MuData(mods)


def cite_seq(n: int = 48, n_missing: int = 4, seed: int = 0) -> md.MuData:
    """RNA counts and protein ADT counts; CD3/CD4/CD8A name both a gene and a protein. The
    protein modality lacks ``n_missing`` cells and lists its cells in another order."""
    rng = np.random.default_rng(seed)
    cells = [f"AAAC{i:04d}" for i in range(n)]
    genes = [f"GENE{j}" for j in range(57)] + ["CD3", "CD4", "CD8A"]
    rna = AnnData(
        sp.csr_matrix(rng.negative_binomial(2, 0.7, (n, len(genes))).astype(np.float32)),
        obs=pd.DataFrame(index=cells),
        var=pd.DataFrame(index=genes),
    )
    prot_cells = list(rng.permutation(cells[n_missing:]))
    proteins = ["CD3", "CD4", "CD8A", "CD19", "CD14", "CD56", "HLA-DR", "CD45RA"]
    adt = rng.poisson(rng.lognormal(3, 1, len(proteins)), (len(prot_cells), len(proteins)))
    prot = AnnData(
        adt.astype(np.float32),  # dense, as ADT matrices usually are
        obs=pd.DataFrame(index=prot_cells),
        var=pd.DataFrame(index=proteins),
    )
    return make_mudata({"rna": rna, "prot": prot})


def bin_reference(row: np.ndarray, ids: np.ndarray, n_bins: int = 6) -> tuple[list, list]:
    """scBERT bins of one cell: expressed genes in var order, floor(log1p(cp10k)) clipped."""
    expr = np.log1p(row / row.sum() * 1e4)
    genes = [j for j in range(len(row)) if row[j] > 0 and ids[j] >= 0]
    return [int(ids[j]) for j in genes], [min(math.floor(expr[j]), n_bins - 1) for j in genes]


def dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def test_cite_seq_sequences_equal_per_cell_reference():
    mdata = cite_seq()
    with pytest.warns(UserWarning, match="4 of 48 cells are missing from some modality"):
        sct.pp.tokenize(mdata, method="bin")
    vocab = GeneVocab.from_json(mdata.uns["sct"]["vocab"])
    # colliding protein names are prefixed; RNA keeps its names
    assert {"CD3", "CD4", "CD8A", "prot:CD3", "prot:CD4", "prot:CD8A", "CD19"} <= set(vocab.genes)
    assert vocab["CD3"] != vocab["prot:CD3"]
    params = mdata.uns["sct"]["params"]
    assert list(params["modality_order"]) == ["rna", "prot"]
    (r0, r1), (p0, p1) = params["modalities"]["rna"]["range"], params["modalities"]["prot"]["range"]
    assert r1 - r0 == 60 and p1 - p0 == 8 and r1 <= p0
    assert params["modalities"]["prot"]["layer"] == "X" and params["n_cells_dropped"] == 4

    rna, prot = mdata["rna"], mdata["prot"]
    rna_ids = vocab.encode_genes(list(rna.var_names))
    prot_ids = vocab.encode_genes(
        ["prot:" + g if g in rna.var_names else g for g in prot.var_names]
    )
    assert (prot_ids >= p0).all() and (prot_ids < p1).all()
    x_rna, x_prot = dense(rna.X), dense(prot.X)
    tokens, values = mdata.obsm["sct_tokens"], mdata.obsm["sct_values"]
    n_tokens = mdata.obs["sct_n_tokens"].to_numpy()
    prot_row = {c: i for i, c in enumerate(prot.obs_names)}
    for i, cell in enumerate(mdata.obs_names):
        if cell not in prot_row:
            assert n_tokens[i] == 0 and (tokens[i] == vocab.pad_id).all()
            continue
        t_r, v_r = bin_reference(x_rna[rna.obs_names.get_loc(cell)], rna_ids)
        t_p, v_p = bin_reference(x_prot[prot_row[cell]], prot_ids)
        mod_r, mod_p = vocab.condition_id("mod", "rna"), vocab.condition_id("mod", "prot")
        want_t = [vocab.cls_id, mod_r, *t_r, mod_p, *t_p]
        want_v = [-2.0, -2.0, *v_r, -2.0, *v_p]
        assert n_tokens[i] == len(want_t)
        np.testing.assert_array_equal(tokens[i, : len(want_t)], want_t)
        np.testing.assert_array_equal(values[i, : len(want_v)], want_v)
        assert (tokens[i, len(want_t) :] == vocab.pad_id).all()


def rna_atac(n: int = 40, seed: int = 1) -> md.MuData:
    """RNA counts and ATAC gene activity (fragment counts over gene bodies) on the same genes."""
    rng = np.random.default_rng(seed)
    cells = [f"cell{i}" for i in range(n)]
    genes = [f"GENE{j}" for j in range(70)]
    rna = AnnData(
        sp.csr_matrix(rng.negative_binomial(2, 0.6, (n, 70)).astype(np.float32)),
        obs=pd.DataFrame(index=cells),
        var=pd.DataFrame(index=genes),
    )
    atac = AnnData(
        sp.csr_matrix(rng.poisson(1.5, (n, 70)).astype(np.float32)),
        obs=pd.DataFrame(index=cells),
        var=pd.DataFrame(index=genes),
    )
    return make_mudata({"rna": rna, "atac": atac})


def test_rna_atac_segments_equal_tokenizing_each_modality():
    mdata = rna_atac()
    sct.pp.tokenize(mdata, method="rank", max_length={"rna": 30, "atac": 20})
    vocab = GeneVocab.from_json(mdata.uns["sct"]["vocab"])
    assert all(f"atac:GENE{j}" in vocab for j in range(70))  # every ATAC name collides
    params = mdata.uns["sct"]["params"]
    assert params["modalities"]["rna"]["max_length"] == 30
    assert params["modalities"]["atac"]["max_length"] == 20
    tokens = mdata.obsm["sct_tokens"]
    for mod, width, offset in (("rna", 30, 2), ("atac", 20, None)):
        alone = mdata[mod].copy()
        prefix = "atac:" if mod == "atac" else ""
        alone.var_names = [prefix + g for g in alone.var_names]
        ref = sct.pp.tokenize(
            alone, method="rank", vocab=vocab, max_length=width, add_cls=False, copy=True
        )
        ref_t, ref_n = ref.obsm["sct_tokens"], ref.obs["sct_n_tokens"].to_numpy()
        for i in range(mdata.n_obs):
            n_rna = int(
                (tokens[i] >= params["modalities"]["rna"]["range"][0]).sum()
                - (tokens[i] >= params["modalities"]["atac"]["range"][0]).sum()
            )
            start = 2 if offset else 3 + n_rna
            assert tokens[i, start - 1] == vocab.condition_id("mod", mod)
            np.testing.assert_array_equal(tokens[i, start : start + ref_n[i]], ref_t[i, : ref_n[i]])


def _forward_cls(model, tokens, lengths):
    out = []
    with torch.no_grad():
        for row, n in zip(tokens, lengths, strict=True):
            res = model(torch.as_tensor(row[:n], dtype=torch.long)[None])
            out.append(res.last_hidden_state[0, 0].numpy())
    return np.stack(out)


@pytest.fixture(scope="module")
def rank_cite():
    mdata = cite_seq()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the 4 cells missing from prot
        sct.pp.tokenize(mdata, method="rank", max_length={"rna": 40, "prot": 8})
    return mdata, untrained_model(mdata)


def test_embed_cells_equals_per_cell_forward(rank_cite):
    mdata, model = rank_cite
    out = sct.tl.embed_cells(mdata, model, precision="fp32", device="cpu", copy=True)
    assert "X_sct" not in mdata.obsm
    emb = out.obsm["X_sct"]
    n_tokens = mdata.obs["sct_n_tokens"].to_numpy()
    kept = n_tokens > 0
    assert emb.shape == (48, 32) and np.isnan(emb[~kept]).all() and kept.sum() == 44
    ref = _forward_cls(model, mdata.obsm["sct_tokens"][kept], n_tokens[kept])
    np.testing.assert_allclose(emb[kept], ref, atol=1e-5)
    params = out.uns["sct_embed"]["params"]
    assert params["tokens_reused"] and list(params["modalities"]) == ["rna", "prot"]
    assert params["n_cells_embedded"] == 44

    # a fresh MuData (no tokens yet) is tokenized with the model's modality settings
    fresh = cite_seq()
    with pytest.warns(UserWarning, match="missing from some modality"):
        sct.tl.embed_cells(fresh, model, precision="fp32", device="cpu")
    np.testing.assert_allclose(fresh.obsm["X_sct"][kept], emb[kept], atol=1e-6)
    assert not fresh.uns["sct_embed"]["params"]["tokens_reused"]


def test_pretrain_on_mudata_returns_a_model_that_embeds_it():
    mdata = rna_atac(n=24)
    sct.pp.tokenize(mdata, method="rank", max_length={"rna": 16, "atac": 16})
    vocab = GeneVocab.from_json(mdata.uns["sct"]["vocab"])
    config = tiny_config(vocab, 35, num_layers=1, hidden_size=16, num_heads=2, ffn_size=32)
    config.heads = ["mlm"]
    model = sct.tl.pretrain(mdata, model=config, max_steps=2, batch_size=8, device="cpu")
    assert list(model.tokenize_params["modality_order"]) == ["rna", "atac"]
    assert "MuData" in model.metadata["training_data"]
    assert len(mdata.uns["sct_pretrain"]["history"]) == 2
    fresh = rna_atac(n=24)
    sct.tl.embed_cells(fresh, model, precision="fp32", device="cpu")
    assert np.isfinite(fresh.obsm["X_sct"]).all() and fresh.obsm["X_sct"].shape == (24, 16)


# -- bad input -------------------------------------------------------------------------------


def _untouched(mdata, obsm_before, uns_before):
    assert set(mdata.obsm) == obsm_before and set(mdata.uns) == uns_before


def test_no_shared_cells_is_a_clear_error_and_writes_nothing():
    mdata = cite_seq()
    prot = mdata["prot"].copy()
    prot.obs_names = [c + "-1" for c in prot.obs_names]  # a suffix added to one modality
    mdata = make_mudata({"rna": mdata["rna"].copy(), "prot": prot})
    before = (set(mdata.obsm), set(mdata.uns))
    with pytest.raises(ValueError, match=r"no cell is in every modality .*0 shared.*suffix"):
        sct.pp.tokenize(mdata, method="bin")
    _untouched(mdata, *before)


def test_modality_without_vocabulary_genes_is_a_clear_error(rank_cite):
    _, model = rank_cite
    mdata = cite_seq()
    prot = mdata["prot"].copy()
    prot.var_names = [f"ADT_{g}" for g in prot.var_names]  # another panel's naming
    mdata = make_mudata({"rna": mdata["rna"].copy(), "prot": prot})
    before = (set(mdata.obsm), set(mdata.uns))
    with pytest.raises(ValueError, match=r"modality 'prot'.*modalities=\['rna'\]"):
        sct.tl.embed_cells(mdata, model, device="cpu")
    _untouched(mdata, *before)


def test_single_anndata_model_on_mudata_is_refused(counts):
    sct.pp.tokenize(counts, method="rank", max_length=32)
    model = untrained_model(counts)
    mdata = cite_seq()
    with pytest.raises(ValueError, match=r"trained on one AnnData.*mdata\[mod\]"):
        sct.tl.embed_cells(mdata, model, device="cpu")
    assert "X_sct" not in mdata.obsm


def test_unknown_modality_names_the_known_ones(rank_cite):
    _, model = rank_cite
    mdata = rna_atac()
    with pytest.raises(ValueError, match=r"\['atac'\] are not among them"):
        sct.tl.embed_cells(mdata, model, device="cpu")
    assert "X_sct" not in mdata.obsm
