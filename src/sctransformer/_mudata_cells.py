"""A MuData's modalities and cells, checked and aligned before anything is tokenized: which
modalities (in the model's order), the cells every one of them has, each modality's feature
names as a vocabulary knows them, and per-modality options.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _validate
from .tokenizers import GeneVocab


def choose_modalities(mdata, modalities, known: list[str] | None) -> list[str]:
    have = list(mdata.mod)
    if modalities is None:
        chosen = have
    else:
        chosen = [str(m) for m in ([modalities] if isinstance(modalities, str) else modalities)]
        missing = [m for m in chosen if m not in have]
        if missing:
            raise ValueError(
                f"modalities {missing} are not in the MuData (it has {have}); pass "
                f"modalities= naming some of {have}"
            )
    if known is not None:
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise ValueError(
                f"the model was trained on modalities {known}; the MuData's {unknown} are not "
                f"among them: embed a MuData of the modalities it knows, e.g. "
                f"md.MuData({{m: mdata[m] for m in {[m for m in chosen if m in known]}}})"
            )
        chosen = [m for m in known if m in chosen]  # the model's order
    if not chosen:
        raise ValueError(
            f"no modality to tokenize: the MuData has {have}"
            + (f", the model knows {known}" if known is not None else "")
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"modalities {chosen} name a modality twice")
    return chosen


def shared_cells(mdata, mods: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Positions (in ``mdata.obs``) of the cells every modality has, and each modality's row
    of those cells. Raises when no cell is shared.
    """
    names = pd.Index(mdata.obs_names)
    if not names.is_unique:
        raise ValueError(
            "the MuData's obs_names are not unique; run mdata.obs_names_make_unique() first"
        )
    present = np.ones(len(names), dtype=bool)
    where: dict[str, np.ndarray] = {}
    for m in mods:
        pos = names.get_indexer(pd.Index(mdata.mod[m].obs_names))
        if (pos < 0).any() or not pd.Index(mdata.mod[m].obs_names).is_unique:
            raise ValueError(
                f"mdata[{m!r}].obs_names are not all unique cells of the MuData; run "
                "mdata.update() after editing a modality"
            )
        row = np.full(len(names), -1, dtype=np.int64)
        row[pos] = np.arange(len(pos))
        where[m] = row
        present &= row >= 0
    cells = np.flatnonzero(present)
    if len(cells) == 0:
        sizes = ", ".join(f"{m}: {mdata.mod[m].n_obs} cells" for m in mods)
        raise ValueError(
            f"no cell is in every modality ({sizes}; 0 shared): a cell's sequence joins its "
            "modalities, so their obs_names must name the same cells. Check the barcodes "
            "(e.g. a suffix added to one modality), or pass modalities= with fewer modalities"
        )
    return cells, {m: where[m][cells] for m in mods}


def per_modality(value, mod: str, mods):
    """``value[mod]`` when ``value`` maps modality names to values, else ``value`` itself
    (a gene → median mapping is not keyed by modalities).
    """
    if isinstance(value, Mapping) and value and set(map(str, value)) <= set(mods):
        return value.get(mod)
    return value


def feature_names(adata: AnnData, gene_key: str | None) -> list[str]:
    if gene_key is None:
        return [str(g) for g in adata.var_names]
    _validate.check_key(adata.var, gene_key, where="adata.var")
    return [str(g) for g in adata.var[gene_key]]


def fresh_vocab(names: dict[str, list[str]], mods: list[str]):
    """A vocabulary over every modality's features; colliding names prefixed ``"mod:"``."""
    seen: set[str] = set()
    mapped: dict[str, list[str]] = {}
    for m in mods:
        out = []
        for g in names[m]:
            out.append(f"{m}:{g}" if g in seen else g)
        seen.update(names[m])
        mapped[m] = out
    everything = [g for m in mods for g in mapped[m]]
    vocab = GeneVocab.from_genes(everything, conditions={"mod": mods})
    ranges = {}
    for m in mods:
        ids = vocab.encode_genes(mapped[m])
        ranges[m] = [int(ids.min()), int(ids.max()) + 1]
    return vocab, mapped, ranges


def model_names(vocab: GeneVocab, names: list[str], mod: str, rng) -> list[str]:
    """Names as the model's vocabulary knows them, restricted to the modality's range."""
    lo, hi = rng
    out = []
    for g in names:
        pick = None
        for cand in (f"{mod}:{g}", g):
            if cand in vocab:
                i = vocab[cand]
                if lo <= i < hi:
                    pick = cand
                    break
        out.append(pick if pick is not None else f"\x00{mod}:{g}")  # in no vocabulary
    return out


def modality_rows(adata: AnnData, layer: str | None, rows: np.ndarray):
    from ._data import expression_matrix

    x = expression_matrix(adata, layer)
    if adata.isbacked or np.array_equal(rows, np.arange(adata.n_obs)):
        return x if not adata.isbacked else x[np.sort(rows)][np.argsort(np.argsort(rows))]
    return x[rows]
