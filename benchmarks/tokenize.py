"""Throughput of ``sct.pp.tokenize`` against plain per-cell loops on the same matrix.

Generates a CSR matrix of integer counts (default 50,000 cells × 20,000 genes, 1,000–1,500
expressed genes per cell), then for each encoding times ``sct.pp.tokenize`` and a per-cell
reference written the way the published tools do it:

rank
    ours with a vocabulary that carries gene medians (so tokenization alone is timed), and
    separately with medians computed from the data; references: the per-row loop of the
    published rank tokenizers (normalise the CSR row, ``np.argsort``) and the bare per-row
    ``np.argsort`` loop over scores computed beforehand, with numpy's default sort and with
    ``kind="stable"`` (the order ours equals: ties in var order).
adaptive_bin
    scGPT's per-cell binning on the dense row: ``np.quantile`` edges, two ``np.digitize``
    calls and random tie-breaking.
bin, value, sentence
    per-cell loops on the CSR row (equal-width bins, ``log1p`` values, top-100 gene names).

Slow references are timed on a subset of cells and extrapolated to cells/s (marked ``*``).
Each timing is the best of ``--repeat`` runs. Peak memory is the tracemalloc peak of one
extra, untimed run (numpy reports its buffers to tracemalloc; the compiled kernels' scratch
arrays, a few MiB per thread, are not seen). Usage::

    python benchmarks/tokenize.py                 # full size
    python benchmarks/tokenize.py --cells 5000 --genes 5000
"""

from __future__ import annotations

import os
import sys

# This script shares its name with the standard library's ``tokenize`` (imported by pandas and
# tracemalloc); run as a script its folder heads sys.path, so move the folder to the end (the
# standard library wins, _common still imports).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from _common import cpu_model  # noqa: E402
from anndata import AnnData  # noqa: E402

import sctransformer as sct  # noqa: E402
from sctransformer.tokenizers import GeneVocab  # noqa: E402


def generate(n_cells: int, n_genes: int, lo: int, hi: int, seed: int = 0) -> AnnData:
    """Integer counts, CSR float32, ``lo``–``hi`` expressed genes per cell (vectorised)."""
    rng = np.random.default_rng(seed)
    # slightly more draws than the target count: repeats are dropped below
    per_cell = (rng.integers(lo, hi + 1, size=n_cells) * 1.04).astype(np.int64)
    popularity = rng.lognormal(0.0, 1.0, size=n_genes)
    cdf = np.cumsum(popularity / popularity.sum())
    # draw columns with replacement and drop repeats (a few percent at this sparsity)
    rows = np.repeat(np.arange(n_cells, dtype=np.int64), per_cell)
    cols = np.searchsorted(cdf, rng.random(rows.size))
    key = np.sort(rows * n_genes + np.minimum(cols, n_genes - 1))  # CSR order
    key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    rows, cols = key // n_genes, key % n_genes
    mean = 0.3 + popularity / popularity.mean()
    data = (1 + np.floor(rng.exponential(size=rows.size) * mean[cols])).astype(np.float32)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_cells))])
    x = sp.csr_matrix((data, cols.astype(np.int32), indptr), shape=(n_cells, n_genes))
    return AnnData(
        x,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]),
    )


# --- per-cell references ------------------------------------------------------------------


def ref_rank_published(x: sp.csr_matrix, ids, medians, n: int, k: int = 2047):
    """Per CSR row: normalise by the cell total and the gene medians, ``np.argsort``, crop."""
    out = []
    for i in range(n):
        a, b = x.indptr[i], x.indptr[i + 1]
        data = x.data[a:b].astype(np.float64)
        idx = x.indices[a:b]
        score = data / data.sum() * 1e4 / medians[idx]
        order = np.argsort(-score)[:k]
        out.append(ids[idx[order]])
    return out


def ref_rank_bare(indptr, score, n: int, kind: str | None = None):
    """Only the per-row ``np.argsort`` of scores computed beforehand.

    numpy's default sort is not stable (on AVX-512 CPUs it is a SIMD kernel that puts ties in
    an order of its own); ``kind="stable"`` gives the order ours equals (ties in var order).
    """
    for i in range(n):
        np.argsort(-score[indptr[i] : indptr[i + 1]], kind=kind)


def ref_adaptive_bin(x: sp.csr_matrix, n: int, n_bins: int = 51, seed: int = 0):
    """scGPT's binning, one dense row at a time."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        row = x[i].toarray().ravel().astype(np.float64)
        row = np.log1p(row / row.sum() * 1e4)
        nz = row.nonzero()[0]
        vals = row[nz]
        edges = np.quantile(vals, np.linspace(0, 1, n_bins - 1))
        left = np.digitize(vals, edges)
        right = np.digitize(vals, edges, right=True)
        digits = np.ceil(rng.random(len(vals)) * (right - left) + left).astype(np.int64)
        binned = np.zeros_like(row, dtype=np.int64)
        binned[nz] = digits
        out.append(binned)
    return out


def ref_bin(x: sp.csr_matrix, n: int, n_bins: int = 6):
    out = []
    for i in range(n):
        a, b = x.indptr[i], x.indptr[i + 1]
        data = x.data[a:b].astype(np.float64)
        out.append(np.minimum(np.floor(np.log1p(data / data.sum() * 1e4)), n_bins - 1))
    return out


def ref_value(x: sp.csr_matrix, n: int, k: int = 1199):
    out = []
    for i in range(n):
        a, b = x.indptr[i], x.indptr[i + 1]
        data = x.data[a:b].astype(np.float64)
        v = np.log1p(data / data.sum() * 1e4)
        keep = np.sort(np.argsort(-v, kind="stable")[:k])
        out.append((x.indices[a:b][keep], v[keep].astype(np.float32)))
    return out


def ref_sentence(x: sp.csr_matrix, names: np.ndarray, n: int, k: int = 100):
    out = []
    for i in range(n):
        a, b = x.indptr[i], x.indptr[i + 1]
        order = np.argsort(-x.data[a:b], kind="stable")[:k]
        out.append(" ".join(names[x.indices[a:b][order]]))
    return out


# --- harness ------------------------------------------------------------------------------


def numpy_simd() -> str:
    """The widest SIMD numpy dispatches its sorts to here (AVX-512 sorts are several times
    faster, which moves the argsort references)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # a private module: report nothing rather than fail
        return "unknown"
    return "AVX-512" if features.get("AVX512_SKX") else "AVX2" if features.get("AVX2") else "none"


