"""Turn a CSR chunk of expression into padded token ids and values (no AnnData here)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from . import _binning, _sorting

METHODS = ("rank", "bin", "adaptive_bin", "value", "sentence")
# Per-method defaults: Geneformer V1 context, scBERT's 6 bins of width 1 in log1p space,
# scGPT's 51 bins and 1,200 genes, Cell2Sentence's first 100 genes.
DEFAULT_MAX_LENGTH = {
    "rank": 2048,
    "bin": None,
    "adaptive_bin": 1200,
    "value": 1200,
    "sentence": 100,
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


@dataclass
class Encoded:
    """Padded result for a chunk: ids (-1 padded before the pad id is applied) and values."""

    tokens: np.ndarray  # (n, W) int64 vocab ids, or var columns for 'sentence'
    values: np.ndarray  # (n, W) float32
    n_tokens: np.ndarray  # (n,) int64


def _selected(csr: sp.csr_matrix, score: np.ndarray, enc: Encoding, u: np.ndarray | None):
    """Per row, positions of the kept elements in output order, and the full descending order.

    rank and sentence keep the top genes in descending order; the value encodings keep the top
    (or a seeded random sample of) genes and emit them in var order, as scBERT and scGPT do.
    """
    order = _sorting.descending_order(csr.indptr, score)
    k = enc.gene_slots
    if enc.select == "random" and k is not None:
        pos = _sorting.hashed_order(csr.indptr, u)[:, :k]
    else:
        pos = order.pos if k is None else order.pos[:, :k]
    if enc.method in ("rank", "sentence"):
        return pos, order
    big = np.iinfo(np.int64).max
    out = np.where(pos >= 0, pos, big)
    out.sort(axis=1)
    out[out == big] = -1
    return out, order


def _expression(csr: sp.csr_matrix, totals: np.ndarray, enc: Encoding) -> np.ndarray:
    """Per stored element, the normalised expression the method works on (float64)."""
    x = csr.data.astype(np.float64)
    if not enc.normalize:
        return x
    rows = _sorting.row_ids(csr.indptr)
    x = x / totals[rows] * enc.target_sum
    return x if enc.method == "rank" else np.log1p(x)


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
) -> Encoded:
    """Encode one chunk of cells.

    Parameters
    ----------
    csr
        Cells × var, sorted indices, non-negative finite values.
    gene_ids
        Vocabulary id of each var column, -1 for genes the vocabulary lacks (ignored).
    medians
        For ``rank``: per-column normalisation factor; columns with NaN/0 are ignored.
    totals
        Per-cell totals over all columns (normalisation denominators); computed when ``None``.
    prefix
        (n, c) condition-token ids placed after ``<cls>``.
    row_start
        Global index of the chunk's first cell (seeds the per-cell hash).
    """
    n = csr.shape[0]
    if totals is None:
        totals = np.asarray(csr.sum(axis=1), dtype=np.float64).ravel()
    usable = gene_ids >= 0
    if enc.method == "rank":
        if medians is None:
            raise ValueError("rank encoding needs gene medians")
        usable &= np.isfinite(medians) & (medians > 0)
    if enc.include_zeros:
        # every usable gene becomes a stored element, zeros included
        cols = np.flatnonzero(usable)
        dense = csr[:, cols].toarray()
        nz = dense != 0
        indptr = np.arange(0, n * len(cols) + 1, max(len(cols), 1))[: n + 1]
        work = sp.csr_matrix((dense.ravel(), np.tile(cols, n), indptr), shape=csr.shape)
    else:
        work = _sorting.keep_elements(csr, usable[csr.indices] & (csr.data != 0))
        nz = None
    value = _expression(work, totals, enc)
    if enc.method == "rank":
        value = value / medians[work.indices]
    rows = _sorting.row_ids(work.indptr)
    tok_of_elem = gene_ids[work.indices]
    needs_u = enc.method == "adaptive_bin" or enc.select == "random"
    u = _sorting.uniform_hash(enc.seed, rows + row_start, tok_of_elem) if needs_u else None
    keep, order = _selected(work, value, enc, u)

    if enc.method == "adaptive_bin":
        # bins are computed over every nonzero gene of the cell, before any truncation
        n_nonzero = order.lengths if nz is None else nz.sum(axis=1)
        asc = _ascending_nonzero(order, n_nonzero)
        u_asc = np.zeros_like(asc)
        pos_asc = _ascending_positions(order, n_nonzero)
        valid = pos_asc >= 0
        u_asc[valid] = u[(work.indptr[:-1, None] + pos_asc)[valid]]
        digits_asc = _binning.quantile_bins(asc, n_nonzero, n_bins=enc.n_bins, u=u_asc)
        elem_value = np.zeros(len(value))
        elem_value[(work.indptr[:-1, None] + pos_asc)[valid]] = digits_asc[valid]
    elif enc.method == "bin":
        elem_value = _binning.equal_width_bins(value, n_bins=enc.n_bins, bin_width=enc.bin_width)
    else:
        elem_value = value

    valid = keep >= 0
    flat = (work.indptr[:-1, None] + np.maximum(keep, 0))[valid]
    n_genes = valid.sum(axis=1)
    if enc.method == "sentence":
        tokens = np.full(keep.shape, -1, dtype=np.int64)
        tokens[valid] = work.indices[flat]
        return Encoded(tokens, np.zeros(tokens.shape, np.float32), n_genes.astype(np.int64))

    n_pre = int(enc.add_cls) + (0 if prefix is None else prefix.shape[1])
    width = n_pre + (keep.shape[1] if keep.size else 0) + int(enc.add_eos)
    tokens = np.full((n, width), -1, dtype=np.int64)
    values = np.full((n, width), enc.pad_value, dtype=np.float32)
    col = 0
    if enc.add_cls:
        tokens[:, 0] = cls_id
        col = 1
    if prefix is not None and prefix.shape[1]:
        tokens[:, col : col + prefix.shape[1]] = prefix
        col += prefix.shape[1]
    body_t = np.full(keep.shape, -1, dtype=np.int64)
    body_v = np.full(keep.shape, enc.pad_value, dtype=np.float32)
    body_t[valid] = tok_of_elem[flat]
    body_v[valid] = elem_value[flat]
    tokens[:, col : col + keep.shape[1]] = body_t
    values[:, col : col + keep.shape[1]] = body_v
    n_tok = n_pre + n_genes
    if enc.add_eos:
        tokens[np.arange(n), n_tok] = eos_id
        n_tok = n_tok + 1
    width = int(n_tok.max()) if n else 0
    return Encoded(tokens[:, :width], values[:, :width], n_tok.astype(np.int64))


def _ascending_positions(order: _sorting.PaddedRows, n_nonzero: np.ndarray) -> np.ndarray:
    """Positions of the nonzero elements of each row in ascending order (-1 padded)."""
    n, w = order.pos.shape
    j = np.arange(w)[None, :]
    src = n_nonzero[:, None] - 1 - j
    ok = src >= 0
    out = np.full((n, w), -1, dtype=np.int64)
    out[ok] = np.take_along_axis(order.pos, np.maximum(src, 0), axis=1)[ok]
    return out


def _ascending_nonzero(order: _sorting.PaddedRows, n_nonzero: np.ndarray) -> np.ndarray:
    w = order.score.shape[1]
    j = np.arange(w)[None, :]
    src = n_nonzero[:, None] - 1 - j
    asc = np.take_along_axis(order.score, np.maximum(src, 0), axis=1)
    asc[src < 0] = np.inf
    return asc


# Elements per block of rows: the padded (rows × longest row) work arrays of a block stay a few
# MiB, so they are reused from the heap (and cache) instead of being mapped afresh per call,
# which costs more than the arithmetic on them.
BLOCK_ELEMENTS = 1 << 18


def encode_parallel(csr: sp.csr_matrix, enc: Encoding, *, n_jobs: int, **kw) -> Encoded:
    """``encode_chunk`` over small row blocks, in threads (numpy releases the GIL in the heavy
    parts). Results do not depend on the blocking: every step is per row."""
    return concat(encode_blocks(csr, enc, n_jobs=n_jobs, **kw), pad_value=enc.pad_value)


def encode_blocks(csr: sp.csr_matrix, enc: Encoding, *, n_jobs: int, **kw) -> list[Encoded]:
    """Like :func:`encode_parallel`, but the blocks' results unjoined (in row order)."""
    n = csr.shape[0]
    width = csr.shape[1] if enc.include_zeros else int(np.diff(csr.indptr).max(initial=0))
    step = max(1, BLOCK_ELEMENTS // max(width, 1))
    bounds = [*range(0, n, step), n]
    if len(bounds) <= 2:
        return [encode_chunk(csr, enc, **kw)]
    prefix = kw.pop("prefix", None)
    totals = kw.pop("totals", None)
    row_start = kw.pop("row_start", 0)

    def one(i: int) -> Encoded:
        a, b = bounds[i], bounds[i + 1]
        return encode_chunk(
            csr[a:b],
            enc,
            prefix=None if prefix is None else prefix[a:b],
            totals=None if totals is None else totals[a:b],
            row_start=row_start + a,
            **kw,
        )

    if n_jobs <= 1:
        parts = [one(i) for i in range(len(bounds) - 1)]
    else:
        with ThreadPoolExecutor(n_jobs) as pool:
            parts = list(pool.map(one, range(len(bounds) - 1)))
    return parts


def concat(parts: list[Encoded], *, pad_value: float, pad_id: int = -1, dtype=np.int64) -> Encoded:
    """Stack padded results; token padding (-1 in ``parts``) becomes ``pad_id``."""
    width = max((p.tokens.shape[1] for p in parts), default=0)
    n = sum(len(p.n_tokens) for p in parts)
    tokens = np.full((n, width), pad_id, dtype=dtype)
    values = np.full((n, width), pad_value, dtype=np.float32)
    r = 0
    for p in parts:
        m, w = p.tokens.shape
        block = p.tokens if pad_id == -1 else np.where(p.tokens >= 0, p.tokens, pad_id)
        tokens[r : r + m, :w] = block
        values[r : r + m, :w] = p.values
        r += m
    return Encoded(tokens, values, np.concatenate([p.n_tokens for p in parts]))
