"""``sct.pp.tokenize``: AnnData expression → transformer inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._data import iter_chunks
from .._settings import settings
from .._version import __version__
from ..tokenizers import GeneVocab
from ..tokenizers._encode import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_N_BINS,
    METHODS,
    Encoded,
    Encoding,
    concat,
    encode_chunk,
)
from ..tokenizers._medians import gene_medians

_OPTIONAL = (
    "max_length",
    "target_sum",
    "normalize",
    "n_bins",
    "bin_width",
    "select",
    "include_zeros",
    "add_cls",
    "add_eos",
    "pad_value",
)


def tokenize(
    adata: AnnData,
    *,
    method: Literal["rank", "bin", "adaptive_bin", "value", "sentence"] | None = None,
    vocab=None,
    layer: str | None = None,
    gene_key: str | None = None,
    max_length: int | None = None,
    target_sum: float | None = None,
    normalize: bool | None = None,
    n_bins: int | None = None,
    bin_width: float | None = None,
    select: Literal["top", "random"] | None = None,
    include_zeros: bool | None = None,
    add_cls: bool | None = None,
    add_eos: bool | None = None,
    pad_value: float | None = None,
    gene_medians: Mapping[str, float] | pd.Series | Literal["vocab", "data", "none"] | None = None,
    batch_key: str | None = None,
    seed: int = 0,
    min_gene_fraction: float = 0.2,
    chunk_size: int = 4096,
    key_added: str = "sct",
    copy: bool = False,
) -> AnnData | None:
    """Encode each cell's expression as a sequence of gene tokens (and values).

    Five encodings from the single-cell transformer literature:

    ``"rank"`` (Geneformer)
        Counts divided by the cell's total over all genes, times ``target_sum``, divided by a
        per-gene median; expressed genes ordered by that value, descending (ties in var order).
        The medians come from ``gene_medians``, else the vocabulary, else the data's own nonzero
        normalised values. Geneformer V1: ``max_length=2048, add_cls=False``; V2:
        ``max_length=4096, add_cls=True, add_eos=True``.
    ``"bin"`` (scBERT)
        ``log1p`` of normalised expression in equal-width bins (``bin_width``, default 1),
        clipped to the top bin ``n_bins - 1`` (default 6 bins: 0–5). Genes in var order.
    ``"adaptive_bin"`` (scGPT)
        Per cell, nonzero ``log1p`` values binned by that cell's quantiles into bins
        1…``n_bins - 1`` (default 51 bins; 0 is "not expressed"). Values tied with several
        edges are spread between them by a seeded hash, scGPT's rule made reproducible.
        Genes in var order; ``max_length`` (default 1,200) keeps the most expressed genes
        (``select="top"``, default) or a seeded random sample (``select="random"``, what
        scGPT's data collator does).
    ``"value"`` (TOSICA, scGPT continuous input)
        The ``log1p`` normalised values themselves.
    ``"sentence"`` (Cell2Sentence)
        The names of the ``max_length`` (default 100) most expressed genes, joined by spaces.

    Parameters
    ----------
    adata
        Cells × genes; raw counts in ``X`` or ``layer`` (backed AnnData is read in chunks).
    method
        One of the five above; defaults to the method a model in ``vocab`` was trained with.
    vocab
        A :class:`~sctransformer.tokenizers.GeneVocab`, or a model (its vocabulary and its
        tokenization parameters become the defaults). ``None`` builds a vocabulary from the
        data's genes (and ``batch_key`` values).
    layer
        Read this layer instead of ``X``.
    gene_key
        A ``var`` column with the gene names to match (e.g. Ensembl IDs); default ``var_names``.
    max_length
        Tokens per cell including special and condition tokens; method default above,
        ``bin``/``value`` keep every gene when ``None``.
    target_sum
        Normalisation total per cell (default 10,000).
    normalize
        Normalise to ``target_sum`` (and ``log1p`` for the value encodings). ``False`` uses the
        matrix as it is, e.g. an already log-normalised layer.
    n_bins, bin_width
        Bin settings of ``bin`` and ``adaptive_bin``.
    select
        Which genes ``max_length`` keeps for the value encodings: ``"top"`` or ``"random"``.
    include_zeros
        Value encodings only: every vocabulary gene, expressed or not (scBERT's full input).
    add_cls, add_eos
        Prepend ``<cls>`` (default True) / append ``<eos>`` (default False).
    pad_value
        Value at padding and special positions (default -2, scGPT's).
    gene_medians
        ``rank`` only: a mapping gene → median, ``"vocab"``, ``"data"`` or ``"none"`` (no
        median scaling). Default: the vocabulary's medians when it has them, else the data's.
    batch_key
        ``obs`` column whose value becomes a condition token ``<batch=…>`` after ``<cls>``.
    seed
        Seeds tie-breaking and random selection (a hash of seed, cell index and gene id, so
        results do not depend on chunking or threads).
    min_gene_fraction
        Fail when fewer than this fraction of the data's genes are in the vocabulary.
    chunk_size
        Cells read at a time from dense, CSC or backed matrices; bounds memory. An in-memory
        CSR matrix is encoded whole (its working memory is bounded by row blocks anyway).
    key_added
        Prefix of the keys written (see Returns).
    copy
        Return a tokenized copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes (``sct`` stands for ``key_added``):

    ``obsm["sct_tokens"]``
        int32 token ids, padded with the vocabulary's ``<pad>`` id.
    ``obsm["sct_values"]``
        float32 values (rank score, bin index or expression), ``pad_value`` at padding.
    ``obs["sct_n_tokens"]``
        Tokens per cell, special tokens included.
    ``obs["sct_sentence"]``
        ``sentence`` only (instead of the two arrays above).
    ``uns["sct"]``
        ``{"params": every parameter, "vocab": the vocabulary as JSON}``.
    """
    model = vocab if vocab is not None and not isinstance(vocab, GeneVocab) else None
    if model is not None and not isinstance(getattr(model, "vocab", None), GeneVocab):
        raise ValueError(
            "vocab must be a GeneVocab or a model with a .vocab; got "
            f"{type(vocab).__name__}. Load a model with sct.models.load(...)"
        )
    model_params = dict(getattr(model, "tokenize_params", None) or {})
    vocab = model.vocab if model is not None else vocab
    method = method or model_params.get("method")
    if method is None:
        raise ValueError(f"method is required; use one of {list(METHODS)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {list(METHODS)}")
    explicit = {
        "max_length": max_length,
        "target_sum": target_sum,
        "normalize": normalize,
        "n_bins": n_bins,
        "bin_width": bin_width,
        "select": select,
        "include_zeros": include_zeros,
        "add_cls": add_cls,
        "add_eos": add_eos,
        "pad_value": pad_value,
    }
    params = _resolve(
        method, explicit, model_params if model_params.get("method") == method else {}
    )

    _validate.check_nonempty(adata)
    names = _gene_names(adata, gene_key)
    _validate.check_unique(names)
    conditions: tuple[str, ...] = ()
    batches = None
    if batch_key is not None and method != "sentence":
        batches = _validate.obs_column(
            adata, batch_key, fix="fill them (e.g. with 'unknown') before tokenizing"
        )
        batches = batches.astype(str).to_numpy()
        conditions = ("batch",)
    enc = Encoding(method, seed=seed, conditions=conditions, **params)

    if vocab is None:
        vocab = GeneVocab.from_genes(
            names,
            conditions={"batch": pd.unique(batches)} if batches is not None else None,
        )
    gene_ids = vocab.encode_genes(names)
    _validate.check_gene_overlap(names, gene_ids, vocab.genes, min_fraction=min_gene_fraction)
    prefix_ids = None
    if batches is not None:
        lookup = {b: vocab.condition_id("batch", b) for b in pd.unique(batches)}
        prefix_ids = np.array([lookup[b] for b in batches], dtype=np.int64)[:, None]
    pad_id = vocab.pad_id if method != "sentence" else -1
    cls_id = vocab.cls_id if enc.add_cls and method != "sentence" else -1
    eos_id = vocab.eos_id if enc.add_eos and method != "sentence" else -1

    start = logg.info(f"tokenizing {adata.n_obs} cells with method={method!r}")
    medians, median_source = _medians(
        adata, method, gene_medians, vocab, names, gene_ids, layer, enc, chunk_size
    )
    parts: list[Encoded] = []
    n_jobs = settings.effective_n_jobs()
    bar = logg.progress(total=adata.n_obs, desc="tokenize", unit="cells")
    out_dtype = np.int64 if method == "sentence" else np.int32
    # encoding's scratch memory is bounded by its row blocks, so in-memory CSR goes in whole
    chunks = iter_chunks(adata, layer=layer, chunk_size=chunk_size, whole_csr=True)
    for a, b, csr in chunks:
        parts.append(
            encode_chunk(
                csr,
                enc,
                gene_ids=gene_ids,
                medians=medians,
                prefix=None if prefix_ids is None else prefix_ids[a:b],
                cls_id=cls_id,
                eos_id=eos_id,
                row_start=a,
                pad_id=pad_id,
                dtype=out_dtype,
                n_jobs=n_jobs,
            )
        )
        bar.update(b - a)
    bar.close()
    # one join of every chunk (none when there is one chunk)
    result = concat(parts, pad_value=enc.pad_value, pad_id=pad_id)
    del parts
    max_value, all_integer = result.max_value, result.all_integer

    n_special = enc.n_special
    empty = result.n_tokens <= n_special
    if empty.all():
        raise ValueError(
            "no cell has any expressed gene known to the vocabulary; check that X holds "
            "expression (not an empty layer) and that genes match the vocabulary"
        )
    if not all_integer and enc.normalize and method != "sentence":
        _validate.warn(
            f"the matrix is not integer counts (it looks {_validate.describe_non_counts(max_value)}"
            f"); {method!r} normalises counts itself. Pass raw counts (layer='counts') or "
            "normalize=False if the values are already what you want"
        )
    if empty.any():
        _validate.warn(
            f"{int(empty.sum())} cell(s) have no counts in vocabulary genes and get no gene "
            "tokens; remove them with sc.pp.filter_cells(adata, min_counts=1) first"
        )

    # everything is computed and checked: only now touch the user's object
    adata = _copy(adata) if copy else adata
    params = {
        **enc.to_dict(),
        "layer": layer or "X",
        "gene_key": gene_key or "var_names",
        "batch_key": batch_key or "",
        "gene_medians": median_source,
        "min_gene_fraction": min_gene_fraction,
        "n_genes_matched": int((gene_ids >= 0).sum()),
        "n_cells_without_tokens": int(empty.sum()),
        "version": __version__,
    }
    # drop what an earlier call under the same key wrote in the other layout
    for stale in (f"{key_added}_tokens", f"{key_added}_values"):
        if method == "sentence" and stale in adata.obsm:
            del adata.obsm[stale]
    if method != "sentence" and f"{key_added}_sentence" in adata.obs:
        del adata.obs[f"{key_added}_sentence"]
    adata.obs[f"{key_added}_n_tokens"] = result.n_tokens
    if method == "sentence":
        gene_names = np.asarray(names, dtype=object)
        adata.obs[f"{key_added}_sentence"] = [
            " ".join(gene_names[row[:n]])
            for row, n in zip(result.tokens, result.n_tokens, strict=True)
        ]
        written = f"obs[{key_added + '_sentence'!r}]"
    else:
        adata.obsm[f"{key_added}_tokens"] = result.tokens
        adata.obsm[f"{key_added}_values"] = result.values
        written = f"obsm[{key_added + '_tokens'!r}], obsm[{key_added + '_values'!r}]"
        if method == "rank" and median_source == "data":
            vocab = _with_medians(vocab, gene_ids, medians, names)
    adata.uns[key_added] = {"params": params, "vocab": vocab.to_json()}
    logg.info(
        "    finished",
        time=start,
        deep=f"added {written}, obs[{key_added + '_n_tokens'!r}], uns[{key_added!r}]",
    )
    return adata if copy else None


def _resolve(method: str, explicit: dict, model_params: dict) -> dict:
    defaults = {
        "max_length": DEFAULT_MAX_LENGTH[method],
        "target_sum": 1e4,
        "normalize": True,
        "n_bins": DEFAULT_N_BINS.get(method, 51),
        "bin_width": 1.0,
        "select": "top",
        "include_zeros": False,
        "add_cls": method != "sentence",
        "add_eos": False,
        "pad_value": -2.0,
    }
    out = {}
    for k in _OPTIONAL:
        if explicit[k] is not None:
            out[k] = explicit[k]
        elif k in model_params:
            out[k] = model_params[k]
        else:
            out[k] = defaults[k]
    if out["max_length"] is not None and out["max_length"] < 0:
        out["max_length"] = None  # stored as -1 in uns
    return out


def _gene_names(adata: AnnData, gene_key: str | None) -> list[str]:
    if gene_key is None:
        return [str(g) for g in adata.var_names]
    _validate.check_key(adata.var, gene_key, where="adata.var")
    col = adata.var[gene_key]
    if col.isna().any():
        raise ValueError(
            f"var[{gene_key!r}] has {int(col.isna().sum())} missing names; fill or drop those genes"
        )
    return [str(g) for g in col]


def _medians(adata, method, gene_medians, vocab, names, gene_ids, layer, enc, chunk_size):
    """Per var column median for ``rank`` (NaN = unusable gene) and where it came from."""
    if method != "rank":
        return None, "none"
    if isinstance(gene_medians, str):
        if gene_medians not in ("vocab", "data", "none"):
            raise ValueError(
                f"gene_medians={gene_medians!r}; use 'vocab', 'data', 'none' or a mapping"
            )
        source = gene_medians
    elif gene_medians is None:
        source = "vocab" if vocab.gene_medians else "data"
    else:
        # keys may be the data's names or the vocabulary's tokens they map to (Geneformer's
        # dictionary is keyed by Ensembl id; data may use symbols or versioned ids)
        lookup = {str(k): v for k, v in gene_medians.items()}
        tokens = vocab.id_to_token(np.maximum(gene_ids, 0)) if len(vocab) else []
        med = np.full(len(names), np.nan)
        for j, (name, i) in enumerate(zip(names, gene_ids, strict=True)):
            m = lookup.get(name)
            if m is None and i >= 0:
                m = lookup.get(tokens[j])
            if m is not None:
                med[j] = float(m)
        if not np.isfinite(med).any():
            raise ValueError(
                "gene_medians names none of the data's genes (nor their vocabulary tokens); "
                "check its keys"
            )
        return med, "given"
    if source == "none":
        return np.where(gene_ids >= 0, 1.0, np.nan), "none"
    if source == "vocab":
        if not vocab.gene_medians:
            raise ValueError(
                "gene_medians='vocab' but the vocabulary has no gene medians; use "
                "gene_medians='data' to compute them from this data"
            )
        return vocab.medians_for(gene_ids), "vocab"
    return data_gene_medians(
        adata, layer=layer, usable=gene_ids >= 0, enc=enc, chunk_size=chunk_size
    ), "data"


def data_gene_medians(adata, *, layer, usable, enc: Encoding, chunk_size: int) -> np.ndarray:
    """Median of each gene's nonzero normalised values over all cells (NaN if never seen).

    Exact, in float64; holds the nonzero values of usable genes in memory once.
    """
    return gene_medians(
        lambda: (c for _, _, c in iter_chunks(adata, layer=layer, chunk_size=chunk_size,
                                              whole_csr=True)),
        usable,
        target_sum=enc.target_sum,
        n_jobs=settings.effective_n_jobs(),
    )  # fmt: skip


def _with_medians(vocab: GeneVocab, gene_ids, medians, names) -> GeneVocab:
    """The vocabulary with the data's medians recorded, so queries reuse them."""
    d = vocab.to_dict()
    meds = dict(d["gene_medians"])
    for i, m in zip(gene_ids, medians, strict=True):
        if i >= 0 and np.isfinite(m):
            meds[vocab.id_to_token([i])[0]] = float(m)
    d["gene_medians"] = meds
    return GeneVocab.from_dict(d)


def _copy(adata: AnnData) -> AnnData:
    return adata.to_memory() if adata.isbacked else adata.copy()
