"""Attention gene networks: accuracy against a known network, and memory over 20,000 cells.

Part 1 (krumsiek11): scanpy ships a simulated myeloid differentiation (640 cells × 11 genes)
and the Boolean/Hill network that generated it (``scanpy/sim_models/krumsiek11.txt``). A small
transformer is pretrained on the cells, ``sct.tl.attention_grn`` ranks gene pairs by attention
and the ranking is scored against the known edges (AUROC, AUPRC), beside absolute Pearson
correlation of the expression and a random ranking, all measured in the same run.

krumsiek11's values are continuous simulated levels in [-0.02, 1.01], not counts, so two
tokenizations are tried, each documented where it is built:

``bins``
    Negative values clipped to 0; every gene in every cell (``include_zeros=True``) with its
    level in 11 equal-width bins of 0.1 (``method="bin", normalize=False, bin_width=0.1``).
    The model predicts masked value bins from the other genes (heads ``["bins"]``), so it must
    learn how genes depend on each other.
``rank``
    Levels × 10, rounded, as pseudo-counts; Geneformer's rank encoding (no median scaling) of
    the genes that are on; the model predicts masked gene identities (MLM).

Edges are scored undirected (11 genes: 55 pairs, self-loops excluded; a pair is positive when
either gene appears in the other's update rule) from ``W + Wᵀ``. Directed scores read ``W``
with the regulated gene as query and the regulator as key (110 ordered pairs).

Every estimator of ``attention_grn`` (``method=`` attention, embedding, deletion,
attention_grad) is scored beside |Pearson r|, a GENIE3-style extra-trees baseline and random, on
krumsiek11 and on SERGIO simulations (``sergio-scsim``; a random 100-gene network, 9 cell types ×
250 cells, Poisson counts), one pretrained model per seed, mean ± sd over ``--seeds`` /
``--sergio-seeds``. ``--rows-out FILE`` appends the per-seed rows; ``--summarise FILE...``
prints the table of several runs together.

Part 2 (memory): 20,000 generated cells (negative-binomial counts, 4 cell types, 500 genes,
``--tokens`` per cell (default 64), tokenized on the fly chunk by chunk) through ``attention_grn`` with
``groupby``; resident memory is sampled every 5 ms and the peak above the level before the
call is reported, beside the same call on 2,000 cells.

Run: ``python benchmarks/grn.py [--steps 1500] [--figures docs]``.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py would shadow the standard library's tokenize module
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from anndata import AnnData  # noqa: E402

import sctransformer as sct  # noqa: E402


# -- the known network ----------------------------------------------------------------------------
def krumsiek_edges() -> set[tuple[str, str]]:
    """Directed (regulator, target) pairs from the coupling list of krumsiek11.txt."""
    import scanpy

    path = Path(scanpy.__file__).parent / "sim_models" / "krumsiek11.txt"
    edges, in_couplings = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("# coupling list"):
            in_couplings = True
            continue
        if not in_couplings or not line.strip() or line.startswith("#"):
            continue
        target, regulator, _strength = line.split()
        edges.add((regulator, target))
    return edges


# -- metrics (written out so the benchmark needs nothing beyond the package) -----------------------
def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: Mann–Whitney U with tied scores sharing their mean rank."""
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision: mean precision at each positive, pairs taken in descending score.

    Tied scores are broken at random (seeded) rather than by their order in the list.
    """
    rng = np.random.default_rng(0)
    order = np.lexsort((rng.random(len(scores)), -scores))
    hits = labels[order].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def pair_table(genes: list[str], known: set[tuple[str, str]]):
    """Undirected and directed candidate pairs with their labels."""
    n = len(genes)
    iu = np.triu_indices(n, 1)
    undirected = np.array(
        [
            (genes[i], genes[j]) in known or (genes[j], genes[i]) in known
            for i, j in zip(*iu, strict=True)
        ]
    )
    off = ~np.eye(n, dtype=bool)
    # directed: row = regulated gene (query), column = regulator (key)
    directed = np.array([[(genes[j], genes[i]) in known for j in range(n)] for i in range(n)])
    return iu, undirected, off, directed


def score_rows(name, w, iu, und, off, dirl, rows):
    """Append undirected and directed AUROC/AUPRC of the weight matrix ``w`` to ``rows``."""
    sym = w + w.T
    rows.append(
        {
            "ranking": name,
            "AUROC": auroc(sym[iu], und),
            "AUPRC": auprc(sym[iu], und),
            "AUROC directed": auroc(w[off], dirl[off]),
            "AUPRC directed": auprc(w[off], dirl[off]),
        }
    )


# -- part 1 ---------------------------------------------------------------------------------------
def krumsiek_data() -> AnnData:
    import warnings

    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate obs names in the shipped file
        adata = sc.datasets.krumsiek11()
    adata.obs_names_make_unique()
    adata.X = np.clip(np.asarray(adata.X, dtype=np.float32), 0, None)
    return adata


def train_model(adata: AnnData, tokenization: str, steps: int, seed: int):
    from sctransformer.nn import TransformerConfig
    from sctransformer.tokenizers import GeneVocab

    if tokenization == "bins":
        sct.pp.tokenize(
            adata,
            method="bin",
            normalize=False,
            bin_width=0.1,
            n_bins=11,
            include_zeros=True,
        )
        value_input, heads, max_pos = "bins", ["bins"], 0
    else:
        pseudo = adata.copy()
        pseudo.X = sp.csr_matrix(np.round(adata.X * 10))
        sct.pp.tokenize(pseudo, method="rank", gene_medians="none")
        adata.obsm["sct_tokens"] = pseudo.obsm["sct_tokens"]
        adata.obsm["sct_values"] = pseudo.obsm["sct_values"]
        adata.obs["sct_n_tokens"] = pseudo.obs["sct_n_tokens"]
        adata.uns["sct"] = pseudo.uns["sct"]
        value_input, heads, max_pos = "none", ["mlm"], adata.obsm["sct_tokens"].shape[1]
    vocab = GeneVocab.from_json(adata.uns["sct"]["vocab"])
    config = TransformerConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        ffn_size=128,
        max_positions=max_pos,
        value_input=value_input,
        n_value_bins=11,
        heads=heads,
        pad_token_id=vocab.pad_id,
        dropout=0.0,
        attention_dropout=0.0,
    )
    model = sct.tl.pretrain(
        adata,
        model=config,
        max_steps=steps,
        epochs=10_000,
        batch_size=32,
        lr=2e-3,
        mask_prob=0.3,
        seed=seed,
        device="cpu",
    )
    loss = adata.uns["sct_pretrain"]["history"]["loss"].to_numpy()
    return model, float(loss[:20].mean()), float(loss[-50:].mean())


ESTIMATORS = {
    # name: keyword arguments of sct.tl.attention_grn
    "attention (rank, last layer)": dict(method="attention", normalize="rank", layers=-1),
    "attention (softmax, all layers)": dict(method="attention", normalize="softmax", layers="all"),
    "embedding similarity": dict(method="embedding"),
    "in silico deletion": dict(method="deletion"),
    "attention x gradient": dict(method="attention_grad", layers="all"),
}


def genie3(x: np.ndarray, seed: int, n_trees: int = 50) -> np.ndarray:
    """GENIE3-style scores: per target gene, an extra-trees regression on all other genes;
    ``w[target, regulator]`` is the regulator's impurity importance."""
    from sklearn.ensemble import ExtraTreesRegressor

    g = x.shape[1]
    w = np.zeros((g, g))
    for t in range(g):
        others = np.delete(np.arange(g), t)
        y = x[:, t]
        if y.std() == 0:
            continue
        model = ExtraTreesRegressor(
            n_estimators=n_trees, max_features="sqrt", min_samples_leaf=5, random_state=seed
        )
        model.fit(x[:, others], (y - y.mean()) / y.std())
        w[t, others] = model.feature_importances_
    return w


