"""sct.tl.benchmark and sct.pl.benchmark: one shared split, tuned baselines, tidy table."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

import sctransformer as sct
from sctransformer.tl import _benchmark

matplotlib.use("Agg")

from test_annotate import no_none, snapshot, tiny_model


@pytest.fixture(scope="module")
def bench():
    from conftest import nb_counts

    adata = nb_counts(150, 100, seed=2)
    return adata, tiny_model(adata, max_length=32)


def test_every_arm_on_the_same_split(bench):
    adata, model = bench
    adata = adata.copy()
    # every arm except XGBoost, which has its own (slow) test
    expected = [m for m in _benchmark.default_methods(model) if m != "xgboost"]
    sct.tl.benchmark(
        adata,
        labels_key="cell_type",
        model=model,
        methods=expected,
        annotate_kwds={"epochs": 1},
        device="cpu",
    )
    t = adata.uns["sct_benchmark"]["table"]
    assert isinstance(t, pd.DataFrame)
    assert list(pd.unique(t["method"])) == expected
    assert {"sct_linear", "sct_knn", "sct_finetune", "logreg_hvg", "pca_logreg", "pca_knn"} <= set(
        expected
    )
    # one split for every method
    assert t["split_sha"].nunique() == 1
    assert t["n_train"].nunique() == 1 and t["n_test"].nunique() == 1
    split = adata.obs["sct_benchmark_split"]
    assert (split == "test").sum() == t["n_test"].iloc[0] == 30
    assert (split == "train").sum() == t["n_train"].iloc[0]
    # stratified: every class in the test part
    assert set(adata.obs["cell_type"][split == "test"]) == set(adata.obs["cell_type"])
    overall = t[t["label"] == ""]
    for m in expected:
        got = set(overall.loc[overall["method"] == m, "metric"])
        assert got == {"accuracy", "macro_f1", "balanced_accuracy", "time_s"}
        f1 = t[(t["method"] == m) & (t["metric"] == "f1")]
        assert len(f1) >= 4
    for p in t["best_params"]:
        json.loads(p)
    wide = _benchmark.summary(adata)
    # the generated cell types are easy: tuned baselines are far above the majority class
    assert wide.loc["logreg_hvg", "macro_f1"] > wide.loc["majority", "macro_f1"] + 0.5
    assert (wide["time_s"] >= 0).all()
    assert no_none(adata.uns["sct_benchmark"]["params"])
    assert set(t["family"]) == {"baseline", "transformer"}


def test_cross_batch_split(bench):
    adata, _ = bench
    adata = adata.copy()
    sct.tl.benchmark(
        adata,
        labels_key="cell_type",
        split_key="donor",
        test_groups=["d2"],
        methods=["majority", "pca_knn"],
    )
    split = adata.obs["sct_benchmark_split"]
    assert ((split == "test") == (adata.obs["donor"] == "d2")).all()
    assert adata.uns["sct_benchmark"]["params"]["test_groups"] == ["d2"]


def test_default_test_group_is_last(bench):
    adata, _ = bench
    adata = adata.copy()
    sct.tl.benchmark(adata, labels_key="cell_type", split_key="donor", methods=["majority"])
    split = adata.obs["sct_benchmark_split"]
    assert ((split == "test") == (adata.obs["donor"] == "d3")).all()


def test_unlabelled_cells_are_left_out(bench):
    adata, _ = bench
    adata = adata.copy()
    labels = adata.obs["cell_type"].astype(object)
    labels.iloc[:10] = np.nan
    adata.obs["cell_type"] = pd.Categorical(labels)
    sct.tl.benchmark(adata, labels_key="cell_type", methods=["majority", "logreg_hvg"])
    assert (adata.obs["sct_benchmark_split"][:10] == "unlabelled").all()


@pytest.mark.slow
def test_xgboost_when_installed():
    pytest.importorskip("xgboost")
    from conftest import nb_counts

    adata = nb_counts(80, 40, seed=3)
    sct.tl.benchmark(adata, labels_key="cell_type", methods=["xgboost"])
    t = adata.uns["sct_benchmark"]["table"]
    params = json.loads(t["best_params"].iloc[0])
    assert {"max_depth", "n_estimators"} <= set(params)


def test_xgboost_is_optional(bench, monkeypatch):
    adata, model = bench
    monkeypatch.setattr(_benchmark, "has_xgboost", lambda: False)
    assert "xgboost" not in _benchmark.default_methods(model)
    adata = adata.copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match="pip install xgboost"):
        sct.tl.benchmark(adata, labels_key="cell_type", methods=["xgboost"])
    assert snapshot(adata) == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ["svm"]}, "unknown methods"),
        ({"methods": ["sct_knn"]}, "need model="),
        ({"labels_key": "nope"}, "'nope' not found"),
        ({"split_key": "nope"}, "'nope' not found"),
        ({"split_key": "donor", "test_groups": ["d9"]}, "not values of"),
        ({"test_groups": ["d1"]}, "test_groups needs split_key"),
        ({"test_size": 1.5}, "test_size"),
        ({"cv": 1}, "cv must be"),
        ({"layer": "counts"}, "'counts' not found"),
        ({"annotate_kwds": {"nope": 1}, "model": "M"}, "annotate_kwds"),
        ({"split_key": "gappy"}, r"obs\['gappy'\] has 1 missing values; fill them"),
    ],
)
def test_errors_leave_adata_unchanged(bench, kwargs, match):
    adata, model = bench
    adata = adata.copy()
    adata.obs["gappy"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[1, adata.obs.columns.get_loc("gappy")] = None
    if kwargs.get("model") == "M":
        kwargs = {**kwargs, "model": model}
    kw = {"labels_key": "cell_type", "methods": ["majority"], **kwargs}
    before = snapshot(adata)
    with pytest.raises(ValueError, match=match):
        sct.tl.benchmark(adata, **kw)
    assert snapshot(adata) == before


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rng = np.random.default_rng(0)
    y = rng.choice(list("abcd"), 200)
    p = np.where(rng.random(200) < 0.6, y, rng.choice(list("abce"), 200))
    overall, f1 = _benchmark.classification_metrics(y, p)
    assert overall["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert overall["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    labels = sorted(set(y) | set(p))
    per = f1_score(y, p, labels=labels, average=None, zero_division=0)
    assert [f1[c] for c in labels] == pytest.approx(list(per))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = balanced_accuracy_score(y, p)
    assert overall["balanced_accuracy"] == pytest.approx(expected)


def test_plot_benchmark(bench):
    import matplotlib.pyplot as plt

    adata, _ = bench
    adata = adata.copy()
    with pytest.raises(ValueError, match=r"run sct\.tl\.benchmark"):
        sct.pl.benchmark(adata)
    sct.tl.benchmark(adata, labels_key="cell_type", methods=["majority", "pca_knn"])
    fig = sct.pl.benchmark(adata, show=False)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2
    plt.close(fig)
    ax = sct.pl.benchmark(adata, metrics="time_s", show=False)
    assert len(ax.figure.axes) == 1
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="not in uns"):
        sct.pl.benchmark(adata, metrics="auroc")
    _, ax = plt.subplots()
    assert sct.pl.benchmark(adata, metrics="accuracy", ax=ax, show=False) is ax
    plt.close("all")
