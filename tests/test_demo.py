"""The demo end to end (in process, no wall-clock limit): outputs, labels, titles, claims."""

from __future__ import annotations

import json

import anndata as ad
import matplotlib
import numpy as np
import pytest

from sctransformer.demo import run_demo
from test_embed_tiny_model import needs_tiny

matplotlib.use("Agg")
from matplotlib.figure import Figure

# scanpy 1.11's sc.pl.umap calls Colormap.set_bad, which matplotlib 3.11 marks for deprecation
pytestmark = pytest.mark.filterwarnings("ignore:The set_bad function:PendingDeprecationWarning")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    titles: dict[str, list[str]] = {}
    original = Figure.savefig

    def recording(self, fname, *args, **kw):
        name = getattr(fname, "name", str(fname))
        titles[str(name)] = [a.get_title() for a in self.axes]
        return original(self, fname, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", recording)
        summary = run_demo(out)
    return out, summary, titles


@needs_tiny
@pytest.mark.slow
def test_demo_writes_its_outputs(demo):
    out, summary, _ = demo
    for name in ("demo.h5ad", "umap_sct.png", "grn.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["cells"] == 700
    assert summary["knn_accuracy_X_sct"] > summary["majority_class_accuracy"]
    assert summary["annotation_accuracy_linear_30pct_query"] > summary["majority_class_accuracy"]
    assert summary["attention_edges"] > 0


@needs_tiny
@pytest.mark.slow
def test_demo_labels_are_predictions_with_score_and_params(demo):
    out, summary, _ = demo
    adata = ad.read_h5ad(out / "demo.h5ad")
    label = adata.obs["sct_label"]
    truth = adata.obs["bulk_labels"].astype(str)
    assert label.notna().all()
    # every cell holds a cell type, never the word "reference"
    assert set(label.astype(str)) <= set(truth) and "reference" not in set(label.astype(str))
    proba = adata.obsm["sct_label_proba"]
    np.testing.assert_allclose(proba.to_numpy().sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(adata.obs["sct_label_score"], proba.max(axis=1), rtol=1e-6)
    assert (proba.idxmax(axis=1).astype(str) == label.astype(str)).all()
    params = adata.uns["sct_label"]["params"]
    assert params["method"] == "linear"
    assert sorted(map(str, params["classes"])) == sorted(set(truth))
    # the reported accuracy is on the query cells only, recomputed from the file
    split = adata.obs["sct_split"].astype(str)
    assert set(split) == {"reference", "query"}
    is_query = (split == "query").to_numpy()
    assert 0.2 < is_query.mean() < 0.4
    acc = float((label.astype(str)[is_query] == truth[is_query]).mean())
    assert acc == pytest.approx(summary["annotation_accuracy_linear_30pct_query"], abs=1e-3)


@needs_tiny
@pytest.mark.slow
def test_demo_umap_title_names_the_embedding(demo):
    _, _, titles = demo
    (umap_title,) = [t for name, ts in titles.items() if name.endswith("umap_sct.png") for t in ts]
    assert "X_sct" in umap_title and "sct-tiny-pbmc" in umap_title
