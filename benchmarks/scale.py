"""Peak memory and speed on large backed files: does the peak grow with the number of cells?

For each size (default 50,000 and 200,000 cells × 20,000 genes) the script writes an h5ad of
integer counts (CSR, ``--expressed`` genes per cell, the bundled model's 765 genes among the
20,000 and more often expressed than the rest), then runs each task in a fresh process on the
file opened ``backed="r+"`` with the bundled ``sct-tiny-pbmc`` model:

tokenize      ``sct.pp.tokenize(adata, vocab=model)`` (the vocabulary's medians: streams)
embed_cells   ``sct.tl.embed_cells``
embed_genes   ``sct.tl.embed_genes``
annotate      ``sct.tl.annotate`` with a linear annotator fitted on 2,000 in-memory cells
attention_grn ``sct.tl.attention_grn(groupby=...)``

and reports cells/s, the peak resident memory during the call (sampled every 5 ms), the bytes of the results the task
keeps in memory (they grow with the cells by design) and the peak without them; "start" is
the process's resident size before the call (python, torch, the model, the opened file). The reference
run is the smallest size: the last columns give each size's peak over the reference's, with and
without the results (the target: within 1.10 without them). Usage::

    python benchmarks/scale.py                              # 50,000 and 200,000 cells
    python benchmarks/scale.py --cells 5000,20000 --tasks tokenize,embed_cells
"""

# ruff: noqa: E402  (the path fix below must run before the imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

TASKS = ("tokenize", "embed_cells", "embed_genes", "annotate", "attention_grn")
MODEL = "sct-tiny-pbmc"


