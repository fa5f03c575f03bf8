"""AnnData → token arrays: :func:`tokenize_arrays` encodes an AnnData's cells without touching
it, with each option given, else the model's, else the method's default (:func:`resolve_options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _validate
from ._data import iter_chunks
from ._settings import settings
from ._version import __version__
from .tokenizers import GeneVocab, TokenArrays, _merge
from .tokenizers._encode import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_N_BINS,
    METHODS,
    Encoding,
    Stacker,
    encode_chunk,
)
from .tokenizers._medians import rank_medians, with_medians

OPTIONAL = (
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


@dataclass
class Tokenized:
    """The result of :func:`tokenize_arrays`: arrays (or sentences), parameters, vocabulary."""

    arrays: TokenArrays
    params: dict
    vocab: GeneVocab
    sentences: list[str] | None = None
    n_empty: int = 0
    warnings: list[str] = field(default_factory=list)


def tokenize_arrays(
    adata: AnnData,
    *,
    method: str | None = None,
    vocab=None,
    layer: str | None = None,
    gene_key: str | None = None,
    gene_medians: Mapping[str, float] | pd.Series | str | None = None,
    batch_key: str | None = None,
    seed: int = 0,
    min_gene_fraction: float = 0.2,
    chunk_size: int = 4096,
    total_key: str | bool | None = None,
    **options,
) -> Tokenized:
    """Encode ``adata``'s cells; nothing is written. Arguments as :func:`sctransformer.pp.tokenize`.

    ``options`` are the encoding settings of ``OPTIONAL``; ``None`` means the model's (when
    ``vocab`` is a model), else the method's default. Warnings are collected in
    ``Tokenized.warnings`` for the caller to emit.

    Genes that map to one token (one vocabulary id; for ``sentence``, one upper-cased name)
    have their counts summed into one column first (``params["n_genes_merged"]``).
    """
    unknown = sorted(set(options) - set(OPTIONAL))
    if unknown:
        raise TypeError(f"unknown tokenize options {unknown}")
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
    explicit = {k: options.get(k) for k in OPTIONAL}
    params = resolve_options(
        method, explicit, model_params if model_params.get("method") == method else {}
    )

    _validate.check_nonempty(adata)
    names = _gene_names(adata, gene_key)
    _validate.check_unique(names)
    sentence = method == "sentence"
    # Cell2Sentence's words are upper-cased gene names
    words = [n.upper() for n in names] if sentence else names
    totals, total_source = cell_totals(adata, total_key, model_params.get("total_key"))
    conditions: tuple[str, ...] = ()
    batches = None
    if batch_key is not None and not sentence:
        batches = _validate.obs_column(
            adata, batch_key, fix="fill them (e.g. with 'unknown') before tokenizing"
        )
        batches = batches.astype(str).to_numpy()
        conditions = ("batch",)
    enc = Encoding(method, seed=seed, conditions=conditions, **params)

    if vocab is None:
        vocab = GeneVocab.from_genes(
            list(pd.unique(np.asarray(words, dtype=object))),
            conditions={"batch": pd.unique(batches)} if batches is not None else None,
        )
    gene_ids = vocab.encode_genes(words)
    if sentence:  # a vocabulary of the names as they are
        gene_ids = np.where(gene_ids >= 0, gene_ids, vocab.encode_genes(names))
    _validate.check_gene_overlap(names, gene_ids, vocab.genes, min_fraction=min_gene_fraction)
    # columns that become one token are summed first (Geneformer's rule, for every method)
    merge = _merge.plan(words if sentence else gene_ids)
    if merge is not None:
        names = [names[j] for j in merge.first]
        words = [words[j] for j in merge.first] if sentence else names
        gene_ids = gene_ids[merge.first]

    def chunks(whole: bool = True):
        """(start, stop, CSR) over cells, genes merged; an in-memory CSR matrix comes whole
        when nothing is merged (encoding's scratch memory is bounded by its row blocks).
        """
        it = iter_chunks(adata, layer=layer, chunk_size=chunk_size,
                         whole_csr=whole and merge is None)  # fmt: skip
        for a, b, csr in it:
            yield a, b, (csr if merge is None else merge.apply(csr))

    prefix_ids = None
    if batches is not None:
        lookup = {b: vocab.condition_id("batch", b) for b in pd.unique(batches)}
        prefix_ids = np.array([lookup[b] for b in batches], dtype=np.int64)[:, None]
    pad_id = vocab.pad_id if not sentence else -1
    cls_id = vocab.cls_id if enc.add_cls and not sentence else -1
    eos_id = vocab.eos_id if enc.add_eos and not sentence else -1

    medians, median_source = (None, "none")
    scans: list = []  # the data's medians scan each chunk; encoding reuses those scans
    if method == "rank":
        medians, median_source = rank_medians(
            gene_medians,
            vocab,
            names,
            gene_ids,
            lambda: (c for _, _, c in chunks()),
            target_sum=enc.target_sum,
            n_jobs=settings.effective_n_jobs(),
            totals=totals,
            scans=scans,
        )
    from . import logging as logg

    if merge is not None:
        merged = _merge.groups(merge, _gene_names(adata, gene_key))
        shown = "; ".join("+".join(g) for g in merged[:3])
        logg.info(
            f"    summed the counts of {sum(map(len, merged))} genes into {len(merged)} "
            f"{'words (same upper-cased name)' if sentence else 'tokens (same vocabulary id)'}"
            f", e.g. {shown}"
        )

    stack = Stacker(adata.n_obs, pad_value=enc.pad_value, pad_id=pad_id)
    n_jobs = settings.effective_n_jobs()
    bar = logg.progress(total=adata.n_obs, desc="tokenize", unit="cells")
    out_dtype = np.int64 if sentence else np.int32
    for i, (a, b, csr) in enumerate(chunks()):
        stack.add(
            encode_chunk(
                csr,
                enc,
                gene_ids=gene_ids,
                medians=medians,
                totals=None if totals is None else totals[a:b],
                prefix=None if prefix_ids is None else prefix_ids[a:b],
                cls_id=cls_id,
                eos_id=eos_id,
                row_start=a,
                pad_id=pad_id,
                dtype=out_dtype,
                n_jobs=n_jobs,
                scan=scans[i] if scans else None,
            )
        )
        bar.update(b - a)
    bar.close()
    result = stack.result()  # no copy for one chunk
    del stack

    empty = result.lengths <= enc.n_special
    if empty.all():
        raise ValueError(
            "no cell has any expressed gene known to the vocabulary; check that X holds "
            "expression (not an empty layer) and that genes match the vocabulary"
        )
    warnings = []
    if not result.all_integer and enc.normalize and method != "sentence":
        warnings.append(
            f"the matrix is not integer counts (it looks "
            f"{_validate.describe_non_counts(result.max_value)}); {method!r} normalises counts "
            "itself. Pass raw counts (layer='counts') or normalize=False if the values are "
            "already what you want"
        )
    if empty.any():
        warnings.append(
            f"{int(empty.sum())} cell(s) have no counts in vocabulary genes and get no gene "
            "tokens; remove them with sc.pp.filter_cells(adata, min_counts=1) first"
        )
    record = {
        **enc.to_dict(),
        "layer": layer or "X",
        "gene_key": gene_key or "var_names",
        "batch_key": batch_key or "",
        "gene_medians": median_source,
        "min_gene_fraction": min_gene_fraction,
        "total_key": total_source,
        "n_genes_merged": 0 if merge is None else merge.n_merged,
        "n_genes_matched": int((gene_ids >= 0).sum()),
        "n_cells_without_tokens": int(empty.sum()),
        "version": __version__,
    }
    sentences = None
    if sentence:
        gene_names = np.asarray(words, dtype=object)
        sentences = [
            " ".join(gene_names[row[:n]])
            for row, n in zip(result.tokens, result.lengths, strict=True)
        ]
    elif method == "rank" and median_source == "data":
        vocab = with_medians(vocab, gene_ids, medians)
    return Tokenized(
        arrays=result,
        params=record,
        vocab=vocab,
        sentences=sentences,
        n_empty=int(empty.sum()),
        warnings=warnings,
    )


# -- parameters and medians ------------------------------------------------------------------


def resolve_options(method: str, explicit: dict, model_params: dict) -> dict:
    """Each option: given, else the model's, else the method's default."""
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
    for k in OPTIONAL:
        if explicit.get(k) is not None:
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
        return adata.var_names.astype(str).tolist()
    _validate.check_key(adata.var, gene_key, where="adata.var")
    col = adata.var[gene_key]
    if col.isna().any():
        raise ValueError(
            f"var[{gene_key!r}] has {int(col.isna().sum())} missing names; fill or drop those genes"
        )
    return [str(g) for g in col]


def cell_totals(
    adata: AnnData, total_key: str | bool | None, default: str | None
) -> tuple[np.ndarray | None, str]:
    """Each cell's normalisation denominator and where it comes from (``""``: the matrix).

    ``total_key``: an ``obs`` column of totals (must exist), ``False`` (the matrix's sums) or
    ``None``: ``default`` (the model's publisher's column, e.g. Geneformer's ``"n_counts"``)
    when ``adata.obs`` has it, else the matrix's sums, with a hint.
    """
    from . import logging as logg

    if total_key is False or total_key == "":
        return None, ""
    if total_key is True:
        raise ValueError("total_key must be an obs column name, False or None; got True")
    if total_key is None:
        if not default:
            return None, ""
        if default not in adata.obs:
            logg.hint(
                f"the model's publisher divides counts by obs[{default!r}], which this data "
                "lacks: using each cell's sum over the matrix instead (pass total_key= to "
                "name another column, or total_key=False to silence this)"
            )
            return None, ""
        total_key = default
    col = _validate.obs_column(
        adata, str(total_key), fix="fill them, or pass total_key=False to use the matrix's sums"
    )
    if not pd.api.types.is_numeric_dtype(col):
        raise ValueError(
            f"obs[{total_key!r}] holds {col.dtype} values, not numbers; pass a column of "
            "per-cell total counts, or total_key=False to use the matrix's sums"
        )
    tot = col.to_numpy(dtype=np.float64)
    if not np.isfinite(tot).all() or (tot < 0).any():
        raise ValueError(
            f"obs[{total_key!r}] has {int((~np.isfinite(tot) | (tot < 0)).sum())} non-finite or "
            "negative totals; fix them, or pass total_key=False to use the matrix's sums"
        )
    return tot, str(total_key)
