"""tl.embed_soma: the cells of a SOMA obs query, streamed, equal embed_cells on the same cells."""

from __future__ import annotations

import numpy as np
import pytest

import sctransformer as sct
from _train_utils import untrained_model

soma = pytest.importorskip("tiledbsoma")
import tiledbsoma.io  # noqa: E402

KW = {"precision": "fp32", "device": "cpu", "min_genes": 10}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from conftest import nb_counts

    sct.settings.progress_bars = False
    adata = nb_counts(90, 150, seed=5)
    uri = str(tmp_path_factory.mktemp("soma") / "exp")
    tiledbsoma.io.from_anndata(uri, adata, measurement_name="RNA")
    tok = adata.copy()
    sct.pp.tokenize(tok, method="rank", max_length=24)
    return uri, adata, untrained_model(tok)


def _joinids(uri, adata):
    with soma.Experiment.open(uri) as exp:
        obs = exp.obs.read(column_names=["soma_joinid", "obs_id"]).concat().to_pandas()
    return obs.set_index("obs_id").loc[adata.obs_names, "soma_joinid"].to_numpy()


def test_query_embedding_equals_embed_cells_on_the_same_cells(experiment):
    uri, adata, model = experiment
    got = sct.tl.embed_soma(
        uri, model, X_name="data", obs_value_filter="cell_type == 'type1'", var_key="var_id",
        chunk_size=7, **KW,
    )  # fmt: skip
    cells = adata[adata.obs["cell_type"] == "type1"].copy()
    want = sct.tl.embed_cells(cells, model, copy=True, **KW).obsm["X_sct"]
    ids = _joinids(uri, cells)
    assert got.index.name == "soma_joinid" and len(got) == cells.n_obs > 5
    assert got.index.is_monotonic_increasing
    np.testing.assert_allclose(got.loc[ids].to_numpy(), want, atol=1e-5)


def test_embeddings_written_back_as_obsm_layer(experiment):
    uri, _, model = experiment
    got = sct.tl.embed_soma(
        uri, model, X_name="data", obs_coords=[slice(10, 29)], var_key="var_id",
        obsm_layer="X_sct_test", **KW,
    )  # fmt: skip
    assert list(got.index) == list(range(10, 30))
    with soma.Experiment.open(uri) as exp:
        tbl = exp.ms["RNA"]["obsm"]["X_sct_test"].read().tables().concat().to_pandas()
    back = tbl.pivot(index="soma_dim_0", columns="soma_dim_1", values="soma_data")
    np.testing.assert_allclose(back.loc[got.index].to_numpy(), got.to_numpy(), atol=0)
    with pytest.raises(ValueError, match=r"obsm\['X_sct_test'\] already exists"):
        sct.tl.embed_soma(uri, model, X_name="data", obs_coords=[slice(0, 3)],
                          var_key="var_id", obsm_layer="X_sct_test", **KW)  # fmt: skip


def test_query_without_cells_is_a_clear_error(experiment):
    uri, _, model = experiment
    with pytest.raises(ValueError, match=r"returns no cells.*experiment\.obs"):
        sct.tl.embed_soma(uri, model, X_name="data", obs_value_filter="cell_type == 'nope'",
                          var_key="var_id", **KW)  # fmt: skip


def test_unknown_layer_and_measurement_name_the_fix(experiment):
    uri, _, model = experiment
    with pytest.raises(ValueError, match=r"X layer 'raw' not in measurement 'RNA'.*X_name="):
        sct.tl.embed_soma(uri, model, var_key="var_id", **KW)
    with pytest.raises(ValueError, match=r"measurement 'ATAC' not in .*measurement="):
        sct.tl.embed_soma(uri, model, measurement="ATAC", X_name="data", **KW)
