"""``sct.pp.tokenize`` as a scanpy step: storage formats, keys, vocabularies, recorded params."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sctransformer as sct
from sctransformer.tokenizers import GeneVocab

METHODS = ["rank", "bin", "adaptive_bin", "value", "sentence"]


def outputs(adata: AnnData, key: str = "sct") -> dict:
    out = {f"{key}_n_tokens": adata.obs[f"{key}_n_tokens"].to_numpy()}
    if f"{key}_sentence" in adata.obs:
        out[f"{key}_sentence"] = adata.obs[f"{key}_sentence"].to_numpy()
    for k in (f"{key}_tokens", f"{key}_values"):
        if k in adata.obsm:
            out[k] = adata.obsm[k]
    return out


def assert_same_outputs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("method", METHODS)
def test_dense_csr_csc_backed_agree(counts, tmp_path, method):
    kw = {"method": method, "chunk_size": 50}
    if method == "adaptive_bin":
        kw["select"] = "random"
        kw["max_length"] = 20
    want = sct.pp.tokenize(counts, copy=True, **kw)
    dense = counts.X.toarray()
    others = (dense, sp.csc_matrix(counts.X), counts.X.astype(np.int32), dense.astype(np.float16))
    for x in others:
        other = AnnData(x, obs=counts.obs.copy(), var=counts.var.copy())
        sct.pp.tokenize(other, **kw)
        assert_same_outputs(outputs(other), outputs(want))
    path = tmp_path / "counts.h5ad"
    counts.write_h5ad(path)
    backed = anndata.read_h5ad(path, backed="r")
    try:
        got = sct.pp.tokenize(backed, copy=True, **kw)
        assert not got.isbacked
        assert_same_outputs(outputs(got), outputs(want))
        assert "sct_tokens" not in backed.obsm
    finally:
        backed.file.close()


def test_layer_is_read_instead_of_x(counts):
    layered = counts.copy()
    layered.layers["counts"] = layered.X.copy()
    layered.X = sp.csr_matrix(np.log1p(layered.X.toarray()))
    sct.pp.tokenize(layered, method="rank", layer="counts")
    sct.pp.tokenize(counts, method="rank")
    assert_same_outputs(outputs(layered), outputs(counts))
    assert layered.uns["sct"]["params"]["layer"] == "counts"


def test_copy_returns_new_and_leaves_input(counts):
    before = counts.copy()
    out = sct.pp.tokenize(counts, method="rank", copy=True)
    assert isinstance(out, AnnData) and out is not counts
    assert "sct_tokens" in out.obsm
    assert list(counts.obsm) == [] and list(counts.uns) == []
    assert list(counts.obs.columns) == list(before.obs.columns)
    assert (counts.X != before.X).nnz == 0
    assert sct.pp.tokenize(counts, method="rank") is None
    assert_same_outputs(outputs(counts), outputs(out))


def test_key_added_renames_every_key(counts):
    sct.pp.tokenize(counts, method="rank", key_added="gf")
    assert set(counts.obsm) == {"gf_tokens", "gf_values"}
    assert "gf_n_tokens" in counts.obs and "gf" in counts.uns
    assert not any(k.startswith("sct") for k in [*counts.obsm, *counts.obs, *counts.uns])
    sct.pp.tokenize(counts, method="sentence", key_added="c2s")
    assert "c2s_sentence" in counts.obs and "c2s" in counts.uns
    assert set(counts.obsm) == {"gf_tokens", "gf_values"}


def test_retokenizing_under_same_key_replaces_layout(counts):
    sct.pp.tokenize(counts, method="rank")
    sct.pp.tokenize(counts, method="sentence")
    assert "sct_tokens" not in counts.obsm and "sct_values" not in counts.obsm
    sct.pp.tokenize(counts, method="bin")
    assert "sct_sentence" not in counts.obs and "sct_tokens" in counts.obsm


@pytest.mark.parametrize("method", ["rank", "bin", "adaptive_bin", "value"])
def test_batch_key_adds_condition_token_after_cls(counts, method):
    # without a vocabulary, one is built with a token per donor
    sct.pp.tokenize(counts, method=method, max_length=41, batch_key="donor")
    vocab = GeneVocab.from_json(counts.uns["sct"]["vocab"])
    assert sorted(vocab.conditions["batch"]) == ["d1", "d2", "d3"]
    # same vocabulary (same ids, so the same seeded hash) without the batch token
    plain = sct.pp.tokenize(counts, method=method, vocab=vocab, max_length=40, copy=True)
    tok = counts.obsm["sct_tokens"]
    assert (tok[:, 0] == vocab.cls_id).all()
    want = [vocab.condition_id("batch", d) for d in counts.obs["donor"]]
    np.testing.assert_array_equal(tok[:, 1], want)
    assert vocab.id_to_token([tok[0, 1]]) == [f"<batch={counts.obs['donor'].iloc[0]}>"]
    assert (counts.obsm["sct_values"][:, 1] == -2).all()
    # the rest is the encoding without the batch token (same number of gene slots)
    np.testing.assert_array_equal(
        np.delete(counts.obsm["sct_values"], 1, axis=1), plain.obsm["sct_values"]
    )
    np.testing.assert_array_equal(
        counts.obs["sct_n_tokens"].to_numpy(), plain.obs["sct_n_tokens"].to_numpy() + 1
    )
    params = counts.uns["sct"]["params"]
    assert params["batch_key"] == "donor" and params["conditions"] == ["batch"]


def test_batch_key_with_vocab_lacking_the_batch(counts):
    vocab = GeneVocab.from_genes(counts.var_names, conditions={"batch": ["d1", "d2"]})
    with pytest.raises(ValueError, match=r"batch 'd3' has no token.*with_conditions"):
        sct.pp.tokenize(counts, method="bin", vocab=vocab, batch_key="donor")
    assert "sct_tokens" not in counts.obsm
    sct.pp.tokenize(
        counts, method="bin", vocab=vocab.with_conditions("batch", ["d3"]), batch_key="donor"
    )


class _Model:
    """Anything with ``.vocab`` and ``.tokenize_params`` stands for a model."""

    def __init__(self, vocab, params):
        self.vocab = vocab
        self.tokenize_params = params


def test_model_supplies_vocab_and_defaults(counts):
    rng = np.random.default_rng(0)
    meds = {
        g: float(v) for g, v in zip(counts.var_names, rng.uniform(1, 5, counts.n_vars), strict=True)
    }
    vocab = GeneVocab.from_genes(
        counts.var_names[:250], specials=["<pad>", "<mask>", "<cls>", "<eos>"], gene_medians=meds
    )
    model = _Model(vocab, {"method": "rank", "max_length": 30, "add_cls": True, "add_eos": True})
    sct.pp.tokenize(counts, vocab=model)
    want = sct.pp.tokenize(
        counts, method="rank", vocab=vocab, max_length=30, add_eos=True, copy=True
    )
    assert_same_outputs(outputs(counts), outputs(want))
    p = counts.uns["sct"]["params"]
    assert p["method"] == "rank" and p["max_length"] == 30 and p["add_eos"] is True
    # explicit arguments win; a different method ignores the model's rank settings
    sct.pp.tokenize(counts, vocab=model, max_length=12)
    assert counts.uns["sct"]["params"]["max_length"] == 12
    sct.pp.tokenize(counts, vocab=model, method="bin")
    p = counts.uns["sct"]["params"]
    assert p["max_length"] == -1 and p["add_eos"] is False and p["n_bins"] == 6


def test_vocab_object_of_wrong_type(counts):
    with pytest.raises(ValueError, match="GeneVocab or a model"):
        sct.pp.tokenize(counts, method="rank", vocab=list(counts.var_names))


def _walk(obj, path="uns"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}[{k!r}]")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


@pytest.mark.parametrize("method", METHODS)
def test_params_record_everything_and_no_none(counts, tmp_path, method):
    sct.pp.tokenize(counts, method=method)
    params = counts.uns["sct"]["params"]
    for name in [
        "method",
        "max_length",
        "target_sum",
        "normalize",
        "n_bins",
        "bin_width",
        "select",
        "include_zeros",
        "add_cls",
        "add_eos",
        "pad_value",
        "gene_medians",
        "batch_key",
        "seed",
        "layer",
        "gene_key",
        "min_gene_fraction",
        "version",
    ]:
        assert name in params, name
    assert params["method"] == method
    assert params["version"] == sct.__version__
    nones = [p for p, v in _walk(counts.uns["sct"]) if v is None]
    assert nones == []
    # and the result survives a round trip through h5ad
    counts.write_h5ad(tmp_path / "t.h5ad")
    back = anndata.read_h5ad(tmp_path / "t.h5ad")
    assert GeneVocab.from_json(back.uns["sct"]["vocab"]) == GeneVocab.from_json(
        counts.uns["sct"]["vocab"]
    )


def test_gene_key_and_ensembl_names(counts):
    ens = [f"ENSG{j:011d}" for j in range(counts.n_vars)]
    vocab = GeneVocab.from_genes(ens)
    by_symbol = counts.copy()
    by_symbol.var["gene_ids"] = [f"{e}.{j % 7 + 1}" for j, e in enumerate(ens)]  # versioned
    sct.pp.tokenize(by_symbol, method="value", vocab=vocab, gene_key="gene_ids")
    by_id = AnnData(counts.X.copy(), var=pd.DataFrame(index=ens))
    sct.pp.tokenize(by_id, method="value", vocab=vocab)
    assert_same_outputs(outputs(by_symbol), outputs(by_id))
    assert by_symbol.uns["sct"]["params"]["gene_key"] == "gene_ids"
    assert by_symbol.uns["sct"]["params"]["n_genes_matched"] == counts.n_vars


def test_symbols_through_aliases(counts):
    ens = [f"ENSG{j:011d}" for j in range(counts.n_vars)]
    aliases = dict(zip(counts.var_names, ens, strict=True))
    vocab = GeneVocab.from_genes(ens, aliases=aliases)
    sct.pp.tokenize(counts, method="bin", vocab=vocab)
    by_id = AnnData(counts.X.copy(), var=pd.DataFrame(index=ens))
    sct.pp.tokenize(by_id, method="bin", vocab=vocab)
    assert_same_outputs(outputs(counts), outputs(by_id))


def test_normalize_false_uses_values_as_given(counts):
    logged = counts.copy()
    x = logged.X.toarray().astype(np.float64)
    logged.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4))
    sct.pp.tokenize(logged, method="value", normalize=False)
    sct.pp.tokenize(counts, method="value")
    np.testing.assert_allclose(logged.obsm["sct_values"], counts.obsm["sct_values"], rtol=1e-6)
    np.testing.assert_array_equal(logged.obsm["sct_tokens"], counts.obsm["sct_tokens"])
