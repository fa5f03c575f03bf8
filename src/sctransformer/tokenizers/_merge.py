"""Columns that become one token: sum their counts before any encoding.

Two ``var`` genes can map to one vocabulary entry (two symbols of one Ensembl ID, retired
Ensembl IDs that a vocabulary collapses into a current one) and, for ``sentence``, two names
can become one word once upper-cased. Geneformer's tokenizer sums the counts of such genes
into one column before it normalises; so does this package, for every method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Merge:
    """How ``n_in`` var columns map onto ``n_out`` merged columns.

    ``column[j]`` is the merged column of var column ``j``; ``first[c]`` is the first var
    column of merged column ``c`` (merged columns keep the order of their first var column).
    """

    column: np.ndarray
    first: np.ndarray

    @property
    def n_in(self) -> int:
        return len(self.column)

    @property
    def n_out(self) -> int:
        return len(self.first)

    @property
    def n_merged(self) -> int:
        """Var columns folded into an earlier one."""
        return self.n_in - self.n_out

    def apply(self, csr: sp.csr_matrix) -> sp.csr_matrix:
        """A new CSR chunk with the columns of each group summed (sorted, no duplicates)."""
        out = sp.csr_matrix(
            (csr.data.copy(), self.column[csr.indices], csr.indptr.copy()),
            shape=(csr.shape[0], self.n_out),
        )
        out.sum_duplicates()  # sums within groups and sorts the indices
        return out


def plan(keys) -> Merge | None:
    """The merge of columns sharing a key (``None`` keys, or negative ones of an integer
    array, stay alone); ``None`` when no two columns share one, found without a Python loop
    over the columns (the common case).
    """
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":  # ids, negative: alone
        shared = keys[keys >= 0]
        if np.unique(shared).size == shared.size:
            return None
        keys = [int(k) if k >= 0 else None for k in keys]
    else:
        keys = list(keys)
        named = [k for k in keys if k is not None]
        if len(set(named)) == len(named):
            return None
    seen: dict = {}
    column = np.empty(len(keys), dtype=np.int64)
    first: list[int] = []
    for j, k in enumerate(keys):
        if k is None:
            column[j] = len(first)
            first.append(j)
            continue
        c = seen.get(k)
        if c is None:
            c = seen[k] = len(first)
            first.append(j)
        column[j] = c
    if len(first) == len(keys):
        return None
    return Merge(column=column, first=np.asarray(first, dtype=np.int64))


def groups(merge: Merge, names) -> list[list[str]]:
    """The names of each group of more than one column (for messages)."""
    names = np.asarray(names, dtype=object)
    counts = np.bincount(merge.column, minlength=merge.n_out)
    return [list(names[merge.column == c]) for c in np.flatnonzero(counts > 1)]