def random_rows(genes, iu, und, off, dirl, rows, name="random (mean of 200)"):
    rng = np.random.default_rng(0)
    rand = [
        (auroc(s[iu], und), auprc(s[iu], und), auroc(s[off], dirl[off]), auprc(s[off], dirl[off]))
        for s in (rng.random((len(genes), len(genes))) for _ in range(200))
    ]
    keys = ["ranking", "AUROC", "AUPRC", "AUROC directed", "AUPRC directed"]
    rows.append(dict(zip(keys, [name, *np.mean(rand, axis=0)], strict=True)))


def estimator_rows(
    adata, model, iu, und, off, dirl, rows, *, deletion_cells, seed, skip=()
) -> dict:
    """Score every estimator of ``attention_grn``; returns seconds per estimator."""
    times = {}
    for name, kw in ESTIMATORS.items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        sct.tl.attention_grn(
            adata,
            model,
            top_k=None,
            min_cells=1,
            device="cpu",
            batch_size=64,
            deletion_cells=deletion_cells,
            seed=seed,
            **kw,
        )
        times[name] = time.perf_counter() - t0
        w = adata.varp["sct_grn"].toarray().astype(float)
        met = adata.varp["sct_grn_n_cells"].toarray() > 0
        # pairs that never met in a cell have no score: rank them last
        w = np.where(met, w, w[met].min() - 1 if met.any() else 0.0)
        if kw["method"] == "deletion":  # rows are deleted (regulating) genes: as the others
            w = w.T
        score_rows(name, w, iu, und, off, dirl, rows)
    return times


