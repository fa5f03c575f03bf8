"""The plot contract held by every sct.pl function: show, save (atomic, by extension), ax, returns.

Each plot is drawn from results computed by the real ``sct.tl`` functions on small data.
"""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import sctransformer as sct
from _train_utils import untrained_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

GENES = ["GENE3", "GENE0", "GENE7", "GENE11", "GENE2"]
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}


@pytest.fixture(scope="module")
def results():
    """One AnnData per plot, holding what its ``sct.tl`` function wrote."""
    from conftest import nb_counts

    small = nb_counts(40, 30, n_types=2, seed=5)
    sct.pp.tokenize(small, method="rank", max_length=12)
    model = untrained_model(small, seed=4)
    with sct.settings.override(progress_bars=False, verbosity=0):
        grn = small.copy()
        sct.tl.attention_grn(grn, model, heads="all", top_k=None, device="cpu")
        bench = nb_counts(120, 60, seed=2)
        sct.tl.benchmark(bench, labels_key="cell_type", methods=["majority", "pca_knn"], n_pcs=5)
        pert = small.copy()
        sct.tl.in_silico_perturb(pert, model, genes=GENES[:3], device="cpu")
        hist = small.copy()
        sct.tl.pretrain(hist, model=model, max_steps=4, batch_size=8, device="cpu", seed=0)
    return {"grn": grn, "bench": bench, "pert": pert, "hist": hist}


# name -> (call, single-panel keywords, multi-panel keywords or None)
CASES = {
    "grn": (lambda r, **kw: sct.pl.grn(r["grn"], top=10, **kw), {}, None),
    "attention_heads": (
        lambda r, **kw: sct.pl.attention_heads(r["grn"], genes=GENES, **kw),
        {"layers": -1, "heads": [0]},
        {"layers": "all", "heads": "all"},
    ),
    "benchmark": (
        lambda r, **kw: sct.pl.benchmark(r["bench"], **kw),
        {"metrics": "accuracy"},
        {"metrics": ["macro_f1", "accuracy"]},
    ),
    "perturbation": (lambda r, **kw: sct.pl.perturbation(r["pert"], **kw), {}, None),
    "training_history": (lambda r, **kw: sct.pl.training_history(r["hist"], **kw), {}, None),
}


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture
def shown(monkeypatch):
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(1))
    return calls


def test_every_pl_function_is_covered():
    assert sorted(CASES) == sorted(sct.pl.__all__)


