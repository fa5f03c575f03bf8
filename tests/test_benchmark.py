"""sct.tl.benchmark and sct.pl.benchmark: one shared split, tuned baselines, tidy table."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

import sctransformer as sct
from sctransformer.tl import _benchmark, _metrics

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
    # every arm except XGBoost and scVI, which have their own (slow) tests
    expected = [m for m in _benchmark.default_methods(model)
                if m not in ("xgboost", "scvi", "scvi_logreg")]  # fmt: skip
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
    assert set(t["method"]) == set(expected)
    assert {"sct_linear", "sct_knn", "sct_finetune", "logreg_l2", "logreg_l1", "pca_logreg",
            "pca_knn", "pca", "sct"} <= set(expected)  # fmt: skip
    lab = t[t["task"] == "label_prediction"]
    # one split for every method
    assert lab["split_sha"].nunique() == 1
    assert lab["n_train"].nunique() == 1 and lab["n_test"].nunique() == 1
    split = adata.obs["sct_benchmark_split"]
    assert (split == "test").sum() == lab["n_test"].iloc[0] == 30
    assert (split == "train").sum() == lab["n_train"].iloc[0]
    # stratified: every class in the test part
    assert set(adata.obs["cell_type"][split == "test"]) == set(adata.obs["cell_type"])
    overall = lab[lab["label"] == ""]
    for m in set(lab["method"]):
        got = set(overall.loc[overall["method"] == m, "metric"])
        assert got == {"accuracy", "macro_f1", "balanced_accuracy", "auroc", "time_s"}
        f1 = lab[(lab["method"] == m) & (lab["metric"] == "f1")]
        assert len(f1) >= 4
    emb = t[t["task"] == "embedding"]
    assert set(emb["method"]) == {"pca", "sct"}
    assert set(emb["metric"]) == {"leiden_ari", "leiden_nmi", "asw_label"}
    assert emb["value"].between(-1, 1).all()
    assert "integration" not in set(t["task"])  # no batch_key
    for p in t["best_params"]:
        json.loads(p)
    wide = _benchmark.summary(adata)
    # the generated cell types are easy: tuned baselines are far above the majority class
    assert wide.loc["logreg_l2", "macro_f1"] > wide.loc["majority", "macro_f1"] + 0.5
    assert wide.loc["logreg_l2", "auroc"] > 0.9
    assert wide.loc["majority", "auroc"] == pytest.approx(0.5)  # one constant score
    assert (wide["time_s"] >= 0).all()
    # PCA of HVGs recovers the generated types: clusters close to the labels
    pca = emb[emb["method"] == "pca"].set_index("metric")["value"]
    assert pca["leiden_ari"] > 0.5 and pca["leiden_nmi"] > 0.5
    assert no_none(adata.uns["sct_benchmark"]["params"])
    assert set(t["family"]) == {"baseline", "transformer"}
    assert adata.uns["sct_benchmark"]["params"]["seeds"] == [0]
    wrote = adata.uns["sct_benchmark"]["summary"]
    assert (wrote.loc[wrote["n"] == 1, "std"] == 0).all()


def test_k_fold_tests_every_cell_once(bench):
    adata, _ = bench
    adata = adata.copy()
    sct.tl.benchmark(adata, labels_key="cell_type", methods=["majority"], n_folds=4, seed=3)
    fold = adata.obs["sct_benchmark_fold"].to_numpy()
    assert "sct_benchmark_split" not in adata.obs
    assert sorted(set(fold)) == [0, 1, 2, 3]  # every cell in exactly one test fold
    t = adata.uns["sct_benchmark"]["table"]
    acc = t[t["metric"] == "accuracy"].set_index("fold")
    assert sorted(acc.index) == [0, 1, 2, 3]
    assert acc["n_test"].sum() == adata.n_obs
    assert acc["split_sha"].nunique() == 4
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    for f in range(4):  # plain reference: the training folds' majority class on the test fold
        assert acc.loc[f, "n_test"] == (fold == f).sum()
        assert acc.loc[f, "n_train"] == (fold != f).sum()
        top = pd.Series(labels[fold != f]).value_counts().sort_index().idxmax()
        assert acc.loc[f, "value"] == pytest.approx(np.mean(labels[fold == f] == top))
    s = adata.uns["sct_benchmark"]["summary"].set_index(["task", "method", "metric"])
    row = s.loc[("label_prediction", "majority", "accuracy")]
    assert row["spread_over"] == "folds" and row["n"] == 4
    assert row["std"] == pytest.approx(np.std(acc["value"], ddof=1))


def test_several_seeds_mean_and_spread(bench):
    adata, _ = bench
    adata = adata.copy()
    sct.tl.benchmark(adata, labels_key="cell_type", methods=["majority", "pca_knn"],
                     n_folds=2, seeds=[4, 7])  # fmt: skip
    entry = adata.uns["sct_benchmark"]
    t = entry["table"]
    assert sorted(set(t["seed"])) == [4, 7]
    assert entry["params"]["seeds"] == [4, 7] and entry["params"]["seed"] == 4
    # folds are reshuffled per seed
    assert t.groupby("seed")["split_sha"].apply(frozenset).nunique() == 2
    knn = t[(t["method"] == "pca_knn") & (t["metric"] == "macro_f1")]
    per_seed = knn.groupby("seed")["value"].mean()
    s = entry["summary"].set_index(["method", "metric"]).loc[("pca_knn", "macro_f1")]
    assert s["mean"] == pytest.approx(per_seed.mean())
    assert s["std"] == pytest.approx(np.std(per_seed.to_numpy(), ddof=1))
    assert s["n"] == 2 and s["spread_over"] == "seeds"
    # n_seeds counts up from seed
    b = adata.copy()
    sct.tl.benchmark(b, labels_key="cell_type", methods=["majority"], n_seeds=3, seed=10)
    assert sorted(set(b.uns["sct_benchmark"]["table"]["seed"])) == [10, 11, 12]


def test_held_out_data_set(bench):
    adata, _ = bench
    train = adata[adata.obs["donor"] != "d3"].copy()
    test = adata[adata.obs["donor"] == "d3"].copy()
    keep = np.random.default_rng(0).permutation(test.n_vars)  # the genes in another order
    test = test[:, keep].copy()
    test.obs["cell_type"] = test.obs["cell_type"].astype(str)
    before = snapshot(test)
    methods = ["majority", "logreg_l2"]
    sct.tl.benchmark(train, labels_key="cell_type", test_adata=test, methods=methods,
                     dataset="donors12")  # fmt: skip
    assert snapshot(test) == before and "sct_benchmark" not in test.uns
    assert "sct_benchmark_split" not in train.obs
    t = train.uns["sct_benchmark"]["table"]
    assert set(t["dataset"]) == {"donors12"}
    assert (t["n_test"] == test.n_obs).all() and (t["n_train"] == train.n_obs).all()
    assert train.uns["sct_benchmark"]["params"]["n_shared_genes"] == adata.n_vars
    # the same comparison as holding donor d3 out of one data set
    shared = adata.copy()
    sct.tl.benchmark(shared, labels_key="cell_type", split_key="donor", test_groups=["d3"],
                     methods=methods)  # fmt: skip
    ref = shared.uns["sct_benchmark"]["table"]
    for m in ("accuracy", "macro_f1", "auroc"):
        for name in methods:
            a = t[(t["method"] == name) & (t["metric"] == m)]["value"].item()
            b = ref[(ref["method"] == name) & (ref["metric"] == m)]["value"].item()
            assert a == pytest.approx(b, abs=1e-6), (name, m)
    assert train.uns["sct_benchmark"]["params"]["test_adata"] is True
    # fewer genes in the test set: the baselines use the shared ones
    fewer = test[:, 10:].copy()
    sct.tl.benchmark(train, labels_key="cell_type", test_adata=fewer, methods=methods)
    assert train.uns["sct_benchmark"]["params"]["n_shared_genes"] == adata.n_vars - 10


def test_to_czbenchmarks_long_table(bench):
    adata, _ = bench
    adata = adata.copy()
    sct.tl.benchmark(adata, labels_key="cell_type", methods=["majority", "pca"], n_folds=2,
                     n_seeds=2, dataset="gen")  # fmt: skip
    cz = sct.tl.to_czbenchmarks(adata)
    assert list(cz.columns[:6]) == ["dataset", "task", "model", "metric", "value", "seed"]
    assert set(cz["dataset"]) == {"gen"}
    assert {"mean_fold_accuracy", "mean_fold_f1", "mean_fold_auroc", "adjusted_rand_index",
            "normalized_mutual_info", "silhouette_score"} <= set(cz["metric"])  # fmt: skip
    assert "time_s" not in set(cz["sct_metric"])
    t = adata.uns["sct_benchmark"]["table"]
    for seed in (0, 1):
        got = cz[(cz["model"] == "majority") & (cz["metric"] == "mean_fold_f1")
                 & (cz["seed"] == seed)]  # fmt: skip
        want = t[(t["method"] == "majority") & (t["metric"] == "macro_f1")
                 & (t["seed"] == seed)]["value"]  # fmt: skip
        assert got["value"].item() == pytest.approx(want.mean())
        assert got["n_folds"].item() == 2
    ari = cz[cz["metric"] == "adjusted_rand_index"]
    assert set(ari["task"]) == {"clustering"} and set(ari["model"]) == {"pca"}


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


@pytest.mark.slow
def test_scvi_when_installed(bench):
    pytest.importorskip("scvi")
    adata, _ = bench
    adata = adata.copy()
    sct.tl.benchmark(adata, labels_key="cell_type", methods=["scvi_logreg", "scvi", "pca"],
                     batch_key="donor", scvi_epochs=5, n_top_genes=100, device="cpu")  # fmt: skip
    t = adata.uns["sct_benchmark"]["table"]
    lab = t[(t["method"] == "scvi_logreg") & (t["label"] == "")].set_index("metric")["value"]
    assert lab["macro_f1"] > 0.5  # the latent space keeps the generated types apart
    assert set(t.loc[t["method"] == "scvi", "task"]) == {"embedding", "integration"}


def test_scvi_is_optional(bench, monkeypatch):
    adata, _ = bench
    monkeypatch.setattr(_benchmark, "has_scvi", lambda: False)
    monkeypatch.setattr(_benchmark, "has_xgboost", lambda: False)  # slow; tested on its own
    assert not {"scvi", "scvi_logreg"} & set(_benchmark.default_methods(None))
    adata = adata.copy()
    before = snapshot(adata)
    for m in ("scvi", "scvi_logreg"):
        with pytest.raises(ValueError, match=r"pip install 'sctransformer\[scvi\]'"):
            sct.tl.benchmark(adata, labels_key="cell_type", methods=[m])
    assert snapshot(adata) == before
    sct.tl.benchmark(adata, labels_key="cell_type", methods=None, tasks=["label_prediction"])
    assert "scvi_logreg" not in set(adata.uns["sct_benchmark"]["table"]["method"])


def test_old_name_of_the_l2_model(bench):
    adata, _ = bench
    adata = adata.copy()
    sct.tl.benchmark(adata, labels_key="cell_type", methods=["logreg_hvg"])
    assert set(adata.uns["sct_benchmark"]["table"]["method"]) == {"logreg_l2"}


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
        ({"seeds": []}, "seeds is empty"),
        ({"seeds": [1, 1]}, "repeat a seed"),
        ({"seeds": [0], "n_seeds": 2}, "not both"),
        ({"n_seeds": 0}, "n_seeds must be"),
        ({"n_folds": 1}, "n_folds must be"),
        ({"n_folds": 3, "split_key": "donor"}, "give one of them"),
        ({"n_folds": 1000}, "exceeds"),
        ({"tasks": ["clustering"]}, "unknown tasks"),
        ({"tasks": ["integration"], "methods": ["pca"]}, "needs batch_key"),
        ({"tasks": ["embedding"]}, "nothing to score"),
        ({"methods": ["sct"]}, "need model="),
        ({"test_adata": "other"}, "no genes"),
        ({"test_adata": "other", "n_folds": 3}, "drop split_key and n_folds"),
        ({"test_adata": "nolabels"}, r"'cell_type' not found in test_adata\.obs"),
        ({"leiden_resolutions": []}, "leiden_resolutions"),
        ({"batch_key": "one", "methods": ["pca"]}, "one batch"),
    ],
)
def test_errors_leave_adata_unchanged(bench, kwargs, match):
    adata, model = bench
    adata = adata.copy()
    adata.obs["gappy"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[1, adata.obs.columns.get_loc("gappy")] = None
    if kwargs.get("model") == "M":
        kwargs = {**kwargs, "model": model}
    adata.obs["one"] = "b"
    if kwargs.get("test_adata") == "other":  # the same cells under other gene names
        other = adata.copy()
        other.var_names = [f"OTHER{j}" for j in range(other.n_vars)]
        kwargs = {**kwargs, "test_adata": other}
    elif kwargs.get("test_adata") == "nolabels":
        kwargs = {**kwargs, "test_adata": sct.datasets.pbmc68k_counts()[:20].copy()}
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
        sct.pl.benchmark(adata, metrics="nope")
    _, ax = plt.subplots()
    assert sct.pl.benchmark(adata, metrics="accuracy", ax=ax, show=False) is ax
    plt.close("all")


# --- the metrics against plain references ------------------------------------------------------


def test_ari_nmi_match_scikit_learn_on_a_hand_made_clustering():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    truth = list("aaaabbbbcccc")
    found = [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 0]
    assert _metrics.adjusted_rand_index(truth, found) == pytest.approx(
        adjusted_rand_score(truth, found)
    )
    assert _metrics.normalized_mutual_info(truth, found) == pytest.approx(
        normalized_mutual_info_score(truth, found)
    )
    # by hand: pairs together in both = C(3,2)+C(4,2)+C(3,2) = 12 of C(12,2) = 66; rows 3*C(4,2) = 18,
    # columns C(4,2)+C(5,2)+C(3,2) = 6+10+3 = 19; expected 18*19/66; max (18+19)/2
    e = 18 * 19 / 66
    assert _metrics.adjusted_rand_index(truth, found) == pytest.approx((12 - e) / (18.5 - e))
    assert _metrics.adjusted_rand_index(truth, truth) == 1.0
    assert _metrics.normalized_mutual_info(truth, [7] * 12) == 0.0


def test_silhouettes_by_hand_on_six_points():
    # two labels on a line: a at 0, 1, 2 and b at 10, 11, 12
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    labels = np.array(list("aaabbb"))

    def s(i):  # the silhouette written out
        same = [abs(x[i, 0] - x[j, 0]) for j in range(6) if j != i and labels[j] == labels[i]]
        other = [abs(x[i, 0] - x[j, 0]) for j in range(6) if labels[j] != labels[i]]
        a, b = np.mean(same), np.mean(other)
        return (b - a) / max(a, b)

    expected = np.mean([s(i) for i in range(6)])
    assert expected == pytest.approx(np.mean([1 - 1.5 / 11, 1 - 1 / 10, 1 - 1.5 / 9] * 2))
    assert _metrics.asw_label(x, labels) == pytest.approx((expected + 1) / 2)
    # batch ASW: within each label, batches x/y; 1 - |s| per cell, mean per label, then mean
    batches = np.array(["x", "y", "x", "x", "y", "y"])

    def per_label(rows):
        xs, bs = x[rows, 0], batches[rows]
        vals = []
        for i in range(len(rows)):
            same = [abs(xs[i] - xs[j]) for j in range(len(rows)) if j != i and bs[j] == bs[i]]
            other = [abs(xs[i] - xs[j]) for j in range(len(rows)) if bs[j] != bs[i]]
            if not same:  # a batch of one cell: silhouette 0
                vals.append(1.0)
                continue
            a, b = np.mean(same), np.mean(other)
            vals.append(1 - abs((b - a) / max(a, b)))
        return np.mean(vals)

    want = np.mean([per_label([0, 1, 2]), per_label([3, 4, 5])])
    assert _metrics.asw_batch(x, batches, labels) == pytest.approx(want)


def test_auroc_on_a_hand_case():
    from sklearn.metrics import roc_auc_score

    y = np.array(["a", "a", "b", "b", "c"])
    p = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.3, 0.6, 0.1],
            [0.4, 0.5, 0.1],
            [0.1, 0.1, 0.8],
            [0.2, 0.2, 0.6],
        ]
    )
    # by hand, one vs rest: a: positives 0.8, 0.3 vs 0.4, 0.1, 0.2 -> (3 + 2) / 6;
    # b: 0.5, 0.1 vs 0.1, 0.6, 0.2 -> (2 + 0.5) / 6; c: 0.6 vs 0.1, 0.1, 0.1, 0.8 -> 3 / 4
    want = np.mean([5 / 6, 2.5 / 6, 3 / 4])
    got = _metrics.auroc_ovr_macro(y, p, ["a", "b", "c"])
    assert got == pytest.approx(want)
    assert got == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    # a true class the classifier never saw scores 0 everywhere: AUROC 0.5 for it
    y2 = np.array(["a", "a", "b", "d"])
    got2 = _metrics.auroc_ovr_macro(y2, p[:4, :2], ["a", "b"])
    ra = (2 + 1) / 4  # a: 0.8, 0.3 vs 0.4, 0.1
    rb = 2 / 3  # b: 0.5 vs 0.1, 0.6, 0.1
    assert got2 == pytest.approx(np.mean([ra, rb, 0.5]))


def test_leiden_match_finds_separated_groups():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 40)
    x = rng.normal(size=(120, 4)) + np.repeat(np.eye(3, 4) * 20, 40, axis=0)
    best = _metrics.leiden_match(x, labels, resolutions=[0.05, 0.2, 1.0, 3.0], n_neighbors=10,
                                 seed=0)  # fmt: skip
    assert best["ari"] == pytest.approx(1.0) and best["nmi"] == pytest.approx(1.0)
    assert best["n_clusters"] == 3


def test_plot_benchmark_draws_the_spread_over_seeds(bench):
    """Each bar is the mean over seeds and its error bar the std, as in uns[key]["summary"]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adata = bench[0].copy()
    sct.tl.benchmark(
        adata, labels_key="cell_type", methods=["majority", "pca_knn"], seeds=[0, 1, 2], cv=2,
        n_pcs=5, tasks=["label_prediction"],
    )  # fmt: skip
    t = adata.uns["sct_benchmark"]["table"]
    per_seed = (
        t[(t["metric"] == "accuracy") & (t["label"] == "")]
        .groupby(["method", "seed"])["value"]
        .mean()
    )
    expect = per_seed.groupby(level="method").agg(["mean", "std"])
    ax = sct.pl.benchmark(adata, metrics="accuracy", show=False, sort=False)
    from matplotlib.container import BarContainer

    bars = next(c for c in ax.containers if isinstance(c, BarContainer))
    err = next(c for c in ax.containers if hasattr(c, "has_xerr") and c.has_xerr)
    methods = [tick.get_text() for tick in ax.get_yticklabels()]
    segments = err.lines[2][0].get_segments()
    for method, bar, seg in zip(methods, bars, segments, strict=True):
        assert bar.get_width() == pytest.approx(expect.loc[method, "mean"])
        half = (seg[1][0] - seg[0][0]) / 2
        assert half == pytest.approx(expect.loc[method, "std"], abs=1e-9)
    assert expect.loc["pca_knn", "std"] > 0 or expect.loc["majority", "std"] > 0
    plt.close("all")