def write_counts(path: Path, n_cells: int, n_genes: int, expressed: int, seed: int = 0) -> None:
    """An h5ad of integer counts, generated in blocks of 20,000 cells."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    import sctransformer as sct

    model_genes = list(sct.models.resolve(MODEL).vocab.genes)
    names = model_genes + [f"G{j}" for j in range(n_genes - len(model_genes))]
    rng = np.random.default_rng(seed)
    popularity = rng.lognormal(0.0, 1.0, size=n_genes)
    popularity[: len(model_genes)] *= 20  # the model's genes: about a third of a cell's genes
    cdf = np.cumsum(popularity / popularity.sum())
    labels = np.array(["A", "B", "C"])[rng.integers(0, 3, n_cells)]
    blocks = []
    for start in range(0, n_cells, 20_000):
        n = min(20_000, n_cells - start)
        per = rng.integers(expressed // 2, expressed * 3 // 2 + 1, size=n)
        rows = np.repeat(np.arange(n, dtype=np.int64), per)
        cols = np.minimum(np.searchsorted(cdf, rng.random(rows.size)), n_genes - 1)
        key = np.unique(rows * n_genes + cols)  # sorted: CSR order, repeats dropped
        rows, cols = key // n_genes, (key % n_genes).astype(np.int32)
        data = (1 + np.floor(rng.exponential(size=rows.size) * 2)).astype(np.float32)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        blocks.append(sp.csr_matrix((data, cols, indptr), shape=(n, n_genes)))
    x = sp.vstack(blocks, format="csr")
    adata = ad.AnnData(
        x,
        obs=pd.DataFrame({"cell_type": pd.Categorical(labels)},
                         index=pd.Index([f"c{i}" for i in range(n_cells)], dtype=str)),
        var=pd.DataFrame(index=pd.Index(names, dtype=str)),
    )  # fmt: skip
    adata.write_h5ad(path)


def result_bytes(adata, before: dict) -> int:
    """Bytes of the arrays a task added to obsm/varm/varp/uns (held in memory)."""

    def size(v) -> int:
        if isinstance(v, dict):
            return sum(size(x) for x in v.values())
        if hasattr(v, "data") and hasattr(v, "indices"):  # sparse
            return v.data.nbytes + v.indices.nbytes + v.indptr.nbytes
        if hasattr(v, "memory_usage"):  # DataFrame
            return int(v.memory_usage(deep=True).sum())
        return int(getattr(v, "nbytes", 0))

    total = 0
    for slot in ("obsm", "varm", "varp", "uns"):
        for k, v in getattr(adata, slot).items():
            if k not in before.get(slot, ()):
                total += size(v)
    return total


def current_rss() -> int:
    """This process's resident bytes now (``ru_maxrss`` would carry the parent's high-water
    mark across fork and exec).
    """
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """The highest resident size seen every 5 ms while the ``with`` block runs."""

    def __enter__(self):
        import threading

        self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, current_rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())


def child(task: str, path: str) -> None:
    """Run one task on the backed file; print seconds, peak RSS and result bytes as JSON."""
    import anndata as ad

    import sctransformer as sct

    sct.settings.progress_bars = False
    sct.settings.verbosity = 0
    model = sct.models.resolve(MODEL)
    # the model knows 765 of the file's genes: below the default 20% gene-match threshold
    match = dict(min_gene_fraction=0.01)
    kw = dict(device="cpu", precision="fp32", **match)
    annotator = None
    if task == "annotate":
        ref = ad.read_h5ad(path, backed="r")[:2000].to_memory()
        annotator = sct.tl.annotate(ref, model, labels_key="cell_type", method="linear", **kw)
    adata = ad.read_h5ad(path, backed="r+")
    before = {s: set(getattr(adata, s).keys()) for s in ("obsm", "varm", "varp", "uns")}
    rss_before = current_rss()
    sampler = PeakSampler()
    t = time.perf_counter()
    with sampler:
        if task == "tokenize":
            sct.pp.tokenize(adata, vocab=model, **match)
        elif task == "embed_cells":
            sct.tl.embed_cells(adata, model, **kw)
        elif task == "embed_genes":
            sct.tl.embed_genes(adata, model, **kw)
        elif task == "annotate":
            sct.tl.annotate(adata, annotator, **kw)
        elif task == "attention_grn":
            sct.tl.attention_grn(adata, model, groupby="cell_type", device="cpu", **match)
    seconds = time.perf_counter() - t
    out = dict(
        seconds=seconds, peak=sampler.peak, before=rss_before, results=result_bytes(adata, before)
    )
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default="50000,200000")
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--expressed", type=int, default=300, help="mean genes per cell")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--dir", help="folder for the temporary files (default: the system's)")
    p.add_argument("--data", help="keep the generated h5ad files here and reuse them")
    p.add_argument("--child", nargs=2, metavar=("TASK", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = [int(c) for c in args.cells.split(",")]
    tasks = args.tasks.split(",")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        p.error(f"unknown tasks {unknown}; choose from {TASKS}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        data_dir = Path(args.data) if args.data else Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for n in sizes:
            paths[n] = data_dir / f"cells_{n}x{args.genes}x{args.expressed}.h5ad"
            if paths[n].exists():  # written by an earlier run with --data
                continue
            t = time.perf_counter()
            write_counts(paths[n], n, args.genes, args.expressed)
            print(f"wrote {n:,} cells × {args.genes:,} genes ({paths[n].stat().st_size / 2**20:,.0f} "
                  f"MiB) in {time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
        work = Path(tmp) / "run.h5ad"  # each run gets a fresh copy: tasks write into r+ files
        rows = []
        for task in tasks:  # each task at every size in turn, so its ratio comes whole
            for n in sizes:
                shutil.copyfile(paths[n], work)
                run = subprocess.run(
                    [sys.executable, __file__, "--child", task, str(work)],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if run.returncode != 0:
                    print(f"{task} at {n:,} cells failed:\n{run.stderr[-3000:]}")
                    continue
                r = json.loads(run.stdout.strip().splitlines()[-1])
                rows.append((task, n, r))
                print(f"  {task} at {n:,} cells: {r['seconds']:.1f} s, peak "
                      f"{r['peak'] / 2**20:,.0f} MiB, results {r['results'] / 2**20:,.0f} MiB",
                      flush=True)  # fmt: skip
    import sctransformer as sct

    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores, sctransformer {sct.__version__}; model {MODEL}; "
        f"{args.genes:,} genes, about {args.expressed} expressed per cell; one process per run"
    )
    head = (f"{'task':<14}{'cells':>9}{'cells/s':>10}{'start MiB':>11}{'peak MiB':>10}{'results MiB':>13}"
            f"{'peak-results':>14}{'ratio':>7}{'ratio-results':>15}")  # fmt: skip
    print(head)
    print("-" * len(head))
    ref = {}
    for task, n, r in rows:
        base = r["peak"] - r["results"]
        ref.setdefault(task, (r["peak"], base))
        print(f"{task:<14}{n:>9,}{n / r['seconds']:>10,.0f}{r['before'] / 2**20:>11,.0f}"
              f"{r['peak'] / 2**20:>10,.0f}"
              f"{r['results'] / 2**20:>13,.0f}{base / 2**20:>14,.0f}"
              f"{r['peak'] / ref[task][0]:>6.2f}x{base / ref[task][1]:>14.2f}x")  # fmt: skip
    print(f"ratio: peak over the {sizes[0]:,}-cell run of the same task (the reference)")


if __name__ == "__main__":
    main()
