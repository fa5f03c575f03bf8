"""sct.tl.annotate: methods, keys written, gene-set differences, errors, saving the classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import sctransformer as sct
from sctransformer.nn import TransformerConfig
from sctransformer.nn.model import CellTransformer
from sctransformer.tokenizers import GeneVocab

TINY = Path(sct.__file__).parent / "models" / "weights" / "sct-tiny-pbmc"


def tiny_model(adata, *, max_length: int = 48, hidden: int = 32, seed: int = 0, batch_key=None):
    """An untrained 1-layer rank model whose vocabulary is ``adata``'s genes."""
    tok = adata.copy()
    sct.pp.tokenize(tok, method="rank", max_length=max_length, batch_key=batch_key)
    vocab = GeneVocab.from_json(tok.uns["sct"]["vocab"])
    cfg = TransformerConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_layers=1,
        num_heads=2,
        ffn_size=2 * hidden,
        max_positions=max_length,
        pad_token_id=vocab.pad_id,
    )
    torch.manual_seed(seed)
    model = CellTransformer(cfg)
    model.vocab = vocab
    model.tokenize_params = {
        k: v for k, v in tok.uns["sct"]["params"].items() if k not in ("version", "n_genes_matched")
    }
    model.metadata = {"name": "test-tiny"}
    return model.eval()


def snapshot(adata) -> tuple:
    """What a failed call must leave as it was."""
    return (
        list(adata.obs.columns),
        list(adata.obsm.keys()),
        list(adata.uns.keys()),
        list(adata.var_names),
        adata.X.copy().toarray().sum(),
    )


def no_none(d) -> bool:
    if d is None:
        return False
    if isinstance(d, dict):
        return all(no_none(v) for v in d.values())
    if isinstance(d, list | tuple):
        return all(no_none(v) for v in d)
    return True


@pytest.fixture(scope="module")
def data():
    from conftest import nb_counts

    adata = nb_counts(160, 120, seed=1)
    model = tiny_model(adata)
    ref, query = adata[:120].copy(), adata[120:].copy()
    return model, ref, query


@pytest.mark.parametrize("method", ["finetune", "linear", "knn"])
def test_keys_written(data, method):
    model, ref, query = data
    query = query.copy()
    ann = sct.tl.annotate(
        query,
        model,
        reference=ref,
        labels_key="cell_type",
        method=method,
        epochs=2,
        device="cpu",
    )
    assert isinstance(ann, sct.tl.CellAnnotator)
    lab = query.obs["sct_label"]
    assert isinstance(lab.dtype, pd.CategoricalDtype)
    assert list(lab.cat.categories) == list(ref.obs["cell_type"].cat.categories)
    score = query.obs["sct_label_score"].to_numpy()
    assert ((score >= 0) & (score <= 1 + 1e-6)).all()
    proba = query.obsm["sct_label_proba"]
    assert isinstance(proba, pd.DataFrame)
    assert list(proba.columns) == ann.classes
    assert (proba.index == query.obs_names).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(proba.max(1), score, atol=1e-6)
    assert (np.asarray(ann.classes)[proba.to_numpy().argmax(1)] == lab.astype(str)).all()
    params = query.uns["sct_label"]["params"]
    assert params["method"] == method and params["model"] == "test-tiny"
    assert no_none(query.uns["sct_label"])


def test_does_not_change_the_given_model(data):
    model, ref, query = data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ann = sct.tl.annotate(
        query.copy(), model, reference=ref, labels_key="cell_type", method="finetune",
        epochs=1, device="cpu",
    )  # fmt: skip
    assert ann.model is not model and "classifier" in ann.model.heads
    assert "classifier" not in model.heads
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k

    # provenance: the fine-tuned weights are not the given model's
    def weights_sha256(m):
        return sct.models.resolve(m).sha256

    assert ann.model.metadata["derived_from_sha256"] == weights_sha256(model)
    assert weights_sha256(ann.model) != weights_sha256(model)


