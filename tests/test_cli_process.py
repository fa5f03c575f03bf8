"""The command line as a separate process: light imports, exit codes, a run killed mid-write,
and the demo end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

# generous: these bound a hung process on a loaded machine, they time nothing
TIMEOUT = 900


def sct_run(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "sctransformer", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kw,
    )


def test_building_the_parser_imports_nothing_heavy():
    code = (
        "import sys, sctransformer.cli as c; c.build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'anndata', 'scanpy', 'numpy', 'pandas', "
        "'matplotlib', 'h5py') if m in sys.modules))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_exit_codes_from_the_shell(tmp_path):
    res = sct_run("embed")
    assert res.returncode == 2
    assert "usage:" in res.stderr and "required" in res.stderr
    res = sct_run("tokenize", tmp_path / "missing.h5ad", tmp_path / "out.h5ad")
    assert res.returncode == 1
    assert res.stderr == f"error: no such file: {tmp_path / 'missing.h5ad'}\n"
    assert not list(tmp_path.iterdir())
    res = sct_run("--help")
    assert res.returncode == 0 and "plot-heads" in res.stdout


def _big_counts(path, n_cells=20_000, n_genes=1_500, seed=0):
    """Sparse counts whose value tokens (every gene, zeros included) make a ~200 MB output."""
    rng = np.random.default_rng(seed)
    nnz_per_cell = 45
    cols = np.sort(rng.integers(0, n_genes, size=(n_cells, nnz_per_cell)), axis=1)
    x = sp.csr_matrix(
        (
            rng.integers(1, 6, size=n_cells * nnz_per_cell).astype(np.float32),
            cols.ravel(),
            np.arange(0, n_cells * nnz_per_cell + 1, nnz_per_cell),
        ),
        shape=(n_cells, n_genes),
    )
    x.sum_duplicates()
    ad.AnnData(x, var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)])).write_h5ad(path)


def test_killed_mid_write_leaves_the_previous_output(tmp_path):
    src, out = tmp_path / "big.h5ad", tmp_path / "out.h5ad"
    _big_counts(src)
    previous = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    previous.uns["marker"] = "previous"
    previous.write_h5ad(out)
    before = out.read_bytes()

    argv = ["tokenize", src, out, "--method", "value", "--include-zeros", "--quiet"]
    log = tmp_path.parent / f"{tmp_path.name}.stderr"
    with (
        open(log, "wb") as err,
        subprocess.Popen(
            [sys.executable, "-m", "sctransformer", *map(str, argv)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        ) as proc,
    ):
        partial = None
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            found = list(tmp_path.glob(".out.h5ad.*.partial"))
            try:
                writing = bool(found) and found[0].stat().st_size > 0  # the h5ad is being written
            except FileNotFoundError:  # renamed into place between glob and stat
                writing = False
            if writing:
                partial = found[0]
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=TIMEOUT)
    assert partial is not None, f"the run ended before its output was written: {log.read_text()}"
    assert proc.returncode == -signal.SIGKILL
    # the output is the previous file, byte for byte, and still reads
    assert out.read_bytes() == before
    assert ad.read_h5ad(out).uns["marker"] == "previous"
    # the killed temporary is hidden and never read; the next run replaces the output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["big.h5ad", "out.h5ad", partial.name]
    )
    res = sct_run(*argv)
    assert res.returncode == 0, res.stderr
    tok = ad.read_h5ad(out, backed="r")
    assert tok.obsm["sct_tokens"].shape[0] == 20_000 and "marker" not in tok.uns
    tok.file.close()