def baseline_rows(x, iu, und, off, dirl, rows, seed) -> float:
    score_rows(
        "|Pearson r| of expression",
        np.nan_to_num(np.abs(np.corrcoef(x.T))),
        iu,
        und,
        off,
        dirl,
        rows,
    )
    t0 = time.perf_counter()
    score_rows("GENIE3 (extra trees)", genie3(x, seed), iu, und, off, dirl, rows)
    return time.perf_counter() - t0


def part_krumsiek(steps: int, seeds: list[int], figures: Path | None) -> pd.DataFrame:
    known = krumsiek_edges()
    base = krumsiek_data()
    genes = list(base.var_names)
    iu, und, off, dirl = pair_table(genes, known)
    print(
        f"krumsiek11: {base.n_obs} cells × {base.n_vars} genes; known network: {len(known)} "
        f"couplings, {int(und.sum())} of {len(und)} undirected gene pairs, "
        f"{int(dirl[off].sum())} of {int(off.sum())} directed (self-loops excluded)"
    )
    rows: list[dict] = []
    for seed in seeds:
        adata = base.copy()
        t0 = time.perf_counter()
        model, first, last = train_model(adata, "bins", steps, seed)
        print(
            f"  trained [bins, seed {seed}]: {steps} steps in {time.perf_counter() - t0:.0f} s, "
            f"loss {first:.3f} -> {last:.3f}"
        )
        part: list[dict] = []
        baseline_rows(np.asarray(base.X), iu, und, off, dirl, part, seed)
        random_rows(genes, iu, und, off, dirl, part)
        estimator_rows(adata, model, iu, und, off, dirl, part, deletion_cells=None, seed=seed)
        rows += [dict(r, seed=seed) for r in part]
        if figures is not None and seed == seeds[0]:
            make_figures(adata, model, figures)
    return summarise("krumsiek11", rows)


ROWS_OUT: Path | None = None  # --rows-out: every per-seed row is appended there as CSV