def test_freeze_trains_only_the_head(data):
    model, ref, query = data
    ann = sct.tl.annotate(
        query.copy(),
        model,
        reference=ref,
        labels_key="cell_type",
        method="finetune",
        freeze=True,
        epochs=2,
        device="cpu",
    )
    enc = {k: v for k, v in ann.model.state_dict().items() if not k.startswith("heads.classifier")}
    for k, v in model.state_dict().items():
        assert torch.equal(enc[k], v), k
    assert len(ann.history) >= 1 and "val_loss" in ann.history


def test_unknown_threshold(data):
    model, ref, query = data
    query = query.copy()
    sct.tl.annotate(
        query,
        model,
        reference=ref,
        labels_key="cell_type",
        method="knn",
        unknown_threshold=1.0,
        device="cpu",
    )
    lab = query.obs["sct_label"]
    assert "unknown" in lab.cat.categories
    low = query.obs["sct_label_score"] < 1.0
    assert (lab[low] == "unknown").all()
    assert query.uns["sct_label"]["params"]["unknown_threshold"] == 1.0


def test_reference_none_uses_labelled_cells(data):
    model, ref, _ = data
    adata = ref.copy()
    labels = adata.obs["cell_type"].astype(object)
    labels.iloc[::4] = np.nan
    adata.obs["cell_type"] = pd.Categorical(labels)
    sct.tl.annotate(adata, model, labels_key="cell_type", method="linear", device="cpu")
    assert adata.obs["sct_label"].notna().all()
    assert adata.uns["sct_label"]["params"]["n_reference"] == int(labels.notna().sum())


def test_different_gene_sets(data):
    model, ref, query = data
    rng = np.random.default_rng(0)
    keep = rng.permutation(query.n_vars)[:90]  # 75% of the genes, another order
    q = query[:, keep].copy()
    extra = q.copy()
    extra.var_names = [f"NOVEL{i}" for i in range(extra.n_vars)]
    import anndata as ad

    q = ad.concat([q, extra], axis=1, merge="first")  # plus genes the model never saw
    q.obs = query.obs.copy()
    sct.tl.annotate(
        q,
        model,
        reference=ref,
        labels_key="cell_type",
        method="knn",
        min_gene_fraction=0.3,
        device="cpu",
    )
    assert q.obs["sct_label"].notna().all()


def test_query_with_too_few_known_genes(data):
    model, ref, query = data
    q = query[:, :10].copy()
    before = snapshot(q)
    with pytest.raises(ValueError, match="query has only 10 of its 10 genes"):
        sct.tl.annotate(q, model, reference=ref, labels_key="cell_type", method="knn")
    q2 = query.copy()
    q2.var_names = [f"OTHER{i}" if i % 2 else g for i, g in enumerate(query.var_names)]
    q2.var_names = [f"OTHER{i}" if i > 40 else g for i, g in enumerate(q2.var_names)]
    with pytest.raises(ValueError, match="the query"):
        sct.tl.annotate(q2, model, reference=ref, labels_key="cell_type", method="knn")
    assert snapshot(q) == before
    assert "sct_label" not in q2.obs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "svm"}, "method='svm'"),
        ({"labels_key": "nope"}, "'nope' not found"),
        ({"unknown_threshold": 1.5}, "unknown_threshold"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"pooling": "max"}, "pooling='max'"),
        ({"layer": 5}, "layer=5"),
        ({"batch_key": "missing"}, "'missing' not found"),
        ({"labels_key": None}, "labels_key is required"),
        ({"batch_key": "gappy"}, r"obs\['gappy'\] of the reference has 1 missing values"),
    ],
)
def test_errors_leave_adata_unchanged(data, kwargs, match):
    model, ref, query = data
    query, ref = query.copy(), ref.copy()
    for a in (query, ref):
        a.obs["gappy"] = "b1"
    ref.obs.iloc[2, ref.obs.columns.get_loc("gappy")] = None
    before, before_ref = snapshot(query), snapshot(ref)
    kw = {"reference": ref, "labels_key": "cell_type", **kwargs}
    with pytest.raises(ValueError, match=match):
        sct.tl.annotate(query, model, **kw)
    assert snapshot(query) == before and snapshot(ref) == before_ref


