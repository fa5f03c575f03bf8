"""What ``sct.tl.attention_grn`` writes, from an estimate: the sparse networks over all cells,
per group and per head, the tidy edge table, the condition comparison and the head scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._attention_accum import pair_means
from ._attention_compare import _compare_table, _sparsify
from ._attention_stream import OVERALL


def networks(plan, est, var_names, cfg) -> tuple:
    """``(network, pair counts, uns entries)``: the CSR network over all cells and its counts
    (``varp``), and every ``uns[key]`` entry besides ``"params"``, for a
    :class:`~._grn_plan.GrnPlan` and its :class:`~._grn_estimators.Estimate`.
    """
    var_names = np.asarray(pd.Index(var_names).astype(str), dtype=object)
    sel, n_vars, names = plan.sel, len(var_names), plan.group_names
    opts = dict(top_k=plan.top_k, threshold=plan.threshold, min_cells=plan.min_cells)

    def sym(w: np.ndarray) -> np.ndarray:
        return (w + w.T) / 2 if plan.symmetrize else w

    def network(k):
        return _sparsify(sym(est.stats.weights(k)), est.stats.pair_counts(k), sel, n_vars, **opts)

    mat, cnt, edges = network(None)
    frames = [edges.assign(group=OVERALL)]
    group_mats = {}
    for i, g in enumerate(names):
        group_mats[g], _, e = network(i)
        frames.append(e.assign(group=g))
    uns = {"edges": _edge_table(frames, sel, var_names, names)}
    if est.attention is not None:
        uns["head_scores"] = _head_scores(est.attention, plan.n_top_genes, sel, var_names, cfg)
    if names:
        uns["groups"] = group_mats
    if plan.heads is not None:
        acc_sums, acc_counts = est.attention.result()
        sums, counts = acc_sums.sum(axis=0), acc_counts.sum(axis=0)
        slots = [(li, h) for li in plan.layers for h in plan.heads]
        uns["heads"] = {
            f"layer{li + 1}_head{h}": _sparsify(
                sym(pair_means(sums[s], counts)), counts, sel, n_vars, **opts
            )[0]
            for s, (li, h) in enumerate(slots)
        }
    if plan.labels is not None:
        ia, ib = (names.index(str(c)) for c in plan.compare)
        uns["compare"] = _compare_table(
            est.stats, est.perm_stats, ia, ib, sym, sel, var_names, plan.n_permutations, **opts
        )
    return mat, cnt, uns


def _edge_table(frames, sel, var_names, group_names) -> pd.DataFrame:
    """Every kept edge, by group (all cells first) and weight, with gene names."""
    edges = pd.concat(frames, ignore_index=True)
    edges["source"] = var_names[sel[edges["source"].to_numpy()]]
    edges["target"] = var_names[sel[edges["target"].to_numpy()]]
    edges["group"] = pd.Categorical(edges["group"], categories=[OVERALL, *group_names])
    edges = edges.sort_values(["group", "weight"], ascending=[True, False], kind="stable")
    return edges[["source", "target", "weight", "group", "n_cells"]].reset_index(drop=True)


def _head_scores(acc, n_top_genes, sel, var_names, cfg) -> dict:
    head_means = acc.head_means()  # [layers, heads, genes]
    k = min(n_top_genes, len(sel))
    order = np.argsort(-np.nan_to_num(head_means, nan=-np.inf), axis=-1, kind="stable")[..., :k]
    return {
        "genes": var_names[sel][order].astype(str),
        "scores": np.take_along_axis(head_means, order, axis=-1).astype(np.float32),
        "layers": np.arange(1, cfg.num_layers + 1),
        "heads": np.arange(cfg.num_heads),
    }
