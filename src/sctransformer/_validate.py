"""Input checks shared by the front doors: each raises before anything is written."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


def check_nonempty(adata) -> None:
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"the AnnData is empty ({adata.n_obs} cells × {adata.n_vars} genes); "
            "check the filtering steps before this one"
        )


def check_unique(names: Sequence[str], *, what: str = "gene names") -> None:
    index = pd.Index(names)
    if not index.is_unique:
        dup = index[index.duplicated()].unique()[:5].tolist()
        raise ValueError(
            f"duplicate {what}: {dup}; run adata.var_names_make_unique() (or pick a gene_key "
            "column with unique values) first"
        )


def check_key(mapping, key: str, *, where: str) -> None:
    if key not in mapping:
        known = list(mapping.keys())[:20]
        raise ValueError(f"{key!r} not found in {where}; available: {known}")


def obs_column(adata, key: str, *, fix: str, where: str = "adata.obs", of: str = ""):
    """``adata.obs[key]`` after checking that it exists and has no missing values.

    ``fix`` ends the error message (what to do); ``of`` names the object in it
    (e.g. ``" of the reference"``).
    """
    check_key(adata.obs, key, where=where)
    col = adata.obs[key]
    n_missing = int(col.isna().sum())
    if n_missing:
        raise ValueError(f"obs[{key!r}]{of} has {n_missing} missing values; {fix}")
    return col


def _data_of(x) -> np.ndarray:
    return x.data if sp.issparse(x) else np.asarray(x)


def check_values(x) -> None:
    """Finite and non-negative, else a ValueError that says what to pass instead."""
    data = _data_of(x)
    if data.size == 0:
        return
    finite = bool(np.all(np.isfinite(data)))
    raise_bad_values(finite=finite, non_negative=finite and bool(data.min() >= 0))


def raise_bad_values(*, finite: bool, non_negative: bool) -> None:
    if not finite:
        raise ValueError(
            "the expression matrix contains NaN or infinite values; fix or drop those cells "
            "(e.g. adata.X = np.nan_to_num(adata.X)) before tokenizing"
        )
    if not non_negative:
        raise ValueError(
            "the expression matrix has negative values, so it looks scaled (z-scored, e.g. by "
            "sc.pp.scale); tokenize raw counts instead (pass layer='counts' or use adata.raw)"
        )


def describe_non_counts(max_value: float) -> str:
    return "log-normalised" if max_value < 30 else "normalised or scaled"


def warn(msg: str, category=UserWarning) -> None:
    warnings.warn(msg, category, stacklevel=3)


def looks_like_ensembl(names: Sequence[str], sample: int = 200) -> bool:
    names = list(names)[:sample]
    return bool(names) and np.mean([bool(_ENSEMBL.match(str(n))) for n in names]) > 0.5


def check_gene_overlap(
    names: Sequence[str], ids: np.ndarray, vocab_genes: Sequence[str], *, min_fraction: float
) -> None:
    n_match = int((ids >= 0).sum())
    frac = n_match / max(len(ids), 1)
    if frac >= min_fraction and n_match > 0:
        return
    data_ens = looks_like_ensembl(names)
    vocab_ens = looks_like_ensembl(vocab_genes)
    if data_ens != vocab_ens:
        kinds = {True: "Ensembl IDs", False: "gene symbols"}
        cause = (
            f"the vocabulary uses {kinds[vocab_ens]} but the data's genes look like "
            f"{kinds[data_ens]}; pass gene_key= naming a var column of {kinds[vocab_ens]}"
        )
    else:
        cause = (
            "the data and the vocabulary name genes the same way, so they may come from another "
            "species or annotation; check var_names or pass gene_key="
        )
    raise ValueError(
        f"only {n_match} of {len(ids)} genes ({frac:.1%}) are in the vocabulary "
        f"(at least {min_fraction:.0%} required): {cause}. Lower min_gene_fraction= only if "
        "this is expected."
    )


def check_positive(**values: int) -> None:
    """Each named value must be a positive integer."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