def test_one_class_reference(data):
    model, ref, query = data
    ref = ref.copy()
    ref.obs["one"] = "T"
    query = query.copy()
    before = snapshot(query)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        sct.tl.annotate(query, model, reference=ref, labels_key="one")
    assert snapshot(query) == before


@pytest.mark.parametrize("method", ["finetune", "linear", "knn"])
def test_save_load_roundtrip(data, tmp_path, method):
    model, ref, query = data
    q1 = query.copy()
    ann = sct.tl.annotate(
        q1,
        model,
        reference=ref,
        labels_key="cell_type",
        method=method,
        epochs=1,
        precision="fp32",
        device="cpu",
    )
    path = ann.save(tmp_path / "annotator")
    assert (path / "config.json").exists() and (path / "metadata.json").exists()
    loaded = sct.tl.CellAnnotator.load(path)
    assert loaded.classes == ann.classes and loaded.method == method
    q2 = query.copy()
    loaded.predict(q2, precision="fp32", device="cpu")
    np.testing.assert_allclose(
        q2.obsm["sct_label_proba"].to_numpy(), q1.obsm["sct_label_proba"].to_numpy(), atol=1e-5
    )
    # the folder is an ordinary checkpoint; annotate() takes it as a fitted classifier
    net = sct.models.load(path)
    assert net.config.num_classes == (len(ann.classes) if method == "finetune" else 0)
    q3 = query.copy()
    sct.tl.annotate(q3, str(path), precision="fp32", device="cpu")
    assert (q3.obs["sct_label"] == q1.obs["sct_label"]).all()


def test_load_plain_checkpoint_is_refused(data, tmp_path):
    model, *_ = data
    sct.models.save(model, tmp_path / "plain")
    with pytest.raises(ValueError, match="without a fitted classifier"):
        sct.tl.CellAnnotator.load(tmp_path / "plain")


def test_copy_returns_annotated_copy(data):
    model, ref, query = data
    before = snapshot(query)
    out, ann = sct.tl.annotate(
        query, model, reference=ref, labels_key="cell_type", method="knn", copy=True
    )
    assert "sct_label" in out.obs and snapshot(query) == before
    assert isinstance(ann, sct.tl.CellAnnotator)


@pytest.mark.slow
@pytest.mark.skipif(
    not TINY.exists(),
    reason="the bundled model sct-tiny-pbmc is not built yet (python scripts/train_tiny.py)",
)
def test_finetune_tiny_model_beats_majority_on_pbmc(pbmc):
    """On a stratified 80/20 split of pbmc68k bulk_labels, fine-tuning the bundled model is
    clearly better than always answering the most frequent training label."""
    from sklearn.model_selection import train_test_split

    labels = pbmc.obs["bulk_labels"].astype(str).to_numpy()
    tr, te = train_test_split(np.arange(pbmc.n_obs), test_size=0.2, random_state=0, stratify=labels)
    ref, query = pbmc[tr].copy(), pbmc[te].copy()
    torch.set_num_threads(2)
    sct.tl.annotate(
        query,
        "sct-tiny-pbmc",
        reference=ref,
        labels_key="bulk_labels",
        method="finetune",
        epochs=10,
        lr=1e-3,
        seed=0,
        device="cpu",
    )
    acc = float(np.mean(query.obs["sct_label"].astype(str).to_numpy() == labels[te]))
    values, counts = np.unique(labels[tr], return_counts=True)
    majority = float(np.mean(labels[te] == values[np.argmax(counts)]))
    assert acc >= majority + 0.15, (acc, majority)
