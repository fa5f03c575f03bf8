"""The command line in-process (``main(argv)``): each subcommand against the library call it
wraps, the run record in ``uns``, ``--config``, and a failing input per subcommand that exits 1
with one line and writes nothing."""

from __future__ import annotations

import gzip
import json
import tarfile

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

import sctransformer as sct
from sctransformer.cli import main
from test_embed_tiny_model import needs_tiny

pytestmark = needs_tiny

GENES = ["CD3D", "CD79A", "LYZ", "NKG7", "GNLY", "S100A8"]


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    print(err)  # shown when a test fails
    return code, out, err


def assert_fails(argv, capsys, *, says: str, outputs=()):
    """Exit 1, one line on stderr naming the problem, no traceback, no output written."""
    code, _, err = run(argv, capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert "Traceback" not in err
    for path in outputs:
        assert not path.exists(), path
        assert not list(path.parent.glob(f".{path.name}.*")), "a temporary file was left"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """48 PBMCs (counts) in an h5ad, and the same cells tokenized for the bundled model."""
    folder = tmp_path_factory.mktemp("cli")
    adata = sct.datasets.pbmc68k_counts()
    idx = np.random.default_rng(0).choice(adata.n_obs, 48, replace=False)
    adata = adata[np.sort(idx)].copy()
    adata.write_h5ad(folder / "pbmc.h5ad")
    assert main(["tokenize", str(folder / "pbmc.h5ad"), str(folder / "tok.h5ad"),
                 "--model", "sct-tiny-pbmc", "--quiet"]) == 0  # fmt: skip
    return folder


def test_tokenize_matches_the_library_and_records_the_run(data, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    argv = ["tokenize", data / "pbmc.h5ad", out, "--method", "bin", "--max-length", "24",
            "--n-bins", "8", "--seed", "3", "--no-add-cls"]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    got = ad.read_h5ad(out)
    ref = ad.read_h5ad(data / "pbmc.h5ad")
    sct.pp.tokenize(ref, method="bin", max_length=24, n_bins=8, seed=3, add_cls=False)
    np.testing.assert_array_equal(got.obsm["sct_tokens"], ref.obsm["sct_tokens"])
    np.testing.assert_array_equal(got.obsm["sct_values"], ref.obsm["sct_values"])
    rec = got.uns["sct_cli"]["tokenize"]
    assert list(rec["argv"]) == ["sctransformer", *map(str, argv)]
    assert rec["version"] == sct.__version__
    opts = rec["options"]
    assert opts["max_length"] == 24 and opts["n_bins"] == 8 and not opts["add_cls"]
    assert opts["gene_key"] == "" and opts["method"] == "bin"  # None is stored as ""


def test_tokenize_refuses_log_normalised_data_unless_told(data, tmp_path, capsys):
    lognorm = ad.read_h5ad(data / "pbmc.h5ad")
    x = lognorm.X.toarray()
    lognorm.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4))
    path = tmp_path / "lognorm.h5ad"
    lognorm.write_h5ad(path)
    out = tmp_path / "out.h5ad"
    assert_fails(["tokenize", path, out, "--method", "rank"], capsys,
                 says="not integer counts", outputs=[out])  # fmt: skip
    # the counts are in a layer: reading them is the fix; or accept the values as they are
    assert run(["tokenize", path, out, "--method", "rank", "--layer", "counts"], capsys)[0] == 0
    assert run(["tokenize", path, out, "--method", "rank", "--no-normalize"], capsys)[0] == 0
    # the model-based steps tokenize too: the same decision is asked for
    emb = tmp_path / "emb.h5ad"
    assert_fails(["embed", path, emb], capsys, says="--allow-non-counts", outputs=[emb])
    assert run(["embed", path, emb, "--counts-layer", "counts", "--quiet"], capsys)[0] == 0
    assert run(["embed", path, emb, "--allow-non-counts", "--quiet"], capsys)[0] == 0


