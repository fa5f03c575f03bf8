"""How a call runs a model: ``Model.inference`` makes one ``train.infer.Inference`` that every
batch of the call uses and its params record."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sctransformer as sct
from conftest import nb_counts
from sctransformer._tokens import model_tokens
from test_annotate import tiny_model


@pytest.fixture(scope="module")
def setup():
    adata = nb_counts(60, 80, seed=11)
    model = sct.models.resolve(tiny_model(adata, max_length=40))
    return adata, model


def test_inference_resolves_every_setting_once(setup):
    _, model = setup
    run = model.inference(batch_size=8, device="cpu")
    assert run.device == torch.device("cpu")
    assert run.precision in ("fp32", "bf16")  # "auto" chosen for the call
    assert (run.layer, run.pooling) == (-1, "cls")  # the model's defaults
    assert run.params() == {
        "device": "cpu",
        "precision": run.precision,
        "batch_size": 8,
        "layer": -1,
        "pooling": "cls",
    }
    fixed = model.inference(batch_size=3, device="cpu", precision="fp32", layer=1, pooling="mean")
    assert (fixed.precision, fixed.layer, fixed.pooling) == ("fp32", 1, "mean")


def test_inference_without_pooling_records_none(setup):
    _, model = setup
    run = model.inference(batch_size=4, device="cpu", pools=False)
    assert run.pooling is None and "pooling" not in run.params()
    data = model_tokens(nb_counts(5, 80, seed=1), model)
    with pytest.raises(ValueError, match="pooling=None"):
        model.pooled(data, run)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer"),
        ({"batch_size": 4, "pooling": "max"}, "use 'cls' or 'mean'"),
        ({"batch_size": 4, "layer": 3}, "out of range for a 1-layer model"),
        ({"batch_size": 4, "precision": "fp8"}, "precision"),
    ],
)
def test_inference_names_the_bad_argument(setup, kw, match):
    _, model = setup
    with pytest.raises(ValueError, match=match):
        model.inference(device="cpu", **kw)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooled_batches_equal_one_cell_at_a_time(setup, pooling):
    """Length-grouped batches of 7 give each cell's vector as a plain one-cell forward does."""
    adata, model = setup
    data = model_tokens(adata, model)
    run = model.inference(batch_size=7, device="cpu", precision="fp32", pooling=pooling)
    got = model.pooled(data, run)
    is_gene = np.asarray(model.vocab.is_gene)
    module = model.module.eval()
    for i in range(len(data)):
        n = int(data.lengths[i])
        tokens = torch.as_tensor(data.tokens[i : i + 1, :n].astype(np.int64))
        values = torch.as_tensor(data.values[i : i + 1, :n])
        with torch.no_grad():
            h = module(tokens, values, padding_mask=torch.ones_like(tokens, dtype=torch.bool))
        states = h.last_hidden_state[0]
        genes = torch.as_tensor(is_gene[data.tokens[i, :n]])
        want = states[0] if pooling == "cls" else states[genes].mean(0)
        np.testing.assert_allclose(got[i], want.numpy(), rtol=1e-4, atol=1e-5)


def test_front_doors_record_the_settings_they_ran_with(setup):
    adata, model = setup
    gene = str(adata.var_names[int(np.argmax(np.asarray((adata.X > 0).sum(0)).ravel()))])
    runs = {
        "embed": sct.tl.embed_cells(adata, model, batch_size=5, device="cpu", copy=True).uns[
            "sct_embed"
        ]["params"],
        "genes": sct.tl.embed_genes(adata, model, batch_size=6, device="cpu", copy=True).uns[
            "sct_gene"
        ]["params"],
        "perturb": sct.tl.in_silico_perturb(
            adata, model, genes=[gene], batch_size=9, device="cpu", copy=True
        ).uns["sct_perturb"]["params"],
    }
    _, annotator = sct.tl.annotate(
        adata, model, labels_key="cell_type", method="knn", device="cpu", copy=True
    )
    predicted = annotator.predict(adata, batch_size=4, precision="auto", device="cpu", copy=True)
    runs["predict"] = predicted.uns["sct_label"]["params"]
    sizes = {"embed": 5, "genes": 6, "perturb": 9, "predict": 4}
    for name, params in runs.items():
        assert params["batch_size"] == sizes[name], name
        assert params["precision"] in ("fp32", "bf16"), name  # resolved, never "auto"
        assert params["device"] == "cpu" and params["layer"] == -1, name
    assert "pooling" not in runs["genes"]  # gene embedding pools no cells
    assert runs["predict"]["pooling"] == annotator.pooling
