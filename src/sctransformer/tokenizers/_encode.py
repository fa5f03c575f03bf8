"""Turn a CSR chunk of expression into padded token ids and values (no AnnData here)."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from ._arrays import TokenArrays

METHODS = ("rank", "bin", "adaptive_bin", "value", "sentence")
# Per-method defaults: Geneformer V1 context, scBERT's 6 bins of width 1 in log1p space,
# scGPT's 51 bins and 1,200 genes, every expressed gene for Cell2Sentence (it crops at prompt
# time).
DEFAULT_MAX_LENGTH = {
    "rank": 2048,
    "bin": None,
    "adaptive_bin": 1200,
    "value": 1200,
    "sentence": None,
}
DEFAULT_N_BINS = {"bin": 6, "adaptive_bin": 51}


@dataclass(frozen=True)
class Encoding:
    """Every parameter of one encoding; recorded verbatim in ``uns``.

    ``max_length`` counts special and condition tokens; ``None`` keeps every gene.
    """

    method: str
    max_length: int | None = None
    target_sum: float = 1e4
    normalize: bool = True
    n_bins: int = 51
    bin_width: float = 1.0
    select: str = "top"
    include_zeros: bool = False
    add_cls: bool = True
    add_eos: bool = False
    pad_value: float = -2.0
    seed: int = 0
    conditions: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {list(METHODS)}")
        if self.select not in ("top", "random"):
            raise ValueError(f"select={self.select!r}; use 'top' or 'random'")
        if self.select == "random" and self.method in ("rank", "sentence"):
            raise ValueError(
                f"select='random' is not available for method={self.method!r}, which keeps the "
                "most expressed genes by definition; use select='top'"
            )
        if self.include_zeros and self.method in ("rank", "sentence"):
            raise ValueError(
                f"include_zeros=True is meaningless for method={self.method!r} (unexpressed genes "
                "have no rank); use it with 'bin', 'adaptive_bin' or 'value'"
            )
        if self.method in DEFAULT_N_BINS and self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {self.n_bins}")
        if self.target_sum <= 0 or self.bin_width <= 0:
            raise ValueError("target_sum and bin_width must be positive")
        if self.max_length is not None and self.max_length - self.n_special < 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for genes after "
                f"{self.n_special} special/condition token(s); use max_length >= {self.n_special + 1}"
            )

    @property
    def n_special(self) -> int:
        if self.method == "sentence":
            return 0
        return int(self.add_cls) + int(self.add_eos) + len(self.conditions)

    @property
    def gene_slots(self) -> int | None:
        return None if self.max_length is None else self.max_length - self.n_special

    def to_dict(self) -> dict:
        d = asdict(self)
        d["conditions"] = list(self.conditions)
        d["max_length"] = -1 if self.max_length is None else self.max_length  # uns holds no None
        return d


# Stored elements per block of rows: blocks are the unit of work of the threads and bound the
# scratch memory of the value pass.
BLOCK_ELEMENTS = 1 << 18


def _blocks(indptr: np.ndarray, per_row: int | None) -> list[tuple[int, int]]:
    """Row ranges holding about BLOCK_ELEMENTS elements each (``per_row``: a fixed row cost)."""
    n = len(indptr) - 1
    if per_row is not None:
        step = max(1, BLOCK_ELEMENTS // max(per_row, 1))
        bounds = [*range(0, n, step), n]
    else:
        marks = np.arange(BLOCK_ELEMENTS, int(indptr[-1]), BLOCK_ELEMENTS)
        cuts = np.searchsorted(indptr, marks, side="right")
        bounds = sorted({0, n, *cuts.tolist()})
    return ranges(bounds)


def ranges(bounds) -> list[tuple[int, int]]:
    """Consecutive non-empty ``(start, stop)`` pairs of increasing bounds."""
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _map(fn, items, n_jobs: int) -> list:
    if n_jobs <= 1 or len(items) <= 1:
        return [fn(it) for it in items]
    with ThreadPoolExecutor(min(n_jobs, len(items))) as pool:
        return list(pool.map(fn, items))


@dataclass
class RowScan:
    """One pass over a CSR chunk's stored values: each cell's total (the caller's where given,
    else the float64 sum of its stored values) and number of usable genes, the value checks,
    and which columns hold a usable nonzero value (when counted).
    """

    totals: np.ndarray
    n_usable: np.ndarray
    col_ok: np.ndarray
    expressed: np.ndarray | None
    all_integer: bool
    max_value: float

    def fits(self, col_ok: np.ndarray) -> bool:
        """Whether ``n_usable`` also holds for these usable columns: the scanned ones less
        columns without a nonzero value (genes the data's medians leave out).
        """
        if self.expressed is None:
            return bool(np.array_equal(col_ok, self.col_ok))
        added, left_out = col_ok & ~self.col_ok, self.col_ok & ~col_ok
        return not added.any() and not self.expressed[left_out].any()


def scan_chunk(
    csr: sp.csr_matrix,
    col_ok: np.ndarray,
    totals: np.ndarray | None,
    blocks: list[tuple[int, int]],
    n_jobs: int,
    *,
    include_zeros: bool = False,
    block_counts: np.ndarray | None = None,
) -> RowScan:
    """Scan ``csr`` over row ``blocks`` on ``n_jobs`` threads; raises on NaN, infinite or
    negative values. ``block_counts`` (blocks × columns, zeros) receives each block's per
    column counts, which the medians' scatter uses as write offsets.
    """
    from .._validate import raise_bad_values
    from . import _kernels

    n = csr.shape[0]
    indptr = csr.indptr.astype(np.int64, copy=False)
    tot = np.full(n, np.nan) if totals is None else np.asarray(totals, np.float64).copy()
    n_usable = np.zeros(n, dtype=np.int64)
    counted = block_counts is not None
    if not counted:  # empty rows: the kernel counts nothing
        block_counts = np.zeros((len(blocks), 0), dtype=np.int64)
    n_ok = int(np.count_nonzero(col_ok))

    def one(b):
        r0, r1 = blocks[b]
        return _kernels.scan_rows(
            indptr, csr.indices, csr.data, col_ok, n_ok, include_zeros, r0, r1, tot, n_usable,
            block_counts[b],
        )  # fmt: skip

    stats = _map(one, range(len(blocks)), n_jobs)
    finite = all(s[0] for s in stats)
    raise_bad_values(finite=finite, non_negative=finite and all(s[1] for s in stats))
    return RowScan(
        tot,
        n_usable,
        np.asarray(col_ok, dtype=bool),
        block_counts.any(axis=0) if counted else None,
        all_integer=all(s[2] for s in stats),
        max_value=max((s[3] for s in stats), default=0.0),
    )


def encode_chunk(
    csr: sp.csr_matrix,
    enc: Encoding,
    *,
    gene_ids: np.ndarray,
    medians: np.ndarray | None = None,
    totals: np.ndarray | None = None,
    prefix: np.ndarray | None = None,
    cls_id: int = -1,
    eos_id: int = -1,
    row_start: int = 0,
    pad_id: int = -1,
    dtype=np.int64,
    n_jobs: int = 1,
    scan: RowScan | None = None,
) -> TokenArrays:
    """Encode one chunk of cells.

    Parameters
    ----------
    csr
        Cells × var, sorted indices; values are checked (finite, non-negative) here.
    gene_ids
        Vocabulary id of each var column, -1 for genes the vocabulary lacks (ignored).
    medians
        For ``rank``: per-column normalisation factor; columns with NaN/0 are ignored.
    totals
        Per-cell totals over all columns (normalisation denominators); computed when ``None``.
    prefix
        (n, c) condition-token ids placed after ``<cls>``.
    cls_id, eos_id
        Ids written first and last (-1: none); ignored by ``sentence``.
    row_start
        Global index of the chunk's first cell (seeds the per-cell hash).
    pad_id, dtype
        Token padding and the tokens' dtype.
    n_jobs
        Threads over row blocks; results do not depend on it.
    scan
        This chunk's :func:`scan_chunk` with the same ``totals``, when a pass before (the
        data's gene medians) made it; scanned here when ``None`` or made for other columns.
    """
    from . import _kernels  # numba loads on first use, not on package import

    n = csr.shape[0]
    mode = _kernels.MODES[enc.method]
    indptr = csr.indptr.astype(np.int64, copy=False)
    indices, data = csr.indices, csr.data
    gene_ids = np.asarray(gene_ids, dtype=np.int64)
    col_ok = gene_ids >= 0
    if mode == _kernels.RANK:
        if medians is None:
            raise ValueError("rank encoding needs gene medians")
        col_ok &= np.isfinite(medians) & (medians > 0)
        medians = np.asarray(medians, dtype=np.float64)
    else:
        medians = np.ones(len(gene_ids))
    ok_cols = np.flatnonzero(col_ok).astype(np.int64)
    blocks = _blocks(indptr, len(ok_cols) if enc.include_zeros else None)
    if scan is None or enc.include_zeros or not scan.fits(col_ok):
        scan = scan_chunk(csr, col_ok, totals, blocks, n_jobs, include_zeros=enc.include_zeros)
    tot, n_usable = scan.totals, scan.n_usable

    k = -1 if enc.gene_slots is None else enc.gene_slots
    kept = n_usable if k < 0 else np.minimum(n_usable, k)
    specials = enc.method != "sentence"
    n_pre = (int(enc.add_cls) + (0 if prefix is None else prefix.shape[1])) if specials else 0
    width = n_pre + int(kept.max(initial=0)) + int(enc.add_eos and specials)
    tokens = np.empty((n, width), dtype=dtype)
    values = np.empty((n, width), dtype=np.float32)
    n_tokens = np.zeros(n, dtype=np.int64)
    pre = np.zeros((n, 0), np.int64) if prefix is None or not specials else prefix
    pre = np.ascontiguousarray(pre, dtype=np.int64)
    seed_mix = _kernels.seed_word(enc.seed)
    qs = np.linspace(0, 1, enc.n_bins - 1) if mode == _kernels.ADAPTIVE else np.zeros(0)

    def write(block):
        a, b = block
        # the log-space methods take numpy's log1p of the block's values (outside the kernel,
        # so they equal numpy's to the bit); rank computes its scores inside the kernel
        x = np.empty(0 if mode == _kernels.RANK else indptr[b] - indptr[a])
        if len(x):
            _kernels.normalised(indptr, data, tot, a, b, enc.normalize, float(enc.target_sum), x)
            if enc.normalize:
                np.log1p(x, out=x)
        _kernels.encode_rows(
            a, b, indptr, indices, data, x, indptr[a], tot, gene_ids, col_ok, ok_cols, medians,
            mode, enc.normalize, float(enc.target_sum), k, enc.select == "random",
            enc.include_zeros, enc.n_bins, float(enc.bin_width), qs, seed_mix, row_start,
            pre, cls_id if enc.add_cls else -1, eos_id if enc.add_eos else -1, pad_id,
            float(enc.pad_value), tokens, values, n_tokens,
        )  # fmt: skip

    _map(write, blocks, n_jobs)
    return TokenArrays(
        tokens,
        values,
        n_tokens,
        pad_id=pad_id,
        pad_value=float(enc.pad_value),
        all_integer=scan.all_integer,
        max_value=scan.max_value,
    )


class Stacker:
    """Chunks of token arrays written in order into arrays of the final size, ``n`` cells,
    as wide as the widest chunk so far: the peak is the result plus one chunk (a list of
    chunks joined at the end held both, and the allocator kept the freed chunks' pages).
    """

    def __init__(self, n: int, *, pad_value: float, pad_id: int = -1):
        self.n, self.pad_value, self.pad_id = n, pad_value, pad_id
        self.rows = 0
        self.tokens = self.values = None
        self.lengths: list[np.ndarray] = []
        self.all_integer, self.max_value = True, 0.0
        self.whole: TokenArrays | None = None

    def add(self, part: TokenArrays) -> None:
        m, w = part.tokens.shape
        if self.rows == 0 and m == self.n:  # one chunk holds every cell: kept, not copied
            self.whole, self.rows = part, m
            return
        if self.tokens is None or w > self.tokens.shape[1]:
            self._widen(w, part.tokens.dtype)
        r, width = self.rows, self.tokens.shape[1]
        self.tokens[r : r + m, :w] = part.tokens
        self.tokens[r : r + m, w:width] = self.pad_id
        self.values[r : r + m, :w] = part.values
        self.values[r : r + m, w:width] = self.pad_value
        self.rows += m
        self.lengths.append(part.lengths)
        self.all_integer &= part.all_integer
        self.max_value = max(self.max_value, part.max_value)

    def _widen(self, width: int, dtype) -> None:
        tokens = np.empty((self.n, width), dtype=dtype)
        values = np.empty((self.n, width), dtype=np.float32)
        if self.tokens is not None:  # rare: a later chunk holds a longer cell
            r, w = self.rows, self.tokens.shape[1]
            tokens[:r, :w], tokens[:r, w:] = self.tokens[:r], self.pad_id
            values[:r, :w], values[:r, w:] = self.values[:r], self.pad_value
        self.tokens, self.values = tokens, values

    def result(self) -> TokenArrays:
        if self.whole is not None:
            return self.whole
        if self.tokens is None:
            self._widen(0, np.int64)
        n = self.rows
        return TokenArrays(
            self.tokens[:n] if n < self.n else self.tokens,
            self.values[:n] if n < self.n else self.values,
            np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64),
            pad_id=self.pad_id,
            pad_value=self.pad_value,
            all_integer=self.all_integer,
            max_value=self.max_value,
        )


def concat(parts: list[TokenArrays], *, pad_value: float, pad_id: int = -1) -> TokenArrays:
    """Stack chunks (already in their final dtype and padding) to the widest one."""
    stack = Stacker(sum(len(p) for p in parts), pad_value=pad_value, pad_id=pad_id)
    for p in parts:
        stack.add(p)
    return stack.result()
