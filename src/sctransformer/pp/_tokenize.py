"""``sct.pp.tokenize``: AnnData expression → transformer inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._backed import check_writable
from .._mudata import is_mudata
from .._mudata import tokenize as tokenize_mudata
from .._token_store import write_tokens
from .._tokenize_arrays import tokenize_arrays


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
    total_key: str | Literal[False] | None = None,
    chunk_size: int = 4096,
    key_added: str = "sct",
    copy: bool = False,
) -> AnnData | None:
    """Encode each cell's expression as a sequence of gene tokens (and values).

    Five encodings from the single-cell transformer literature:

    ``"rank"`` (Geneformer)
        Counts divided by the cell's total (``total_key``), times ``target_sum``, divided by a
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
        The upper-cased names of the expressed genes, most expressed first (ties in var
        order), joined by spaces: every expressed gene, as Cell2Sentence writes them (it crops
        when it builds a prompt); ``max_length`` keeps the first ones only.

    Genes that map to one token (two names of one vocabulary id; for ``sentence``, names equal
    once upper-cased) have their counts summed into one gene first, as Geneformer's tokenizer
    does; ``uns["sct"]["params"]["n_genes_merged"]`` says how many were folded.

    Parameters
    ----------
    adata
        Cells × genes; raw counts in ``X`` or ``layer`` (backed AnnData is read in chunks).
        A :class:`~mudata.MuData` gets one sequence per cell over its modalities (see
        :doc:`/scale`); its options may be ``{modality: value}`` mappings.
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
    total_key
        ``obs`` column of each cell's total counts, the normalisation denominator (e.g.
        Geneformer's ``"n_counts"``, which may hold totals from before a gene filter).
        ``False``: each cell's sum over the matrix. ``None`` (default): what the model's
        publisher did, i.e. ``"n_counts"`` for a Geneformer model when ``obs`` has it (else
        the matrix's sums, with a hint), the matrix's sums otherwise.
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
    if is_mudata(adata):  # one sequence per cell over the modalities (see _mudata.py)
        kw = {k: v for k, v in locals().items() if k != "adata"}
        return tokenize_mudata(adata, **kw)
    check_writable(adata, copy=copy)
    shown = method or getattr(vocab, "tokenize_params", {}).get("method", "")
    start = logg.info(f"tokenizing {adata.n_obs} cells with method={shown!r}")
    tok = tokenize_arrays(
        adata,
        method=method,
        vocab=vocab,
        layer=layer,
        gene_key=gene_key,
        gene_medians=gene_medians,
        batch_key=batch_key,
        seed=seed,
        min_gene_fraction=min_gene_fraction,
        total_key=total_key,
        chunk_size=chunk_size,
        max_length=max_length,
        target_sum=target_sum,
        normalize=normalize,
        n_bins=n_bins,
        bin_width=bin_width,
        select=select,
        include_zeros=include_zeros,
        add_cls=add_cls,
        add_eos=add_eos,
        pad_value=pad_value,
    )
    for message in tok.warnings:
        _validate.warn(message)
    # everything is computed and checked: only now touch the user's object
    adata = (adata.to_memory() if adata.isbacked else adata.copy()) if copy else adata
    written = write_tokens(adata, tok, key_added)
    logg.info("    finished", time=start, deep=f"added {written}")
    return adata if copy else None
