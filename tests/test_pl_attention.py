"""sct.pl.attention_heads and sct.pl.grn: figure structure (no image comparison)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

import sctransformer as sct
from _train_utils import untrained_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt


@pytest.fixture
def small(make_counts):
    adata = make_counts(30, 25, n_types=2, seed=5)
    sct.pp.tokenize(adata, method="rank", max_length=12)
    return adata


@pytest.fixture
def model(small):
    return untrained_model(small, seed=4)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


GENES = ["GENE3", "GENE0", "GENE7", "GENE11", "GENE2"]


def _images(fig):
    return [ax for ax in fig.axes if ax.images]


def test_attention_heads_grid_structure(small, model):
    fig = sct.pl.attention_heads(small, model, genes=GENES, device="cpu", show=False)
    panels = _images(fig)
    assert len(panels) == 2 * 4  # layers × heads
    assert len(fig.axes) == 2 * 4 + 1  # and one shared colour bar
    titles = [ax.get_title() for ax in panels]
    assert titles == [f"layer {la} · head {h}" for la in (1, 2) for h in range(4)]
    fig.canvas.draw()
    for k, ax in enumerate(panels):
        row, col = divmod(k, 4)
        if row == 1:  # gene labels under the bottom row and left of the first column
            assert [t.get_text() for t in ax.get_xticklabels()] == GENES
        if col == 0:
            assert [t.get_text() for t in ax.get_yticklabels()] == GENES
        assert ax.images[0].get_array().shape == (5, 5)
    assert len({ax.images[0].get_clim() for ax in panels}) == 1  # one colour scale
    lo, hi = panels[0].images[0].get_clim()
    assert 0 <= lo < hi <= 1  # softmax probabilities


def test_attention_heads_subset_of_layers_heads_and_cells(small, model):
    fig = sct.pl.attention_heads(
        small,
        model,
        genes=GENES[:3],
        cells=small.obs_names[:10],
        layers=-1,
        heads=[0, 2],
        device="cpu",
        show=False,
    )
    panels = _images(fig)
    assert [ax.get_title() for ax in panels] == ["layer 2 · head 0", "layer 2 · head 2"]
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (1, 2)


def test_attention_heads_from_stored_networks(small, model):
    sct.tl.attention_grn(small, model, heads="all", layers="all", top_k=None, normalize="softmax")
    fig = sct.pl.attention_heads(small, genes=GENES, heads=[1, 3], show=False)
    panels = _images(fig)
    assert [ax.get_title() for ax in panels] == [
        f"layer {la} · head {h}" for la in (1, 2) for h in (1, 3)
    ]
    stored = small.uns["sct_grn"]["heads"]["layer1_head1"]
    idx = small.var_names.get_indexer(GENES)
    expected = stored[idx][:, idx].toarray()
    shown = panels[0].images[0].get_array().filled(0)
    np.testing.assert_allclose(shown, expected, rtol=1e-6)


def test_attention_heads_errors(small, model):
    with pytest.raises(ValueError, match="heads'\\] not found"):
        sct.pl.attention_heads(small, genes=GENES)
    with pytest.raises(ValueError, match="cells needs a model"):
        sct.pl.attention_heads(small, genes=GENES, cells=[0, 1])
    with pytest.raises(ValueError, match="genes is required"):
        sct.pl.attention_heads(small, model, genes=[])
    with pytest.raises(ValueError, match=r"not found in adata\.var_names"):
        sct.pl.attention_heads(small, model, genes=["NOPE"])


def test_grn_structure(small, model):
    sct.tl.attention_grn(small, model, groupby="cell_type", top_k=3)
    edges = small.uns["sct_grn"]["edges"]
    ax = sct.pl.grn(small, top=8, show=False)
    assert ax.figure.axes == [ax]
    top = edges[edges["group"] == "all"].nlargest(8, "weight")
    nodes = set(top["source"]) | set(top["target"])
    assert {t.get_text() for t in ax.texts} == nodes
    assert len(ax.patches) == 8  # one arrow per edge
    widths = [p.get_linewidth() for p in ax.patches]
    assert max(widths) > min(widths)  # width follows the weight
    assert "all" in ax.get_title() and "top 8" in ax.get_title()

    ax = sct.pl.grn(small, group="type1", top=5, layout="circular", show=False)
    assert "type1" in ax.get_title() and len(ax.patches) == 5


def test_grn_errors(small, model):
    with pytest.raises(ValueError, match=r"run sct\.tl\.attention_grn"):
        sct.pl.grn(small)
    sct.tl.attention_grn(small, model)
    with pytest.raises(ValueError, match="not in uns"):
        sct.pl.grn(small, group="type9")
    with pytest.raises(ValueError, match="layout"):
        sct.pl.grn(small, layout="tree")
