"""Shared fixtures: small generated count matrices and the bundled PBMC counts."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sctransformer as sct


def pytest_configure(config):
    """Under pytest-xdist, share the cores between the workers: with more torch threads than
    cores, each parallel op waits for a descheduled thread (ops of microseconds took ~20 ms).
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))


def nb_counts(
    n_cells: int = 240,
    n_genes: int = 300,
    *,
    n_types: int = 4,
    mean_depth: float = 3.0,
    seed: int = 0,
) -> AnnData:
    """Negative-binomial integer counts with cell-type programmes, as CSR float32.

    Every gene has a baseline mean drawn log-normally; each cell type multiplies the means of
    its own programme (a block of genes) by 8. Library sizes vary per cell.
    """
    rng = np.random.default_rng(seed)
    base = rng.lognormal(mean=-1.5, sigma=1.2, size=n_genes) * mean_depth
    labels = rng.integers(0, n_types, size=n_cells)
    programme = np.ones((n_types, n_genes))
    for t, block in enumerate(np.array_split(rng.permutation(n_genes), n_types)):
        programme[t, block[: max(1, len(block) // 3)]] = 8.0
    size = rng.lognormal(0.0, 0.4, size=n_cells)[:, None]
    mu = base[None, :] * programme[labels] * size
    r = 2.0
    counts = rng.negative_binomial(r, r / (r + mu)).astype(np.float32)
    adata = AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {
                "cell_type": pd.Categorical([f"type{t}" for t in labels]),
                "donor": pd.Categorical(rng.choice(["d1", "d2", "d3"], size=n_cells)),
            },
            index=[f"cell{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"GENE{j}" for j in range(n_genes)]),
    )
    return adata


@pytest.fixture
def counts() -> AnnData:
    """240 cells × 300 genes of integer counts (CSR), four cell types, three donors."""
    return nb_counts()


@pytest.fixture(scope="session")
def _pbmc_session() -> AnnData:
    return sct.datasets.pbmc68k_counts()


@pytest.fixture
def pbmc(_pbmc_session) -> AnnData:
    """A fresh copy of ``sct.datasets.pbmc68k_counts()`` (700 cells × 765 genes)."""
    return _pbmc_session.copy()


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setattr(sct.settings, "progress_bars", False)


@pytest.fixture
def make_counts():
    """The generator behind ``counts``, for tests that need another shape or seed."""
    return nb_counts