def summarise(name: str, rows: list[dict]) -> pd.DataFrame:
    """Mean and standard deviation over seeds, per ranking, best undirected AUROC first."""
    df = pd.DataFrame(rows)
    if ROWS_OUT is not None:
        df.assign(dataset=name).to_csv(
            ROWS_OUT, mode="a", header=not ROWS_OUT.exists(), index=False
        )
    metrics = ["AUROC", "AUPRC", "AUROC directed", "AUPRC directed"]
    agg = df.groupby("ranking", sort=False)[metrics].agg(["mean", "std"])
    out = pd.DataFrame(index=agg.index)
    for m in metrics:
        out[m] = [
            f"{mu:.3f} ± {sd:.3f}" if np.isfinite(sd) else f"{mu:.3f}"
            for mu, sd in zip(agg[(m, "mean")], agg[(m, "std")], strict=True)
        ]
    out["seeds"] = df.groupby("ranking", sort=False)["seed"].nunique()
    out = out.iloc[np.argsort(-agg[("AUROC", "mean")].to_numpy(), kind="stable")]
    print(f"{name}: mean ± sd over seeds {sorted(int(x) for x in df['seed'].unique())}")
    with pd.option_context("display.width", 200, "display.max_colwidth", 40):
        print(out.to_string())
    print("  per seed:")
    with pd.option_context("display.width", 200):
        print(df.pivot_table(index="ranking", columns="seed", values="AUROC").round(3).to_string())
    return out


# -- SERGIO -----------------------------------------------------------------------------------------
def sergio_data(n_genes: int, n_types: int, n_per_type: int, seed: int):
    """Steady-state SERGIO cells from a random acyclic network; counts are Poisson draws.

    10 master regulators; each other gene gets 1–3 regulators among the genes before it
    (70% activating, Hill coefficient 2, strengths uniform in [1, 5]); the master regulators'
    production rates differ between the ``n_types`` cell types (SERGIO's random profile), as
    in the SERGIO paper's DS1–DS3 (100 genes, 9 cell types). SERGIO orders genes by walking a
    ``set`` of names, so the cells (not the network) also depend on ``PYTHONHASHSEED``.
    """
    from SERGIO import sergio
    from SERGIO.GRN._components import Gene, SingleInteraction
    from SERGIO.GRN._grn import GRN
    from SERGIO.MR._profile import mrProfile

    rng = np.random.default_rng(seed)
    np.random.seed(seed)  # noqa: NPY002 (SERGIO draws from numpy's global generator)
    n_mr = 10
    genes = [Gene(name=str(i), decay=0.8) for i in range(n_genes)]
    grn = GRN()
    known = set()
    for t in range(n_mr, n_genes):
        for r in rng.choice(t, size=min(int(rng.integers(1, 4)), t), replace=False):
            k = rng.uniform(1, 5) * (1 if rng.random() < 0.7 else -1)
            grn.add_interaction(SingleInteraction(reg=[genes[r]], tar=genes[t], k=k, h=None, n=2))
            known.add((f"G{r}", f"G{t}"))
    grn.setMRs()
    profile = mrProfile(MR_names=grn.attr_["mrs"], n_types=n_types)
    profile.build_rnd()
    grn.init(profile, update_half_resp=True)
    sim = sergio(grn)
    sim.simulate(nCells=n_per_type, noise_s=1, safety_iter=150, scale_iter=5)
    expr = sim.getSimExpr()  # genes × cells
    order = np.argsort([int(n) for n in expr.index])
    clean = expr.to_numpy()[order].T
    counts = rng.poisson(clean).astype(np.float32)
    types = [c.split("_cell")[0] for c in expr.columns]
    adata = AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(types)}, index=[f"c{i}" for i in range(len(types))]
        ),
        var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]),
    )
    return adata, known


def train_binned(adata: AnnData, steps: int, seed: int):
    """Every gene of every cell with log1p(count) in 11 bins of 0.3; masked-bin pretraining."""
    from sctransformer.nn import TransformerConfig
    from sctransformer.tokenizers import GeneVocab

    sct.pp.tokenize(
        adata, method="bin", normalize=False, bin_width=0.3, n_bins=11, include_zeros=True
    )
    vocab = GeneVocab.from_json(adata.uns["sct"]["vocab"])
    config = TransformerConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        ffn_size=128,
        max_positions=0,
        value_input="bins",
        n_value_bins=11,
        heads=["bins"],
        pad_token_id=vocab.pad_id,
        dropout=0.0,
        attention_dropout=0.0,
    )
    model = sct.tl.pretrain(
        adata,
        model=config,
        max_steps=steps,
        epochs=10_000,
        batch_size=32,
        lr=2e-3,
        mask_prob=0.3,
        seed=seed,
        device="cpu",
    )
    loss = adata.uns["sct_pretrain"]["history"]["loss"].to_numpy()
    return model, float(loss[:20].mean()), float(loss[-50:].mean())