def test_missing_and_unreadable_inputs(data, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    assert_fails(["tokenize", tmp_path / "nope.h5ad", out], capsys,
                 says=f"no such file: {tmp_path / 'nope.h5ad'}", outputs=[out])  # fmt: skip
    text = tmp_path / "cells.csv"
    text.write_text("a,b\n1,2\n")
    assert_fails(["tokenize", text, out, "--method", "rank"], capsys,
                 says="not an HDF5 file", outputs=[out])  # fmt: skip
    truncated = tmp_path / "truncated.h5ad"
    truncated.write_bytes((data / "pbmc.h5ad").read_bytes()[:50_000])
    assert_fails(["tokenize", truncated, out, "--method", "rank"], capsys,
                 says="damaged or incomplete", outputs=[out])  # fmt: skip
    assert_fails(["tokenize", tmp_path, out, "--method", "rank"], capsys,
                 says="without matrix.mtx", outputs=[out])  # fmt: skip
    assert_fails(["annotate", data / "pbmc.h5ad", out, "--reference", tmp_path / "ref.h5ad",
                  "--labels-key", "bulk_labels"], capsys, says="no such file", outputs=[out])  # fmt: skip
    assert_fails(["tokenize", data / "pbmc.h5ad", tmp_path / "no" / "out.h5ad", "--method",
                  "rank"], capsys, says="no such folder")  # fmt: skip


def _write_10x(adata, folder):
    """A Cell Ranger v3 mtx folder and .h5 file, written from the 10x format description."""
    x = sp.csr_matrix(adata.X).astype(np.int64)
    mtx = folder / "mtx"
    mtx.mkdir()
    with gzip.open(mtx / "matrix.mtx.gz", "wb") as f:
        scipy.io.mmwrite(f, x.T.tocoo())
    ids = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    pd.DataFrame({"id": ids, "name": adata.var_names, "type": "Gene Expression"}).to_csv(
        mtx / "features.tsv.gz", sep="\t", header=False, index=False
    )
    pd.Series(adata.obs_names).to_csv(mtx / "barcodes.tsv.gz", header=False, index=False)
    csc = x.T.tocsc()  # genes x cells, stored by cell
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(adata.obs_names, dtype="S")
        m["data"], m["indices"], m["indptr"] = csc.data, csc.indices, csc.indptr
        m["shape"] = np.array(csc.shape, dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array(ids, dtype="S")
        feats["name"] = np.array(adata.var_names, dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * adata.n_vars, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * adata.n_vars, dtype="S")
    return mtx, folder / "filtered_feature_bc_matrix.h5"


def test_10x_inputs_read_like_the_h5ad(data, tmp_path, capsys):
    adata = ad.read_h5ad(data / "pbmc.h5ad")
    mtx, h5 = _write_10x(adata, tmp_path)
    tokens = {}
    for name, path in {"h5ad": data / "pbmc.h5ad", "mtx": mtx, "h5": h5}.items():
        out = tmp_path / f"{name}.h5ad"
        assert run(["tokenize", path, out, "--model", "sct-tiny-pbmc"], capsys)[0] == 0
        tokens[name] = ad.read_h5ad(out).obsm["sct_tokens"]
    np.testing.assert_array_equal(tokens["mtx"], tokens["h5ad"])
    np.testing.assert_array_equal(tokens["h5"], tokens["h5ad"])


def test_config_file_and_flags_that_win(data, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'device = "cpu"\nseed = 5\n\n[tokenize]\nmethod = "bin"\nmax-length = 30\n'
        "normalize = true\n"
    )
    out = tmp_path / "out.h5ad"
    argv = ["tokenize", data / "pbmc.h5ad", out, "--config", cfg, "--max-length", "20"]
    assert run(argv, capsys)[0] == 0
    got = ad.read_h5ad(out)
    assert got.obsm["sct_tokens"].shape == (48, 20)  # the flag wins over the file
    params = got.uns["sct"]["params"]
    assert params["method"] == "bin" and params["seed"] == 5  # from the file
    assert got.uns["sct_cli"]["tokenize"]["options"]["config"] == str(cfg)
    # a key that is no option, or a wrong type: a usage error (2) before anything runs
    cfg.write_text("max_lenght = 3\n")
    with pytest.raises(SystemExit) as err:
        main(["tokenize", str(data / "pbmc.h5ad"), str(out), "--config", str(cfg)])
    assert err.value.code == 2 and "no option 'max_lenght'" in capsys.readouterr().err
    cfg.write_text("[tokenize]\nnormalize = 'yes'\n")
    with pytest.raises(SystemExit) as err:
        main(["tokenize", str(data / "pbmc.h5ad"), str(out), "--config", str(cfg)])
    assert err.value.code == 2 and "true or false" in capsys.readouterr().err


def test_usage_errors_exit_2(data, tmp_path, capsys):
    for argv, says in [
        (["tokenize", data / "pbmc.h5ad", tmp_path / "o", "--method", "nope"], "invalid choice"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["plot-grn", data / "tok.h5ad", tmp_path / "grn.dat"], "--format"),
        (["grn", data / "tok.h5ad", tmp_path / "o", "--batch-size", "0"], "at least 1"),
    ]:
        with pytest.raises(SystemExit) as err:
            main([str(a) for a in argv])
        assert err.value.code == 2
        assert says in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_help_shows_descriptions_and_defaults(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--help"])
    assert err.value.code == 0
    text = capsys.readouterr().out
    for name in ["tokenize", "pretrain", "embed", "embed-genes", "annotate", "grn", "perturb",
                 "benchmark", "plot-heads", "plot-grn", "models", "demo"]:  # fmt: skip
        assert f"\n    {name}" in text, name
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size BATCH_SIZE cells per pass (default: 32)" in text
    assert "--model MODEL registry name" in text and "(default: sct-tiny-pbmc)" in text
    for option in ["--min-gene-fraction", "--gene-key", "--threads", "--precision", "--device",
                   "--export-embedding", "--quiet", "--counts-layer", "--config"]:  # fmt: skip
        assert option in text, option


def test_pretrain_writes_a_model_folder_and_archive(data, tmp_path, capsys):
    folder = tmp_path / "model"
    argv = ["pretrain", data / "tok.h5ad", folder, "--max-steps", "2", "--batch-size", "8",
            "--device", "cpu", "--export-history", tmp_path / "history.tsv", "--threads", "1"]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    model = sct.models.load(folder)
    assert model.metadata["sct_cli"]["pretrain"]["options"]["max_steps"] == 2
    history = pd.read_csv(tmp_path / "history.tsv", sep="\t")
    assert list(history["step"]) == [1, 2] and np.isfinite(history["loss"]).all()
    # the same run as a .tar (a single file, e.g. a Galaxy dataset), usable as --model
    archive = tmp_path / "model.tar"
    argv = ["pretrain", data / "tok.h5ad", archive, "--max-steps", "2", "--batch-size", "8",
            "--device", "cpu", "--archive", "--threads", "1"]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    with tarfile.open(archive) as tar:
        assert {"config.json", "model.safetensors", "vocab.json"} <= set(tar.getnames())
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    a, b = sct.models.load(folder).state_dict(), sct.models.load(tmp_path / "unpacked").state_dict()
    assert a.keys() == b.keys()
    for k in a:  # same seed, same data, same threads: the same weights
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    emb = tmp_path / "emb.h5ad"
    assert run(["embed", data / "tok.h5ad", emb, "--model", archive], capsys)[0] == 0
    assert ad.read_h5ad(emb).obsm["X_sct"].shape == (48, model.config.hidden_size)
    # failing input: no cell with any count; nothing written
    empty = ad.read_h5ad(data / "pbmc.h5ad")
    empty.X = sp.csr_matrix(empty.shape, dtype=np.float32)
    empty.write_h5ad(tmp_path / "empty.h5ad")
    bad = tmp_path / "bad-model"
    assert_fails(["pretrain", tmp_path / "empty.h5ad", bad], capsys,
                 says="no cell has any expressed gene", outputs=[bad])  # fmt: skip


def test_embed_matches_the_library_and_exports_tsv(data, tmp_path, capsys):
    out, tsv = tmp_path / "emb.h5ad", tmp_path / "emb.tsv"
    argv = ["embed", data / "pbmc.h5ad", out, "--pooling", "mean", "--batch-size", "7",
            "--export-embedding", tsv, "--precision", "fp32", "--device", "cpu"]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    got = ad.read_h5ad(out)
    ref = ad.read_h5ad(data / "pbmc.h5ad")
    sct.tl.embed_cells(ref, "sct-tiny-pbmc", pooling="mean", precision="fp32", device="cpu")
    np.testing.assert_allclose(got.obsm["X_sct"], ref.obsm["X_sct"], rtol=1e-4, atol=1e-5)
    table = pd.read_csv(tsv, sep="\t", index_col=0)
    assert list(table.index) == list(got.obs_names)
    np.testing.assert_allclose(table.to_numpy(), got.obsm["X_sct"], rtol=1e-6)
    assert got.uns["sct_cli"]["embed"]["options"]["pooling"] == "mean"
    # the previous run's record is kept beside the new one
    assert "tokenize" not in got.uns["sct_cli"]
    again = tmp_path / "again.h5ad"
    assert run(["embed", data / "tok.h5ad", again], capsys)[0] == 0
    assert set(ad.read_h5ad(again).uns["sct_cli"]) == {"tokenize", "embed"}
    # failing input: an unknown model; neither the h5ad nor the TSV is written
    out2, tsv2 = tmp_path / "o.h5ad", tmp_path / "o.tsv"
    assert_fails(["embed", data / "pbmc.h5ad", out2, "--model", "no-such-model",
                  "--export-embedding", tsv2], capsys, says="no-such-model", outputs=[out2, tsv2])  # fmt: skip


def test_embed_genes(data, tmp_path, capsys):
    out, tsv = tmp_path / "genes.h5ad", tmp_path / "genes.tsv"
    assert run(["embed-genes", data / "tok.h5ad", out, "--export-embedding", tsv,
                "--groupby", "phase"], capsys)[0] == 0  # fmt: skip
    got = ad.read_h5ad(out)
    table = pd.read_csv(tsv, sep="\t", index_col=0)
    np.testing.assert_allclose(table.to_numpy(), got.varm["sct_gene"], rtol=1e-6)
    # a gene's embedding is the mean over the cells expressing it: present genes are nonzero
    present = np.asarray((got.X > 0).sum(0)).ravel() > 0
    assert (np.abs(got.varm["sct_gene"][present]).sum(1) > 0).all()
    assert set(got.uns["sct_gene"]["groups"]) == set(got.obs["phase"].astype(str))
    bad = tmp_path / "bad.h5ad"
    assert_fails(["embed-genes", data / "pbmc.h5ad", bad, "--counts-layer", "nope"], capsys,
                 says="no such layer", outputs=[bad])  # fmt: skip


def test_annotate_with_a_reference_then_with_the_saved_annotator(data, tmp_path, capsys):
    out, annot, tsv = tmp_path / "ann.h5ad", tmp_path / "annotator", tmp_path / "labels.tsv"
    argv = ["annotate", data / "pbmc.h5ad", out, "--reference", data / "tok.h5ad",
            "--labels-key", "bulk_labels", "--method", "knn", "--n-neighbors", "1",
            "--save-annotator", annot, "--export-labels", tsv]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    got = ad.read_h5ad(out)
    # 1-nearest neighbour of a cell that is itself in the reference: its own label
    assert (got.obs["sct_label"].astype(str) == got.obs["bulk_labels"].astype(str)).all()
    table = pd.read_csv(tsv, sep="\t", index_col=0)
    assert list(table["sct_label"]) == list(got.obs["sct_label"].astype(str))
    again = tmp_path / "again.h5ad"
    assert run(["annotate", data / "pbmc.h5ad", again, "--model", annot], capsys)[0] == 0
    assert list(ad.read_h5ad(again).obs["sct_label"]) == list(got.obs["sct_label"])
    bad = tmp_path / "bad.h5ad"
    assert_fails(["annotate", data / "pbmc.h5ad", bad, "--reference", data / "tok.h5ad"],
                 capsys, says="--labels-key", outputs=[bad])  # fmt: skip
    assert_fails(["annotate", data / "pbmc.h5ad", bad, "--reference", data / "tok.h5ad",
                  "--labels-key", "cell_kind", "--save-annotator", tmp_path / "a2"], capsys,
                 says="cell_kind", outputs=[bad, tmp_path / "a2"])  # fmt: skip


def test_grn_and_plot_grn(data, tmp_path, capsys):
    out, edges = tmp_path / "grn.h5ad", tmp_path / "edges.tsv"
    argv = ["grn", data / "tok.h5ad", out, "--top-k", "3", "--export-edges", edges,
            "--batch-size", "8", "--genes", *GENES]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    got = ad.read_h5ad(out)
    table = pd.read_csv(edges, sep="\t", keep_default_na=False)
    assert set(table["source"]) <= set(GENES) and set(table["target"]) <= set(GENES)
    assert table.groupby("source").size().max() <= 3  # --top-k reached the function
    assert len(table) == got.varp["sct_grn"].nnz
    for fmt, magic in [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")]:
        img = tmp_path / f"grn.{fmt}"
        assert run(["plot-grn", out, img, "--top", "5"], capsys)[0] == 0
        assert img.read_bytes()[:5].startswith(magic)
    bad = tmp_path / "bad.h5ad"
    assert_fails(["grn", data / "tok.h5ad", bad, "--groupby", "nope"], capsys,
                 says="nope", outputs=[bad])  # fmt: skip
    img = tmp_path / "none.png"
    assert_fails(["plot-grn", data / "tok.h5ad", img], capsys, says="sct_grn", outputs=[img])


def test_plot_heads_records_the_run_in_the_image(data, tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "heads.png"
    argv = ["plot-heads", data / "tok.h5ad", img, "--model", "sct-tiny-pbmc", "--genes", *GENES,
            "--layers", "-1", "--dpi", "50"]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    with Image.open(img) as im:
        rec = json.loads(im.info["Description"])
    assert rec["options"]["genes"] == GENES and rec["version"] == sct.__version__
    bad = tmp_path / "bad.png"
    assert_fails(["plot-heads", data / "tok.h5ad", bad, "--model", "sct-tiny-pbmc",
                  "--genes", "NOT_A_GENE"], capsys, says="NOT_A_GENE", outputs=[bad])  # fmt: skip


def test_perturb(data, tmp_path, capsys):
    out, tsv = tmp_path / "p.h5ad", tmp_path / "p.tsv"
    argv = ["perturb", data / "tok.h5ad", out, "--genes", "LYZ", "CD3D", "--export-table", tsv]
    assert run(argv, capsys)[0] == 0
    got = ad.read_h5ad(out)
    table = pd.read_csv(tsv, sep="\t")
    assert list(table["gene"]) == ["LYZ", "CD3D"] and (table["mode"] == "delete").all()
    x = ad.read_h5ad(data / "pbmc.h5ad")[:, ["LYZ", "CD3D"]].X.toarray()
    assert list(table["n_cells"]) == list((x > 0).sum(0))  # cells that express the gene
    shift = got.obsm["sct_perturb_shift"]
    assert np.isnan(np.asarray(shift["LYZ"])[x[:, 0] == 0]).all()
    bad = tmp_path / "bad.h5ad"
    assert_fails(["perturb", data / "tok.h5ad", bad, "--genes", "NOT_A_GENE"], capsys,
                 says="NOT_A_GENE", outputs=[bad])  # fmt: skip


def test_benchmark_writes_the_tidy_table(data, tmp_path, capsys):
    out = tmp_path / "bench.h5ad"
    argv = ["benchmark", data / "pbmc.h5ad", out, "--labels-key", "bulk_labels",
            "--methods", "majority", "pca_knn", "--n-pcs", "5", "--cv", "2"]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    got = ad.read_h5ad(out)
    table = pd.read_csv(tmp_path / "bench.tsv", sep="\t", keep_default_na=False)
    assert set(table["method"]) == {"majority", "pca_knn"}
    uns = got.uns["sct_benchmark"]["table"]
    np.testing.assert_allclose(table["value"], np.asarray(uns["value"], dtype=float))
    # majority accuracy: the share of the most frequent training label among the test cells
    split = got.obs["sct_benchmark_split"]
    train = got.obs["bulk_labels"][split == "train"].value_counts().idxmax()
    expect = (got.obs["bulk_labels"][split == "test"] == train).mean()
    acc = table.query("method == 'majority' and metric == 'accuracy'")["value"].item()
    assert acc == pytest.approx(expect)
    bad = tmp_path / "bad.h5ad"
    assert_fails(["benchmark", data / "pbmc.h5ad", bad, "--labels-key", "nope"], capsys,
                 says="nope", outputs=[bad, tmp_path / "bad.tsv"])  # fmt: skip


def test_models_list_files_fetch(tmp_path, capsys):
    code, out, _ = run(["models", "list", "--tsv"], capsys)
    assert code == 0
    listed = pd.read_csv(__import__("io").StringIO(out), sep="\t", index_col=0)
    assert list(listed.index) == list(sct.models.available().index)
    code, out, _ = run(["models", "files", "geneformer-v1-10m"], capsys)
    files = pd.read_csv(__import__("io").StringIO(out), sep="\t", index_col=0)
    expect = sct.models.files("geneformer-v1-10m")
    assert list(files["sha256"]) == list(expect["sha256"]) and code == 0
    dest = tmp_path / "tiny"
    code, out, _ = run(["models", "fetch", "sct-tiny-pbmc", "--output", dest], capsys)
    assert code == 0 and out.strip() == str(dest)
    assert sct.models.load(dest).metadata["name"] == "sct-tiny-pbmc"
    code, _, err = run(["models", "fetch", "no-such-model"], capsys)
    assert code == 1 and "not a registered model" in err and len(err.splitlines()) == 1


def test_gene_match_keywords_reach_only_functions_that_take_them():
    from sctransformer.cli._step import call

    def takes(adata, *, min_gene_fraction=0.2, gene_key=None):
        return {"min_gene_fraction": min_gene_fraction, "gene_key": gene_key}

    def lacks(adata):
        return "called"

    assert call(takes, None, min_gene_fraction=0.5, gene_key="ids", min_genes=None) == {
        "min_gene_fraction": 0.5,
        "gene_key": "ids",
    }
    assert call(takes, None, min_gene_fraction=None, gene_key=None) == {
        "min_gene_fraction": 0.2,  # unset on the command line: the function's default
        "gene_key": None,
    }
    assert call(lacks, None, min_gene_fraction=None, min_genes=None) == "called"
    with pytest.warns(UserWarning, match="--min-genes is ignored"):
        assert call(lacks, None, min_genes=10) == "called"


def test_demo_fails_in_one_line_when_its_folder_cannot_be_made(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the folder should go")
    assert_fails(["demo", "--out", blocker / "demo"], capsys, says=str(blocker))


def test_every_option_has_a_description_and_shows_its_default():
    import argparse

    from sctransformer.cli import build_parser
    from sctransformer.cli._main import _subparsers

    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        helps = {" ".join(a.option_strings): a for a in sub._actions if a.option_strings}
        text = " ".join(sub.format_help().split())
        for flags, action in helps.items():
            if action.help == argparse.SUPPRESS or flags == "-h --help":
                continue
            assert action.help, (name, flags)
            if action.default not in (None, argparse.SUPPRESS):
                shown = sub._get_formatter()._get_help_string(action)
                assert "default" in shown, (name, flags, shown)
        if name not in ("models", "demo"):
            assert "INPUT" in text.upper() and "OUTPUT" in text.upper(), name


def test_benchmark_seeds_and_held_out_data(data, tmp_path, capsys):
    pbmc = ad.read_h5ad(data / "pbmc.h5ad")
    half = pbmc.n_obs // 2
    pbmc[:half].copy().write_h5ad(tmp_path / "train.h5ad")
    pbmc[half:].copy().write_h5ad(tmp_path / "test.h5ad")
    out = tmp_path / "bench.h5ad"
    argv = ["benchmark", tmp_path / "train.h5ad", out, "--labels-key", "bulk_labels",
            "--methods", "majority", "--seeds", "0", "1", "--tasks", "label_prediction",
            "--test-data", tmp_path / "test.h5ad"]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    table = pd.read_csv(tmp_path / "bench.tsv", sep="\t", keep_default_na=False)
    assert sorted(set(table["seed"])) == [0, 1]
    test = pbmc[half:].obs["bulk_labels"].astype(str)
    train_top = pbmc[:half].obs["bulk_labels"].astype(str).value_counts().idxmax()
    acc = table.query("metric == 'accuracy' and seed == 0")["value"].item()
    assert acc == pytest.approx(float((test == train_top).mean()))
