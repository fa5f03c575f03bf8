"""The bundled demonstration model separates pbmc68k's cell types better than chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sctransformer as sct
from sctransformer.demo import knn_accuracy
from sctransformer.models._published import REGISTRY

TINY = REGISTRY["sct-tiny-pbmc"].location()
needs_tiny = pytest.mark.skipif(
    TINY is None or not TINY.exists(),
    reason=f"bundled model folder {TINY} not built yet (python scripts/train_tiny.py)",
)


def _shuffled(model, seed=0):
    """The same model with every parameter's entries permuted: same scale, no learned structure."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            flat = p.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=gen)])
    model.metadata = {**model.metadata, "name": "shuffled"}
    return model


@needs_tiny
@pytest.mark.slow
def test_tiny_model_separates_bulk_labels():
    model = sct.models.load("sct-tiny-pbmc")
    assert model.metadata["name"] == "sct-tiny-pbmc"
    adata = sct.datasets.pbmc68k_counts()
    sct.pp.tokenize(adata, vocab=model)
    sct.tl.embed_cells(adata, model, precision="fp32", device="cpu")
    sct.tl.embed_cells(
        adata, _shuffled(sct.models.load("sct-tiny-pbmc")), key_added="X_shuffled", device="cpu"
    )
    labels = adata.obs["bulk_labels"].to_numpy()
    majority = float(adata.obs["bulk_labels"].value_counts(normalize=True).iloc[0])
    acc = knn_accuracy(adata.obsm["X_sct"], labels)
    acc_shuffled = knn_accuracy(adata.obsm["X_shuffled"], labels)
    print(
        f"\nsct-tiny-pbmc 5-fold kNN accuracy on bulk_labels: {acc:.3f} "
        f"(shuffled weights {acc_shuffled:.3f}, majority class {majority:.3f})"
    )
    assert np.isfinite(adata.obsm["X_sct"]).all()
    assert acc > majority + 0.2
    assert acc > acc_shuffled + 0.05


def test_knn_accuracy_sees_structure():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    separated = rng.normal(size=(120, 5)) + 6 * labels[:, None]
    noise = rng.normal(size=(120, 5))
    assert knn_accuracy(separated, labels) == 1.0
    assert knn_accuracy(noise, labels) < 0.6
