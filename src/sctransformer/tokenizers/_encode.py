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


def _expression(data, rows, totals, enc: Encoding) -> np.ndarray:
    """Per stored element, the normalised expression the method works on (float64)."""
    x = data.astype(np.float64)
    if not enc.normalize:
        return x
    x /= totals[rows]
    x *= enc.target_sum
    return x if enc.method == "rank" else np.log1p(x, out=x)


def _compact(kept: np.ndarray, indptr: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """Positions of each row's kept elements in var order, -1 padded to ``width`` (no sort)."""
    n = len(indptr) - 1
    idx = np.flatnonzero(kept)
    r = rows[idx]
    counts = np.bincount(r, minlength=n)
    starts = np.cumsum(counts) - counts
    out = np.full((n, width), -1, dtype=np.int64)
    out[r, np.arange(len(idx)) - starts[r]] = idx - indptr[r]
    return out


def _var_order(pos: np.ndarray, indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The positions ``pos`` (any order, -1 padded) of each row re-emitted in var order."""
    valid = pos >= 0
    kept = np.zeros(len(rows), dtype=bool)
    kept[(indptr[:-1, None] + np.maximum(pos, 0))[valid]] = True
    return _compact(kept, indptr, rows, pos.shape[1])


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
        totals = _sorting.row_totals(csr)
    usable_gene = gene_ids >= 0
    if enc.method == "rank":
        if medians is None:
            raise ValueError("rank encoding needs gene medians")
        usable_gene &= np.isfinite(medians) & (medians > 0)
    if enc.include_zeros:
        # every usable gene becomes a stored element, zeros included
        cols = np.flatnonzero(usable_gene)
        data = csr[:, cols].toarray().ravel()
        indices = np.tile(cols, n)
        indptr = np.arange(n + 1, dtype=np.int64) * len(cols)
        usable = None
    else:
        data, indices = csr.data, csr.indices
        indptr = csr.indptr.astype(np.int64)
        usable = usable_gene[indices] & (data != 0)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    value = _expression(data, rows, totals, enc)
    if enc.method == "rank":
        with np.errstate(divide="ignore", invalid="ignore"):  # unusable genes: NaN medians
            value /= medians[indices]
        value[~usable] = 0.0
    tok_of_elem = gene_ids[indices]
    k = enc.gene_slots
    u = None
    if enc.method == "adaptive_bin" or enc.select == "random":
        u = _sorting.uniform_hash(enc.seed, rows + row_start, tok_of_elem)

    # bins need every nonzero gene of the cell in order, before any truncation
    full = enc.method == "adaptive_bin"
    counts = np.diff(indptr)
    n_usable = counts if usable is None else np.bincount(rows[usable], minlength=n)
    if enc.method in ("bin", "value") and (k is None or int(n_usable.max(initial=0)) <= k):
        # nothing to drop: every usable gene in var order, no sorting needed
        order = None
        everything = np.ones(len(rows), dtype=bool) if usable is None else usable
        keep = _compact(everything, indptr, rows, int(n_usable.max(initial=0)))
    elif enc.method in ("rank", "sentence"):
        rank = enc.method == "rank"
        order = _sorting.descending_order(
            indptr,
            value if rank else data,
            usable,
            k,
            exact32=not rank and _sorting.float32_exact(data),
        )
        keep = order.pos
    else:
        # within a cell the value encodings are increasing functions of the stored value, so
        # ordering by it is the same and, for counts, exact in float32 (no rounding check)
        order = _sorting.descending_order(
            indptr, data, usable, None if full else k, exact32=_sorting.float32_exact(data)
        )
        if enc.select == "random" and k is not None:
            pos = _sorting.hashed_order(indptr, u, usable, k)
        else:
            pos = order.pos if k is None else order.pos[:, :k]
        keep = _var_order(pos, indptr, rows)

    if enc.method == "adaptive_bin":
        elem_value = _adaptive_bins(order, indptr, value, u, enc)
    elif enc.method == "bin":
        elem_value = _binning.equal_width_bins(value, n_bins=enc.n_bins, bin_width=enc.bin_width)
    else:
        elem_value = value

    valid = keep >= 0
    elem = np.where(valid, indptr[:-1, None] + keep, 0)
    n_genes = valid.sum(axis=1)
    if enc.method == "sentence":
        tokens = np.where(valid, indices[elem] if len(indices) else 0, -1).astype(np.int64)
        return Encoded(tokens, np.zeros(tokens.shape, np.float32), n_genes.astype(np.int64))

    n_pre = int(enc.add_cls) + (0 if prefix is None else prefix.shape[1])
    n_tok = n_pre + n_genes + int(enc.add_eos)
    width = int(n_tok.max()) if n else 0
    tokens = np.full((n, width), -1, dtype=np.int64)
    values = np.full((n, width), enc.pad_value, dtype=np.float32)
    col = 0
    if enc.add_cls:
        tokens[:, 0] = cls_id
        col = 1
    if prefix is not None and prefix.shape[1]:
        tokens[:, col : col + prefix.shape[1]] = prefix
        col += prefix.shape[1]
    m = min(keep.shape[1], width - col)
    if m > 0 and len(tok_of_elem):
        v = valid[:, :m]
        tokens[:, col : col + m] = np.where(v, tok_of_elem[elem[:, :m]], -1)
        values[:, col : col + m] = np.where(v, elem_value[elem[:, :m]], enc.pad_value)
    if enc.add_eos:
        tokens[np.arange(n), n_tok - 1] = eos_id
    return Encoded(tokens, values, n_tok.astype(np.int64))


def _adaptive_bins(order, indptr, value, u, enc: Encoding) -> np.ndarray:
    """scGPT bins of every element (0 for zeros), from each row's ascending nonzero values."""
    n, w = order.pos.shape
    out = np.zeros(len(value))
    if n == 0 or w == 0:
        return out
    valid = order.pos >= 0
    elem_desc = np.where(valid, indptr[:-1, None] + order.pos, 0)
    desc = np.where(valid, value[elem_desc], 0.0)
    n_nonzero = (desc > 0).sum(axis=1)  # zeros (include_zeros) sort after every nonzero
    src = n_nonzero[:, None] - 1 - np.arange(w)[None, :]
    inside = src >= 0
    src = np.maximum(src, 0)
    elem_asc = np.take_along_axis(elem_desc, src, axis=1)
    asc = np.where(inside, np.take_along_axis(desc, src, axis=1), np.inf)
    u_asc = np.where(inside, u[elem_asc], 0.0)
    digits = _binning.quantile_bins(asc, n_nonzero, n_bins=enc.n_bins, u=u_asc)
    out[elem_asc[inside]] = digits[inside]
    return out


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