def best_time(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_mib(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--min-expressed", type=int, default=1_000)
    p.add_argument("--max-expressed", type=int, default=1_500)
    p.add_argument("--ref-cells", type=int, default=5_000, help="cells for slow references")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--methods", default="rank,rank_data,adaptive_bin,bin,value,sentence")
    args = p.parse_args()
    sct.settings.progress_bars = False
    sct.settings.verbosity = 0

    t = time.perf_counter()
    adata = generate(args.cells, args.genes, args.min_expressed, args.max_expressed)
    x = adata.X
    n_cells = adata.n_obs
    nnz_per_cell = x.nnz / n_cells
    print(
        f"data: {n_cells:,} cells × {adata.n_vars:,} genes, CSR, {nnz_per_cell:,.0f} expressed "
        f"genes/cell, generated in {time.perf_counter() - t:.1f} s"
    )
    rng = np.random.default_rng(1)
    medians_arr = rng.uniform(0.5, 20.0, adata.n_vars)
    names = np.asarray(adata.var_names)
    vocab = GeneVocab.from_genes(names, gene_medians=dict(zip(names, medians_arr, strict=True)))
    ids = vocab.encode_genes(names)
    n_ref = min(args.ref_cells, n_cells)
    # the bare argsort loop sorts the same scores ours sorts, computed here outside the timing
    totals = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    rows = np.repeat(np.arange(n_cells), np.diff(x.indptr))
    score = x.data / totals[rows] * 1e4 / medians_arr[x.indices]
    del rows

    def ours(method, **kw):
        # in place (each run overwrites the same keys), so copying X is not timed
        return lambda: sct.pp.tokenize(adata, method=method, **kw)

    # both rank cases sort the same scores, so they share their references
    rank_refs = [
        (
            "per-row normalise+argsort",
            lambda: ref_rank_published(x, ids, medians_arr, n_cells),
            n_cells,
        ),
        ("bare per-row argsort", lambda: ref_rank_bare(x.indptr, score, n_cells), n_cells),
        (
            "bare per-row stable argsort",
            lambda: ref_rank_bare(x.indptr, score, n_cells, "stable"),
            n_cells,
        ),
    ]

    # method label -> (our call, [(reference label, reference call, cells it covers)])
    cases = {
        "rank": (
            ours("rank", vocab=vocab),
            rank_refs,
        ),
        "rank_data": (
            ours("rank", gene_medians="data"),
            rank_refs,
        ),
        "adaptive_bin": (
            ours("adaptive_bin"),
            [("scGPT dense-row quantile+digitize", lambda: ref_adaptive_bin(x, n_ref), n_ref)],
        ),
        "bin": (ours("bin"), [("per-row log1p+floor", lambda: ref_bin(x, n_cells), n_cells)]),
        "value": (ours("value"), [("per-row log1p+top-k", lambda: ref_value(x, n_cells), n_cells)]),
        "sentence": (
            ours("sentence"),
            [("per-row argsort+join", lambda: ref_sentence(x, names, n_ref), n_ref)],
        ),
    }

    table = []
    for method in args.methods.split(","):
        fn, refs = cases[method]
        t_ours = best_time(fn, args.repeat)
        mem = peak_mib(fn)
        for label, ref, n in refs:
            t_ref = best_time(ref, 1 if n == n_cells else args.repeat)
            ours_cps = n_cells / t_ours
            ref_cps = n / t_ref
            star = "*" if n < n_cells else ""
            table.append((method, label + star, ours_cps, ref_cps, ours_cps / ref_cps, mem))

    print()
    print(
        f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores available, "
        f"sct.settings.n_jobs -> {sct.settings.effective_n_jobs()} threads; numpy "
        f"{np.__version__}, scipy {sp.__name__ and __import__('scipy').__version__}, "
        f"python {platform.python_version()}; numpy SIMD: {numpy_simd()}"
    )
    print(
        f"timings: best of {args.repeat} (full-size references: 1 run); * = reference timed on "
        f"{n_ref:,} cells and extrapolated; peak = tracemalloc peak of one extra run of ours, "
        "its outputs included"
    )
    head = f"{'method':<13}{'reference':<38}{'ours cells/s':>14}{'ref cells/s':>13}{'ratio':>8}{'peak MiB':>10}"
    print(head)
    print("-" * len(head))
    for method, label, o, r, ratio, mem in table:
        print(f"{method:<13}{label:<38}{o:>14,.0f}{r:>13,.0f}{ratio:>7.1f}x{mem:>10,.0f}")


if __name__ == "__main__":
    main()
