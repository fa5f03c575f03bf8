"""The cells as a model reads them: the one path every task takes from AnnData to token arrays.

:func:`model_token_chunks` gives a task the cells chunk by chunk (stored tokens when they were
made for the model, see :func:`stored_for`, else tokenized on the fly with
:func:`~sctransformer._tokenize_arrays.tokenize_arrays`), so backed AnnData streams;
:func:`model_tokens` joins the chunks when a task needs every cell at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from anndata import AnnData

from . import _validate
from ._token_store import layout, read_token_rows, read_tokens, stored_params
from ._tokenize_arrays import tokenize_arrays
from .tokenizers import TokenArrays
from .tokenizers._encode import Stacker


def stored_for(adata: AnnData, model, key: str, *, batch_key: str | None = None) -> bool:
    """Whether ``adata`` holds tokens under ``key`` made with ``model``'s vocabulary and method
    (and the same batch condition tokens).
    """
    k = layout(key)
    if k["tokens"] not in adata.obsm or key not in adata.uns:
        return False
    params = stored_params(adata, key)
    if params.get("method") != model.tokenize_params.get("method", params.get("method")):
        return False
    if (params.get("batch_key") or "") != (batch_key or ""):
        return False
    return adata.uns[key].get("vocab") == model.vocab.to_json()


def model_token_chunks(
    adata: AnnData,
    model,
    *,
    key: str = "sct",
    chunk_size: int = 2048,
    batch_key: str | None = None,
    gene_key: str | None = None,
    min_gene_fraction: float = 0.2,
    cells: np.ndarray | None = None,
) -> Iterator[tuple[int, int, TokenArrays]]:
    """Yield ``(start, stop, arrays)`` over ``adata``'s cells as ``model`` reads them.

    Stored tokens are reused when they were made for the model (:func:`stored_for`); otherwise
    each chunk is tokenized now, with the model's vocabulary and parameters. Only one chunk is
    in memory at a time, so backed AnnData streams. ``cells`` (positions) restricts the pass to
    those cells; ``start:stop`` then index into ``cells``.
    """
    from ._settings import settings

    reuse = stored_for(adata, model, key, batch_key=batch_key)
    warned: set[str] = set()
    n = adata.n_obs if cells is None else len(cells)
    gene_key = model.gene_key(adata, gene_key) if hasattr(model, "gene_key") else gene_key
    for a in range(0, n, chunk_size):
        b = min(a + chunk_size, n)
        rows = slice(a, b) if cells is None else np.asarray(cells[a:b])
        if reuse:
            if cells is None:
                yield a, b, read_tokens(adata, key, start=a, stop=b, pad_id=model.vocab.pad_id)
            else:
                whole = read_token_rows(adata, key, rows, model.vocab.pad_id)
                yield a, b, whole
            continue
        sub = adata[rows]
        sub = sub.to_memory() if adata.isbacked else sub
        with settings.override(verbosity=0, progress_bars=False):
            tok = tokenize_arrays(
                sub,
                vocab=model,
                gene_key=gene_key,
                batch_key=batch_key,
                min_gene_fraction=min_gene_fraction,
            )
        for message in tok.warnings:  # each kind once, not once per chunk
            if message.split(";")[0][-40:] not in warned:
                warned.add(message.split(";")[0][-40:])
                _validate.warn(message)
        yield a, b, tok.arrays


def model_tokens(adata: AnnData, model, *, cells: np.ndarray | None = None, **kw) -> TokenArrays:
    """Every cell's (or ``cells``') token arrays as one :class:`TokenArrays` (streamed read)."""
    stack = None
    for _, _, arrays in model_token_chunks(adata, model, cells=cells, **kw):
        if stack is None:
            n = adata.n_obs if cells is None else len(cells)
            stack = Stacker(n, pad_value=arrays.pad_value, pad_id=arrays.pad_id)
        stack.add(arrays)
    if stack is None:
        raise ValueError("no cells to tokenize")
    return stack.result()
