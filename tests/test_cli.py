"""The command line: demo end to end, tokenize, pretrain, and errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import anndata as ad
import pytest

from sctransformer.cli import main
from test_embed_tiny_model import needs_tiny


@pytest.fixture
def small_h5ad(tmp_path, make_counts):
    path = tmp_path / "in.h5ad"
    make_counts(n_cells=30, n_genes=60, seed=4).write_h5ad(path)
    return path


def test_tokenize(small_h5ad, tmp_path):
    out = tmp_path / "out.h5ad"
    assert (
        main(["tokenize", str(small_h5ad), str(out), "--method", "rank", "--max-length", "20"]) == 0
    )
    adata = ad.read_h5ad(out)
    assert adata.obsm["sct_tokens"].shape == (30, 20)
    assert adata.uns["sct"]["params"]["method"] == "rank"


def test_pretrain_then_embed(small_h5ad, tmp_path):
    tok = tmp_path / "tok.h5ad"
    assert (
        main(["tokenize", str(small_h5ad), str(tok), "--method", "rank", "--max-length", "16"]) == 0
    )
    model_dir = tmp_path / "model"
    assert (
        main(["pretrain", str(tok), str(model_dir), "--batch-size", "16", "--device", "cpu"]) == 0
    )
    out = tmp_path / "emb.h5ad"
    assert main(["embed", str(tok), str(out), "--model", str(model_dir), "--device", "cpu"]) == 0
    adata = ad.read_h5ad(out)
    assert adata.obsm["X_sct"].shape[0] == 30
    assert adata.uns["sct_embed"]["params"]["device"] == "cpu"


def test_bad_arguments_exit_2(small_h5ad, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["tokenize", str(small_h5ad), str(tmp_path / "o.h5ad"), "--method", "nope"])
    assert err.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["frobnicate"])
    assert err.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    # errors raised by the step itself: code 2 and one line naming the problem, no traceback
    code = main(["embed", str(small_h5ad), str(tmp_path / "o.h5ad"), "--model", "no-such-model"])
    assert code == 2
    msg = capsys.readouterr().err
    assert msg.startswith("error:") and "no-such-model" in msg and "Traceback" not in msg
    assert not (tmp_path / "o.h5ad").exists()


def test_bad_argument_from_the_shell(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "sctransformer", "embed"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "usage:" in res.stderr and "required" in res.stderr


@needs_tiny
@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "sctransformer", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("demo.h5ad", "umap_sct.png", "grn.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    print(summary)
    assert summary["cells"] == 700
    assert summary["knn_accuracy_X_sct"] > summary["majority_class_accuracy"]
    assert summary["annotation_accuracy_linear_30pct_query"] > summary["majority_class_accuracy"]
    assert summary["attention_edges"] > 0
    adata = ad.read_h5ad(out / "demo.h5ad")
    assert "X_sct" in adata.obsm and "X_umap" in adata.obsm
    assert "sct_grn" in adata.varp and "sct_label" in adata.obs
