"""sct.tl.in_silico_perturb and sct.pl.perturbation."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

import sctransformer as sct
from sctransformer.tl._perturb import perturb_tokens
from sctransformer.train.data import TokenArrays

matplotlib.use("Agg")

from test_annotate import no_none, snapshot, tiny_model

GENES = ["GENE1", "GENE5", "GENE7"]


@pytest.fixture(scope="module")
def pert():
    from conftest import nb_counts

    adata = nb_counts(60, 80, seed=4)
    return adata, tiny_model(adata, max_length=24)


def _arrays():
    # ids 0-3 specials, 4 a batch token, 5.. genes; pad 0
    tokens = np.array([[2, 4, 10, 11, 12, 0], [2, 4, 11, 13, 0, 0], [2, 4, 12, 10, 11, 13]])
    values = np.arange(18, dtype=np.float32).reshape(3, 6)
    is_gene = np.ones(20, bool)
    is_gene[:5] = False
    return TokenArrays(tokens, values, [5, 4, 6], pad_id=0), is_gene


def test_perturb_tokens_delete():
    data, is_gene = _arrays()
    out, rows, src = perturb_tokens(data, 12, mode="delete", is_gene=is_gene, max_length=6)
    assert rows.tolist() == [0, 2]  # cell 1 lacks the gene
    assert out.lengths.tolist() == [4, 5]
    assert out.tokens[0, :4].tolist() == [2, 4, 10, 11]
    assert out.tokens[1, :5].tolist() == [2, 4, 10, 11, 13]
    assert src[1, :5].tolist() == [0, 1, 3, 4, 5]
    assert out.values[0, 3] == data.values[0, 3]


def test_perturb_tokens_overexpress():
    data, is_gene = _arrays()
    out, rows, src = perturb_tokens(data, 12, mode="overexpress", is_gene=is_gene, max_length=6)
    assert rows.tolist() == [0, 1, 2]
    # moved to the first gene slot, after <cls> and the batch token
    assert out.tokens[0, :5].tolist() == [2, 4, 12, 10, 11]
    # inserted where absent
    assert out.tokens[1, :5].tolist() == [2, 4, 12, 11, 13]
    assert out.lengths.tolist() == [5, 5, 6]
    assert out.tokens[2].tolist() == [2, 4, 12, 10, 11, 13]  # already first: unchanged
    assert src[1, :5].tolist() == [0, 1, -1, 2, 3]
    # the moved gene takes the cell's highest gene value
    assert out.values[1, 2] == data.values[1, 2:4].max()
    # at max_length the last gene drops out
    out, *_ = perturb_tokens(data, 14, mode="overexpress", is_gene=is_gene, max_length=6)
    assert out.tokens[2].tolist() == [2, 4, 14, 12, 10, 11]
    assert out.lengths[2] == 6


@pytest.mark.parametrize("mode", ["delete", "overexpress"])
def test_keys_and_table(pert, mode):
    adata, model = pert
    adata = adata.copy()
    sct.tl.in_silico_perturb(
        adata,
        model,
        genes=GENES,
        mode=mode,
        groupby="cell_type",
        target="type0",
        gene_shifts=True,
        pooling="mean",
        precision="fp32",
        device="cpu",
    )
    t = adata.uns["sct_perturb"]["table"]
    assert isinstance(t, pd.DataFrame)
    n_groups = adata.obs["cell_type"].nunique()
    assert len(t) == len(GENES) * n_groups
    assert {"gene", "group", "mode", "n_cells", "cell_shift", "cell_shift_sem"} <= set(t.columns)
    assert {"gene_shift", "target_shift", "target_shift_sem"} <= set(t.columns)
    assert (t["mode"] == mode).all()
    shift = adata.obsm["sct_perturb_shift"]
    assert list(shift.columns) == GENES
    assert (shift.fillna(0).to_numpy() >= -1e-5).all()
    expressed = np.asarray(adata[:, GENES].X.toarray() > 0)
    if mode == "delete":
        # cells not expressing a gene (or with it cut off by max_length) are not perturbed
        assert (
            not shift.to_numpy()[~expressed].any() or np.isnan(shift.to_numpy()[~expressed]).all()
        )
    else:
        assert shift.notna().all().all()
    assert t.groupby("gene")["n_cells"].sum().to_dict() == shift.notna().sum().to_dict()
    assert no_none(adata.uns["sct_perturb"]["params"])


def test_batching_does_not_change_results(pert):
    adata, model = pert
    a, b = adata.copy(), adata.copy()
    kw = dict(genes=GENES, mode="overexpress", pooling="mean", precision="fp32", device="cpu")
    sct.tl.in_silico_perturb(a, model, batch_size=64, chunk_size=256, **kw)
    sct.tl.in_silico_perturb(b, model, batch_size=3, chunk_size=7, **kw)
    np.testing.assert_allclose(
        a.obsm["sct_perturb_shift"].to_numpy(), b.obsm["sct_perturb_shift"].to_numpy(), atol=1e-5
    )


def test_shift_matches_a_manual_reembedding(pert):
    """The reported shift equals 1 - cos of embeddings of a hand-edited cell."""
    adata, model = pert
    adata = adata[:5].copy()
    sct.pp.tokenize(adata, vocab=model)
    gid = model.vocab["GENE5"]
    sct.tl.in_silico_perturb(
        adata, model, genes=["GENE5"], pooling="mean", precision="fp32", device="cpu"
    )
    before = adata.copy()
    sct.tl.embed_cells(before, model, pooling="mean", precision="fp32", device="cpu")
    after = before.copy()
    tok = after.obsm["sct_tokens"].copy()
    val = after.obsm["sct_values"].copy()
    n = after.obs["sct_n_tokens"].to_numpy().copy()
    for i in range(after.n_obs):
        row = list(tok[i, : n[i]])
        if gid in row:
            row.remove(gid)
            tok[i] = row + [model.vocab.pad_id] * (tok.shape[1] - len(row))
            n[i] -= 1
    after.obsm["sct_tokens"], after.obsm["sct_values"] = tok, val
    after.obs["sct_n_tokens"] = n
    sct.tl.embed_cells(after, model, pooling="mean", precision="fp32", device="cpu")
    x, y = before.obsm["X_sct"], after.obsm["X_sct"]
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    got = adata.obsm["sct_perturb_shift"]["GENE5"].to_numpy()
    has = np.isfinite(got)
    np.testing.assert_allclose(got[has], 1 - cos[has], atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"genes": ["NOPE"]}, "not in the model's vocabulary"),
        ({"genes": []}, "genes is empty"),
        ({"genes": ["GENE1", "GENE1"]}, "duplicate genes"),
        ({"mode": "knockdown"}, "mode='knockdown'"),
        ({"target": "type0"}, "target= needs groupby"),
        ({"groupby": "cell_type", "target": "typeX"}, "not a value of"),
        ({"groupby": "nope"}, "'nope' not found"),
        ({"batch_size": 0}, "batch_size"),
        ({"groupby": "gappy"}, r"obs\['gappy'\] has 1 missing values; fill them"),
    ],
)
def test_errors_leave_adata_unchanged(pert, kwargs, match):
    adata, model = pert
    adata = adata.copy()
    adata.obs["gappy"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[0, adata.obs.columns.get_loc("gappy")] = None
    before = snapshot(adata)
    kw = {"genes": GENES, **kwargs}
    with pytest.raises(ValueError, match=match):
        sct.tl.in_silico_perturb(adata, model, **kw)
    assert snapshot(adata) == before


def test_delete_needs_a_measured_gene(pert):
    adata, model = pert
    sub = adata[:, [g for g in adata.var_names if g != "GENE1"]].copy()
    before = snapshot(sub)
    with pytest.raises(ValueError, match="not measured in adata"):
        sct.tl.in_silico_perturb(sub, model, genes=["GENE1"], mode="delete")
    assert snapshot(sub) == before
    sct.tl.in_silico_perturb(sub, model, genes=["GENE1"], mode="overexpress", device="cpu")
    assert sub.obsm["sct_perturb_shift"]["GENE1"].notna().all()


def test_plot_perturbation(pert):
    import matplotlib.pyplot as plt

    adata, model = pert
    adata = adata.copy()
    with pytest.raises(ValueError, match="in_silico_perturb"):
        sct.pl.perturbation(adata)
    sct.tl.in_silico_perturb(adata, model, genes=GENES, device="cpu")
    ax = sct.pl.perturbation(adata, show=False)
    assert isinstance(ax, matplotlib.axes.Axes)
    plt.close(ax.figure)
    sct.tl.in_silico_perturb(
        adata, model, genes=GENES, groupby="cell_type", target="type1", device="cpu"
    )
    ax = sct.pl.perturbation(adata, metric="target_shift", show=False)
    assert len(ax.figure.axes) == 2  # heatmap + colour bar
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="gene_shift"):
        sct.pl.perturbation(adata, metric="gene_shift")