@pytest.mark.parametrize("name", sorted(CASES))
def test_show_false_returns_axes_of_one_panel(results, shown, name):
    call, single, _ = CASES[name]
    ax = call(results, show=False, **single)
    assert isinstance(ax, Axes)
    assert ax.has_data() or ax.texts or ax.images
    assert shown == []


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2] is not None])
def test_show_false_returns_figure_of_several_panels(results, shown, name):
    call, _, multi = CASES[name]
    fig = call(results, show=False, **multi)
    assert isinstance(fig, Figure)
    assert len([a for a in fig.axes if a.has_data() or a.images]) >= 2
    assert shown == []


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("show", [None, True])
def test_shown_returns_none(results, shown, name, show):
    call, single, _ = CASES[name]
    assert call(results, show=show, **single) is None
    assert shown == [1]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_save_writes_the_format_of_the_extension(results, shown, tmp_path, name, fmt):
    call, single, _ = CASES[name]
    target = tmp_path / f"plot.{fmt}"
    out = call(results, save=target, **single)
    assert isinstance(out, Axes)  # save without show: not shown, so the Axes comes back
    assert shown == []
    data = target.read_bytes()
    assert len(data) > 500
    if fmt == "svg":
        assert b"<svg" in data[:1000] and data.rstrip().endswith(b"</svg>")
    else:
        assert data.startswith(MAGIC[fmt])
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_and_show(results, shown, tmp_path, name):
    call, single, _ = CASES[name]
    assert call(results, save=str(tmp_path / "p.png"), show=True, **single) is None
    assert shown == [1] and (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_bad_paths_fail_before_drawing(results, tmp_path, name):
    call, single, _ = CASES[name]
    before = plt.get_fignums()
    with pytest.raises(ValueError, match=r"\.png"):
        call(results, save=tmp_path / "plot.jpg", **single)
    with pytest.raises(ValueError, match="does not exist"):
        call(results, save=tmp_path / "missing" / "plot.png", **single)
    with pytest.raises(TypeError, match="file path"):
        call(results, save=True, **single)
    assert plt.get_fignums() == before
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_keeps_the_previous_file(results, tmp_path, monkeypatch):
    target = tmp_path / "grn.png"
    target.write_bytes(b"previous")

    def broken(self, fname, **kw):
        fname.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(KeyboardInterrupt):
        sct.pl.grn(results["grn"], save=target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["grn.png"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_ax_draws_into_the_given_axes(results, shown, name):
    call, single, _ = CASES[name]
    _, (left, right) = plt.subplots(1, 2)
    before = plt.get_fignums()
    out = call(results, ax=right, show=False, **single)
    assert out is right
    assert plt.get_fignums() == before  # no new figure
    assert right.has_data() or right.images or right.texts
    assert not (left.has_data() or left.images or left.texts)


def test_ax_with_several_panels_is_refused(results):
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="one panel"):
        sct.pl.attention_heads(results["grn"], genes=GENES, ax=ax)
    with pytest.raises(ValueError, match="one metric"):
        sct.pl.benchmark(results["bench"], metrics=["accuracy", "macro_f1"], ax=ax)


@pytest.mark.parametrize("name", sorted(CASES))
def test_return_fig_is_a_deprecated_alias(results, shown, name):
    call, single, _ = CASES[name]
    with pytest.warns(FutureWarning, match="show=False"):
        fig = call(results, return_fig=True, **single)
    assert isinstance(fig, Figure) and shown == []


def _crowded_network(n: int = 20, seed: int = 0) -> AnnData:
    """A 20-gene network with three out-edges per gene, in the table attention_grn writes."""
    rng = np.random.default_rng(seed)
    genes = [f"GENE{i}" for i in range(n)]
    rows = [
        (genes[i], genes[j], float(rng.random()))
        for i in range(n)
        for j in rng.choice(n, 3, replace=False)
        if i != j
    ]
    edges = pd.DataFrame(rows, columns=["source", "target", "weight"])
    edges["group"] = pd.Categorical(["all"] * len(edges))
    edges["n_cells"] = 10
    adata = AnnData(np.zeros((2, n), dtype=np.float32))
    adata.var_names = genes
    adata.uns["sct_grn"] = {"edges": edges}
    return adata


@pytest.mark.parametrize("layout", ["spring", "kamada_kawai", "circular"])
def test_grn_labels_do_not_overlap(layout):
    adata = _crowded_network()
    ax = sct.pl.grn(adata, top=100, layout=layout, show=False)
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts]
    assert sorted(t.get_text() for t in labels) == sorted(adata.var_names)
    boxes = [t.get_window_extent(renderer) for t in labels]
    overlapping = [
        (labels[i].get_text(), labels[j].get_text())
        for i, j in itertools.combinations(range(len(boxes)), 2)
        if boxes[i].overlaps(boxes[j])
    ]
    assert overlapping == []
    # and the test is not vacuous: labels centred on their nodes would have overlapped
    if layout == "spring":
        nodes = ax.collections[0].get_offsets()
        centres = ax.transData.transform(nodes)
        half = np.array([[b.width / 2, b.height / 2] for b in boxes])
        clash = [
            (i, j)
            for i, j in itertools.combinations(range(len(boxes)), 2)
            if (np.abs(centres[i] - centres[j]) < half[i] + half[j]).all()
        ]
        assert clash