def part_sergio(
    steps: int,
    seeds: list[int],
    n_genes: int,
    n_types: int,
    n_per_type: int,
    deletion_cells: int,
    eval_cells: int,
    with_rank: bool = False,
) -> pd.DataFrame:
    rows: list[dict] = []
    for seed in seeds:
        t0 = time.perf_counter()
        base, known = sergio_data(n_genes, n_types, n_per_type, seed)
        t_sim = time.perf_counter() - t0
        genes = list(base.var_names)
        iu, und, off, dirl = pair_table(genes, known)
        x = np.log1p(base.X.toarray())
        print(
            f"SERGIO seed {seed}: {base.n_obs} cells × {base.n_vars} genes, {len(known)} known "
            f"edges ({int(und.sum())} of {len(und)} undirected pairs), zeros "
            f"{(x == 0).mean():.1%}, simulated in {t_sim:.0f} s"
        )
        adata = base.copy()
        t0 = time.perf_counter()
        model, first, last = train_binned(adata, steps, seed)
        print(
            f"  trained: {steps} steps in {time.perf_counter() - t0:.0f} s, "
            f"loss {first:.3f} -> {last:.3f}"
        )
        part: list[dict] = []
        # every ranking reads the same random subset of the cells (the model saw them all)
        sub = np.sort(np.random.default_rng(seed).choice(base.n_obs, eval_cells, replace=False))
        score_rows(
            "|Pearson r| of expression, all cells",
            np.abs(np.corrcoef(x.T)),
            iu,
            und,
            off,
            dirl,
            part,
        )
        t_genie = baseline_rows(x[sub], iu, und, off, dirl, part, seed)
        random_rows(genes, iu, und, off, dirl, part)
        times = estimator_rows(
            adata[sub].copy(),
            model,
            iu,
            und,
            off,
            dirl,
            part,
            deletion_cells=deletion_cells,
            seed=seed,
            skip=() if with_rank else ("attention (rank, last layer)",),
        )
        times["GENIE3"] = t_genie
        print("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
        rows += [dict(r, seed=seed) for r in part]
    return summarise(f"SERGIO ({n_genes} genes, {n_types * n_per_type} cells)", rows)


def make_figures(adata: AnnData, model, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    genes = list(adata.var_names)
    fig = sct.pl.attention_heads(adata, model, genes=genes, device="cpu", return_fig=True)
    fig.savefig(folder / "attention_heads.png", dpi=110)
    sct.tl.attention_grn(adata, model, normalize="rank", layers="all", top_k=3, device="cpu")
    fig = sct.pl.grn(adata, top=30, return_fig=True)
    fig.savefig(folder / "grn.png", dpi=110)
    print(f"  figures written to {folder}/attention_heads.png and {folder}/grn.png")


# -- part 2 ---------------------------------------------------------------------------------------
def generated_counts(n_cells: int, n_genes: int = 500, n_types: int = 4, seed: int = 0) -> AnnData:
    rng = np.random.default_rng(seed)
    base = rng.lognormal(-1.0, 1.2, size=n_genes)
    labels = rng.integers(0, n_types, size=n_cells)
    programme = np.ones((n_types, n_genes))
    for t, block in enumerate(np.array_split(rng.permutation(n_genes), n_types)):
        programme[t, block[: len(block) // 3]] = 8.0
    mu = base[None, :] * programme[labels] * rng.lognormal(0, 0.4, size=(n_cells, 1))
    counts = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(np.float32)
    return AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical([f"type{t}" for t in labels])},
            index=[f"c{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]),
    )


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakRSS:
    """Sample resident memory in a thread; ``peak`` is the highest value seen, in MiB."""

    def __enter__(self):
        self.start = _rss_mib()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def part_memory(n_large: int, batch_size: int, tokens: int, normalize: str) -> None:
    from sctransformer.nn import TransformerConfig

    train = generated_counts(2000, seed=1)
    sct.pp.tokenize(train, method="rank", max_length=tokens)
    from sctransformer.tokenizers import GeneVocab

    vocab = GeneVocab.from_json(train.uns["sct"]["vocab"])
    config = TransformerConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        ffn_size=128,
        max_positions=tokens,
        pad_token_id=vocab.pad_id,
    )
    model = sct.tl.pretrain(train, model=config, max_steps=20, batch_size=32, device="cpu")
    print(
        f"memory: model {config.num_layers} layers × {config.num_heads} heads, {tokens} tokens per "
        f"cell, 500 genes, 4 groups, normalize={normalize!r}, batch_size={batch_size}, "
        "tokenized on the fly"
    )
    for n in (2000, n_large):
        adata = generated_counts(n, seed=2)
        before = _rss_mib()
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            sct.tl.attention_grn(
                adata,
                model,
                groupby="cell_type",
                normalize=None if normalize == "none" else normalize,
                batch_size=batch_size,
                device="cpu",
            )
        dt = time.perf_counter() - t0
        n_edges = adata.varp["sct_grn"].nnz
        print(
            f"  {n:>6} cells: {dt:6.1f} s ({n / dt:,.0f} cells/s), RSS before {before:,.0f} MiB, "
            f"peak {mem.peak:,.0f} MiB (+{mem.peak - before:,.0f} MiB during the call), "
            f"{n_edges} edges kept"
        )
    g = 500
    acc = (4 * g * g * 8) + (4 * g * g * 8)
    print(
        f"  gene × gene accumulators (4 groups × 500², float64 sums + int64 counts): {acc / 2**20:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per cell (memory part)")
    parser.add_argument("--normalize", default="rank", help="rank, softmax or none (memory part)")
    parser.add_argument("--figures", type=Path, default=None)
    parser.add_argument("--skip-krumsiek", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-sergio", action="store_true")
    parser.add_argument("--sergio-steps", type=int, default=300)
    parser.add_argument("--sergio-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sergio-genes", type=int, default=100)
    parser.add_argument("--sergio-types", type=int, default=9)
    parser.add_argument("--sergio-cells-per-type", type=int, default=250)
    parser.add_argument("--deletion-cells", type=int, default=200)
    parser.add_argument("--eval-cells", type=int, default=500)
    parser.add_argument(
        "--sergio-rank", action="store_true", help="also rank-normalised attention (slow: sorts)"
    )
    parser.add_argument("--rows-out", type=Path, default=None, help="append rows as CSV")
    parser.add_argument(
        "--summarise", type=Path, nargs="+", default=None, help="only summarise row CSVs"
    )
    args = parser.parse_args()
    if args.summarise:
        df = pd.concat([pd.read_csv(p) for p in args.summarise], ignore_index=True)
        for name, part in df.groupby("dataset", sort=False):
            summarise(str(name).split(" seed")[0], part.drop(columns="dataset").to_dict("records"))
        return
    global ROWS_OUT
    ROWS_OUT = args.rows_out
    sct.settings.progress_bars = False
    sct.settings.verbosity = 0
    import torch

    torch.set_num_threads(int(os.environ.get("SCT_THREADS", torch.get_num_threads())))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t_start = time.perf_counter()
    if not args.skip_krumsiek:
        part_krumsiek(args.steps, args.seeds, args.figures)
    if not args.skip_sergio:
        part_sergio(
            args.sergio_steps,
            args.sergio_seeds,
            args.sergio_genes,
            args.sergio_types,
            args.sergio_cells_per_type,
            args.deletion_cells,
            args.eval_cells,
            args.sergio_rank,
        )
    print(f"networks part: {time.perf_counter() - t_start:.0f} s in all")
    if not args.skip_memory:
        part_memory(args.cells, args.batch_size, args.tokens, args.normalize)


if __name__ == "__main__":
    main()
