"""Write the Galaxy tools' test data: ``test-data/pbmc_small.h5ad`` and the bundled model as a
``.tar`` (the form in which a model travels as a Galaxy dataset).

    python galaxy/make_test_data.py

40 cells of ``sct.datasets.pbmc68k_counts()`` (4 of each of the 10 ``bulk_labels``), integer
counts in X, ``obs`` with ``bulk_labels`` and ``phase``; gzip-compressed to stay small.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import numpy as np

import sctransformer as sct
from sctransformer.cli import main

HERE = Path(__file__).parent / "test-data"


def small_pbmc(per_label: int = 4, seed: int = 0):
    adata = sct.datasets.pbmc68k_counts()
    rng = np.random.default_rng(seed)
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    keep = np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == lab), per_label, replace=False)
                for lab in sorted(set(labels))
            ]
        )
    )
    small = adata[keep].copy()
    small.obs = small.obs[["bulk_labels", "phase"]].copy()
    # labels with "/" cannot be h5ad keys of per-group results: keep them plain
    small.obs["bulk_labels"] = (
        small.obs["bulk_labels"].astype(str).str.replace("/", "-").astype("category")
    )
    del small.layers["counts"], small.obsm["X_umap"]
    small.uns = {}
    return small


def main_() -> None:
    HERE.mkdir(exist_ok=True)
    small_pbmc().write_h5ad(HERE / "pbmc_small.h5ad", compression="gzip")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        assert main(["models", "fetch", "sct-tiny-pbmc", "--output", str(folder)]) == 0
        with tarfile.open(HERE / "sct-tiny-pbmc.tar", "w") as tar:
            for f in sorted(folder.iterdir()):
                tar.add(f, arcname=f.name)
    for f in sorted(HERE.iterdir()):
        print(f"{f.name}: {f.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main_()
