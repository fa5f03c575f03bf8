"""Batch condition tokens through tokenize/pretrain/annotate, and sct.tl.integration_metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sctransformer as sct
from test_annotate import no_none, snapshot, tiny_model


def _two_batches(seed: int = 5):
    from conftest import nb_counts

    adata = nb_counts(120, 80, seed=seed)
    batch = np.where(np.arange(adata.n_obs) % 2, "b1", "b2")
    adata.obs["batch"] = pd.Categorical(batch)
    x = adata.X.toarray()
    x[batch == "b2"] = np.round(x[batch == "b2"] * 2.5)  # a depth batch effect
    adata.X = type(adata.X)(x)
    return adata


def test_pretrain_with_batch_key():
    adata = _two_batches()
    sct.pp.tokenize(adata, method="rank", max_length=24, batch_key="batch")  # tokens exist
    model = sct.tl.pretrain(
        adata, model=None, batch_key="batch", max_steps=2, batch_size=32, device="cpu"
    )
    assert sorted(model.vocab.conditions["batch"]) == ["b1", "b2"]
    fresh = _two_batches()
    model = sct.tl.pretrain(
        fresh,
        model=sct.nn.TransformerConfig(
            vocab_size=len(model.vocab),
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            ffn_size=64,
            max_positions=512,
        ),
        batch_key="batch",
        max_steps=2,
        device="cpu",
    )
    assert fresh.uns["sct"]["params"]["batch_key"] == "batch"
    tokens = fresh.obsm["sct_tokens"]
    b1 = model.vocab.condition_id("batch", "b1")
    assert (tokens[:, 1][fresh.obs["batch"] == "b1"] == b1).all()


def test_pretrain_refuses_tokens_without_that_batch_key():
    adata = _two_batches()
    sct.pp.tokenize(adata, method="rank", max_length=24)
    before = snapshot(adata)
    with pytest.raises(ValueError, match="batch_key=None"):
        sct.tl.pretrain(adata, batch_key="batch", max_steps=1)
    assert snapshot(adata) == before


@pytest.mark.parametrize("method", ["finetune", "knn"])
def test_annotate_with_batch_tokens_and_a_new_batch(method):
    adata = _two_batches()
    model = tiny_model(adata, batch_key="batch", max_length=24)
    n_vocab = len(model.vocab)
    ref, query = adata[:80].copy(), adata[80:].copy()
    query.obs["batch"] = pd.Categorical(["b3"] * query.n_obs)  # a batch the model never saw
    ann = sct.tl.annotate(
        query,
        model,
        reference=ref,
        labels_key="cell_type",
        method=method,
        batch_key="batch",
        epochs=1,
        device="cpu",
    )
    assert ann.batch_key == "batch"
    assert "b3" in ann.model.vocab.conditions["batch"]
    assert len(model.vocab) == n_vocab  # the given model is untouched
    assert query.uns["sct_label"]["params"]["batch_key"] == "batch"
    if method == "knn":  # frozen: the new token is the mean of the known batch tokens
        w = ann.model.embeddings.token.weight.detach()
        v = ann.model.vocab
        ids = [v.condition_id("batch", b) for b in ("b1", "b2")]
        np.testing.assert_allclose(
            w[v.condition_id("batch", "b3")].numpy(), w[ids].mean(0).numpy(), atol=1e-6
        )
    no_batch = AnnData(query.X, var=query.var)
    with pytest.raises(ValueError, match="'batch' not found"):
        ann.predict(no_batch)
    assert "sct_label" not in no_batch.obs


def _rep(mixed: bool, separated_labels: bool, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    batch = np.repeat(["a", "b"], n // 2)
    labels = np.tile(["x", "y"], n // 2)
    x = rng.normal(size=(n, 5))
    if not mixed:
        x[:, 0] += np.where(batch == "a", 8, -8)
    if separated_labels:
        x[:, 1] += np.where(labels == "x", 8, -8)
    adata = AnnData(
        np.ones((n, 3), dtype=np.float32),
        obs=pd.DataFrame({"batch": batch, "label": labels}, index=[f"c{i}" for i in range(n)]),
    )
    return adata, x


def test_integration_metrics_rank_representations():
    adata, good = _rep(mixed=True, separated_labels=True)
    _, bad = _rep(mixed=False, separated_labels=False)
    adata.obsm["X_good"], adata.obsm["X_bad"] = good, bad
    t = sct.tl.integration_metrics(
        adata, batch_key="batch", labels_key="label", use_rep=["X_good", "X_bad"]
    )
    assert list(t.index) == ["X_good", "X_bad"]
    assert t.loc["X_good", "batch_entropy"] > 0.9 > 0.1 > t.loc["X_bad", "batch_entropy"]
    assert t.loc["X_good", "ilisi"] > 1.8 and t.loc["X_bad", "ilisi"] < 1.1
    assert t.loc["X_good", "label_silhouette"] > 0.5 > t.loc["X_bad", "label_silhouette"]
    assert t.loc["X_bad", "batch_silhouette"] > 0.5
    assert adata.uns["sct_integration"].equals(t)
    assert no_none(adata.uns["sct_integration_params"])


def test_integration_metrics_subsamples():
    adata, x = _rep(mixed=True, separated_labels=True, n=200)
    adata.obsm["X_pca"] = x
    t = sct.tl.integration_metrics(
        adata, batch_key="batch", labels_key="label", use_rep="X_pca", max_cells=50
    )
    assert t.loc["X_pca", "n_cells"] == 50


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"use_rep": "X_nope"}, "'X_nope' not found"),
        ({"batch_key": "nope"}, "'nope' not found"),
        ({"batch_key": "one"}, "one batch"),
        ({"labels_key": "one"}, "one label"),
        ({"use_rep": []}, "use_rep is empty"),
        ({"n_neighbors": 0}, "n_neighbors"),
        ({"labels_key": "gappy"}, r"obs\['gappy'\] has 1 missing values; fill or drop"),
    ],
)
def test_integration_errors_leave_adata_unchanged(kwargs, match):
    adata, x = _rep(mixed=True, separated_labels=True, n=40)
    adata.obsm["X_pca"] = x
    adata.obs["one"] = "same"
    adata.obs["gappy"] = adata.obs["label"].astype(object)
    adata.obs.iloc[3, adata.obs.columns.get_loc("gappy")] = None
    adata.X = sp.csr_matrix(adata.X)
    before = snapshot(adata)
    kw = {"batch_key": "batch", "labels_key": "label", "use_rep": "X_pca", **kwargs}
    with pytest.raises(ValueError, match=match):
        sct.tl.integration_metrics(adata, **kw)
    assert snapshot(adata) == before


def test_kbet_and_batch_asw_rank_representations():
    from scipy.stats import chisquare

    from sctransformer.tl import _metrics

    adata, good = _rep(mixed=True, separated_labels=True)
    _, bad = _rep(mixed=False, separated_labels=False)
    b, lab = adata.obs["batch"].to_numpy(), adata.obs["label"].to_numpy()
    assert _metrics.kbet_acceptance(good, b, n_neighbors=20) > 0.8
    assert _metrics.kbet_acceptance(bad, b, n_neighbors=20) == 0.0
    assert _metrics.asw_batch(good, b, lab) > 0.9 > 0.2 > _metrics.asw_batch(bad, b, lab)
    # a per-cell reference: scipy's chi-squared test of each neighbourhood's batch counts
    idx = _metrics.knn_indices(good, 20)
    freq = np.array([np.mean(b == "a"), np.mean(b == "b")])
    accepted = [chisquare([np.sum(b[i] == "a"), np.sum(b[i] == "b")], freq * 20).pvalue >= 0.05
                for i in idx]  # fmt: skip
    assert _metrics.kbet_acceptance(good, b, n_neighbors=20) == pytest.approx(np.mean(accepted))


def test_benchmark_integration_task():
    adata = _two_batches()
    sct.tl.benchmark(adata, labels_key="cell_type", methods=["pca"], batch_key="batch",
                     n_seeds=2, n_neighbors=10)  # fmt: skip
    t = adata.uns["sct_benchmark"]["table"]
    assert set(t["task"]) == {"embedding", "integration"}
    integ = t[t["task"] == "integration"]
    assert set(integ["metric"]) == {"asw_batch", "ilisi", "ilisi_scaled", "batch_entropy",
                                    "kbet_acceptance"}  # fmt: skip
    assert sorted(set(integ["seed"])) == [0, 1]
    # the same numbers as integration_metrics on the same PCA
    from sctransformer.tl._baselines import _log_normalised, pca_embedding

    x = _log_normalised(adata, np.arange(adata.n_obs), None)
    adata.obsm["X_p"] = pca_embedding(x, np.arange(adata.n_obs), n_top_genes=2000, n_pcs=50,
                                      seed=0)  # fmt: skip
    ref = sct.tl.integration_metrics(adata, batch_key="batch", labels_key="cell_type",
                                     use_rep="X_p", n_neighbors=10)  # fmt: skip
    got = integ[integ["seed"] == 0].set_index("metric")["value"]
    assert got["ilisi"] == pytest.approx(ref.loc["X_p", "ilisi"], rel=1e-5)
    assert got["batch_entropy"] == pytest.approx(ref.loc["X_p", "batch_entropy"], rel=1e-5)
