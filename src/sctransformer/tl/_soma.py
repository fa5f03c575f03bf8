"""``sct.tl.embed_soma``: embed the cells of a TileDB-SOMA query without loading the matrix.

TileDB-SOMA is the format CELLxGENE Census serves. The query's cells are read a chunk of
``soma_joinid`` at a time, tokenized with the model and embedded; under ``torchrun`` each rank
takes a contiguous share of the sorted joinids and rank 0 gathers. The embeddings come back
keyed by ``soma_joinid`` and may be written back into the experiment as an ``obsm`` layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def embed_soma(
    experiment,
    model,
    *,
    measurement: str = "RNA",
    X_name: str = "raw",
    obs_value_filter: str | None = None,
    obs_coords=None,
    var_key: str | None = None,
    pooling: str | None = None,
    layer: int | None = None,
    batch_size: int = 32,
    chunk_size: int = 2048,
    precision: str = "auto",
    device: str = "auto",
    min_gene_fraction: float = 0.2,
    min_genes: int = 50,
    obsm_layer: str | None = None,
) -> pd.DataFrame | None:
    """Embed the cells of ``experiment`` selected by an obs query.

    Parameters
    ----------
    experiment
        A :class:`tiledbsoma.Experiment` (e.g. ``census["census_data"]["homo_sapiens"]``) or
        its URI.
    model
        A model, a registry name or a checkpoint folder.
    measurement, X_name
        The measurement and its ``X`` layer of counts (Census: ``"RNA"``, ``"raw"``;
        ``tiledbsoma.io.from_anndata`` writes ``"data"``).
    obs_value_filter, obs_coords
        The cells: a SOMA value filter (``"tissue_general == 'lung' and is_primary_data ==
        True"``) and/or joinid coordinates; ``None`` for all.
    var_key
        A ``var`` column with the names the vocabulary uses (Census: ``"feature_id"`` for
        Ensembl IDs, ``"feature_name"`` for symbols); default: the model's ``gene_key``
        when ``var`` has it, else ``"feature_name"`` when present, else ``var_id``.
    pooling, layer, batch_size, chunk_size, precision, device, min_gene_fraction, min_genes
        As in :func:`sctransformer.tl.embed_cells`.
    obsm_layer
        Also write the embeddings into ``experiment.ms[measurement].obsm[obsm_layer]`` (a
        sparse array over the experiment's joinids; the experiment is opened for writing).

    Returns
    -------
    A float32 DataFrame, one row per cell indexed by ``soma_joinid`` (sorted), one column per
    hidden unit; under ``torchrun`` on rank 0 (``None`` on the other ranks).
    """
    import tiledbsoma as soma

    from .._tokens import model_tokens
    from ..models import resolve
    from ._common import check_positive
    from ._distributed import gather_rows, init, rank_slice

    model = resolve(model)
    model.check()
    run = model.inference(
        batch_size=batch_size, device=device, precision=precision, layer=layer, pooling=pooling
    )
    check_positive(chunk_size=chunk_size)
    uri = experiment if isinstance(experiment, str) else experiment.uri
    opened = isinstance(experiment, str)
    exp = soma.Experiment.open(uri) if opened else experiment
    try:  # closed again below, so no TileDB handle or thread outlives the call
        if measurement not in exp.ms:
            raise ValueError(
                f"measurement {measurement!r} not in the experiment (it has {list(exp.ms)}); pass "
                "measurement="
            )
        if X_name not in exp.ms[measurement].X:
            raise ValueError(
                f"X layer {X_name!r} not in measurement {measurement!r} (it has "
                f"{list(exp.ms[measurement].X)}); pass X_name="
            )
        query = exp.axis_query(
            measurement, obs_query=soma.AxisQuery(value_filter=obs_value_filter, coords=obs_coords or ())
        )  # fmt: skip
        obs_ids = np.sort(query.obs_joinids().to_numpy())
        if len(obs_ids) == 0:
            raise ValueError(
                f"the obs query (value_filter={obs_value_filter!r}, coords={obs_coords!r}) returns "
                "no cells: check the column names and values against experiment.obs (e.g. "
                "experiment.obs.read(column_names=[...]).concat().to_pandas())"
            )
        if obsm_layer is not None:
            ms = exp.ms[measurement]
            if "obsm" in ms and obsm_layer in ms["obsm"]:
                raise ValueError(
                    f"ms[{measurement!r}].obsm[{obsm_layer!r}] already exists; pass another obsm_layer="
                )
        n_obs_domain = max(int(exp.obs.count), int(obs_ids.max()) + 1)
        var = query.var().concat().to_pandas()
        key = var_key or _var_key(model, var)
        if key not in var:
            raise ValueError(
                f"var has no column {key!r}; columns: {list(var.columns)}; pass var_key="
            )
        var_ids = var["soma_joinid"].to_numpy()
        order = np.argsort(var_ids)
        var_ids, names = var_ids[order], var[key].astype(str).to_numpy()[order]
        from anndata import AnnData

        genes = AnnData(var=pd.DataFrame(index=pd.Index(names, dtype=str)))
        model.check_genes(genes, min_gene_fraction=min_gene_fraction, min_genes=min_genes)

        rank, size = init()
        model.to(run.device).eval()
        lo, hi = rank_slice(len(obs_ids), rank, size)
        mine = obs_ids[lo:hi]
        X = exp.ms[measurement].X[X_name]
        local = np.zeros((len(mine), model.config.hidden_size), dtype=np.float32)
        for a in range(0, len(mine), chunk_size):
            ids = mine[a : a + chunk_size]
            chunk = _read_chunk(X, ids, var_ids)
            sub = AnnData(X=chunk, var=genes.var)
            data = model_tokens(sub, model, min_gene_fraction=min_gene_fraction)
            local[a : a + len(ids)] = model.pooled(data, run)
    finally:
        if opened:
            exp.close()
    emb = gather_rows(local, rank, size) if size > 1 else local
    if rank != 0:
        return None
    out = pd.DataFrame(emb, index=pd.Index(obs_ids, name="soma_joinid"))
    out.columns = [f"{c}" for c in out.columns]
    if obsm_layer is not None:
        _write_obsm(uri, measurement, obsm_layer, obs_ids, emb, n_obs_domain)
    return out


def _var_key(model, var: pd.DataFrame) -> str:
    gk = model.tokenize_params.get("gene_key", "var_names")
    if gk not in ("", "var_names", None) and gk in var:
        return gk
    return "feature_name" if "feature_name" in var else "var_id"


def _read_chunk(X, obs_ids: np.ndarray, var_ids: np.ndarray):
    """Cells ``obs_ids`` (sorted) × genes ``var_ids`` (sorted) as CSR float32."""
    import scipy.sparse as sp

    tbl = X.read(coords=(obs_ids, var_ids)).tables().concat()
    rows = np.searchsorted(obs_ids, tbl["soma_dim_0"].to_numpy())
    cols = np.searchsorted(var_ids, tbl["soma_dim_1"].to_numpy())
    vals = tbl["soma_data"].to_numpy().astype(np.float32)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(obs_ids), len(var_ids)))


def _write_obsm(uri, measurement, key, obs_ids, emb, n_obs: int) -> None:
    import pyarrow as pa
    import tiledbsoma as soma

    with soma.Experiment.open(uri, mode="w") as exp:
        ms = exp.ms[measurement]
        if "obsm" not in ms:
            ms.add_new_collection("obsm")
        obsm = ms["obsm"]
        arr = obsm.add_new_sparse_ndarray(key, type=pa.float32(), shape=(n_obs, emb.shape[1]))
        r, c = np.meshgrid(obs_ids, np.arange(emb.shape[1]), indexing="ij")
        table = pa.Table.from_pydict(
            {
                "soma_dim_0": r.ravel().astype(np.int64),
                "soma_dim_1": c.ravel().astype(np.int64),
                "soma_data": emb.ravel().astype(np.float32),
            }
        )
        arr.write(table)
