"""MuData ↔ token arrays: one sequence per cell over several modalities.

A cell's sequence is ``<cls>``, then for each modality in a fixed order its modality token
``<mod=NAME>`` followed by that modality's tokens (encoded as :func:`sctransformer.pp.tokenize`
encodes one AnnData), then ``<eos>`` when asked. Each modality's features take their own range
of the vocabulary; a feature name that an earlier modality already uses is prefixed with the
modality (``"prot:CD4"`` next to the RNA gene ``"CD4"``), so the two never share a token.

Only cells present in every modality used get a sequence. The others are dropped with a
warning: their rows of the token arrays are padding with ``n_tokens`` 0 and their embedding
rows are NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _validate
from ._mudata_cells import (
    choose_modalities,
    feature_names,
    fresh_vocab,
    modality_rows,
    model_names,
    per_modality,
    shared_cells,
)
from ._token_store import layout, read_tokens
from ._tokenize_arrays import OPTIONAL, Tokenized, tokenize_arrays
from ._tokens import stored_for
from ._version import __version__
from .tokenizers import GeneVocab, TokenArrays

# options that may be given per modality as a {modality: value} mapping
PER_MODALITY = (*OPTIONAL, "layer", "gene_key", "gene_medians", "total_key")
_SEQUENCE = ("add_cls", "add_eos", "pad_value")  # options of the whole sequence, not a modality


def tokenize_mudata(
    mdata,
    *,
    method: str | None = None,
    vocab=None,
    modalities=None,
    batch_key: str | None = None,
    seed: int = 0,
    min_gene_fraction: float = 0.2,
    chunk_size: int = 4096,
    **options,
) -> tuple[Tokenized, np.ndarray]:
    """Encode a MuData's shared cells; nothing is written.

    Returns the :class:`~sctransformer._tokenize_arrays.Tokenized` result over the shared cells and
    their positions in ``mdata.obs``. ``options`` are those of :func:`sctransformer.pp.tokenize`;
    each of ``PER_MODALITY`` may be a ``{modality: value}`` mapping.
    """
    if batch_key is not None:
        raise ValueError(
            "batch_key is not supported for a MuData yet; tokenize each modality's AnnData "
            "with sct.pp.tokenize(mdata[mod], batch_key=...) or drop batch_key"
        )
    unknown = sorted(set(options) - set(PER_MODALITY))
    if unknown:
        raise TypeError(f"unknown tokenize options {unknown}")
    model = vocab if vocab is not None and not isinstance(vocab, GeneVocab) else None
    model_params = dict(getattr(model, "tokenize_params", None) or {})
    if model is not None and "modalities" not in model_params:
        raise ValueError(
            "this model was trained on one AnnData, not a MuData; embed one modality with "
            "sct.tl.embed_cells(mdata[mod], model) (or sct.pp.tokenize(mdata[mod], vocab=model))"
        )
    if isinstance(vocab, GeneVocab):
        raise ValueError(
            "a MuData is tokenized with a fresh vocabulary (vocab=None) or a model trained on a "
            "MuData (vocab=model); a bare GeneVocab has no modality ranges"
        )
    mod_params: dict = dict(model_params.get("modalities", {}))
    known = list(model_params.get("modality_order", [])) if model is not None else None
    method = method or model_params.get("method")
    mods = choose_modalities(mdata, modalities, known)
    for m in mods:
        _validate.check_nonempty(mdata.mod[m])
    cells, rows = shared_cells(mdata, mods)

    names = {
        m: feature_names(mdata.mod[m], per_modality(options.get("gene_key"), m, mdata.mod))
        for m in mods
    }
    if model is None:
        full_vocab, mapped, ranges = fresh_vocab(names, mods)
    else:
        full_vocab = model.vocab
        ranges = {m: mod_params[m]["range"] for m in mods}
        mapped = {m: model_names(full_vocab, names[m], m, ranges[m]) for m in mods}
    for m in mods:
        n_known = sum(not g.startswith("\x00") for g in mapped[m])
        if n_known == 0:
            raise ValueError(
                f"none of modality {m!r}'s {len(names[m])} features are in the vocabulary's "
                f"{m!r} range: check mdata[{m!r}].var_names use the model's naming (or pass "
                f"gene_key={{{m!r}: column}}), or leave the modality out with modalities="
                f"{[x for x in mods if x != m]}"
            )

    seq = {}
    for k in _SEQUENCE:
        v = options.get(k)
        seq[k] = v if v is not None else model_params.get(k)
    seq["add_cls"] = True if seq["add_cls"] is None else bool(seq["add_cls"])
    seq["add_eos"] = False if seq["add_eos"] is None else bool(seq["add_eos"])
    seq["pad_value"] = -2.0 if seq["pad_value"] is None else float(seq["pad_value"])

    parts: dict[str, Tokenized] = {}
    medians: dict[str, float] = dict(full_vocab.gene_medians)
    for m in mods:
        mod = mdata.mod[m]
        layer = per_modality(options.get("layer"), m, mdata.mod)
        saved = dict(mod_params.get(m, {}))
        explicit = {
            k: per_modality(options.get(k), m, mdata.mod) for k in OPTIONAL if k not in _SEQUENCE
        }  # fmt: skip
        for k in explicit:
            if explicit[k] is None and k in saved:
                explicit[k] = saved[k]
        if explicit.get("max_length") is not None and explicit["max_length"] < 0:
            explicit["max_length"] = None
        sub_x = modality_rows(mod, layer, rows[m])
        sub = AnnData(
            X=sub_x,
            obs=pd.DataFrame(index=pd.Index(mdata.obs_names[cells]).astype(str)),
            var=pd.DataFrame(index=pd.Index(mapped[m]).astype(str)),
        )
        gm = per_modality(options.get("gene_medians"), m, mdata.mod)
        total_key = per_modality(options.get("total_key"), m, mdata.mod)
        if isinstance(total_key, str) and total_key:
            _validate.check_key(mod.obs, total_key, where=f"mdata[{m!r}].obs")
            sub.obs[total_key] = mod.obs[total_key].to_numpy()[rows[m]]
        try:
            tok = tokenize_arrays(
                sub,
                method=method,
                vocab=full_vocab,
                gene_medians=gm,
                total_key=total_key,
                seed=seed,
                min_gene_fraction=min_gene_fraction,
                chunk_size=chunk_size,
                add_cls=False,
                add_eos=False,
                pad_value=seq["pad_value"],
                **{k: v for k, v in explicit.items() if v is not None},
            )
        except ValueError as e:
            raise ValueError(f"modality {m!r}: {e}") from None
        parts[m] = tok
        if tok.vocab is not full_vocab:
            medians.update(tok.vocab.gene_medians)
        tok.params["layer"] = layer or "X"
        tok.params["gene_key"] = per_modality(options.get("gene_key"), m, mdata.mod) or "var_names"

    if medians != full_vocab.gene_medians:
        d = full_vocab.to_dict()
        d["gene_medians"] = medians
        full_vocab = GeneVocab.from_dict(d)
    mod_ids = [full_vocab.condition_id("mod", m) for m in mods]
    arrays = join(
        [parts[m].arrays for m in mods],
        mod_ids,
        cls_id=full_vocab.cls_id if seq["add_cls"] else -1,
        eos_id=full_vocab.eos_id if seq["add_eos"] else -1,
        pad_id=full_vocab.pad_id,
        pad_value=seq["pad_value"],
    )
    warnings = [f"modality {m!r}: {w}" for m in mods for w in parts[m].warnings]
    n_dropped = int(mdata.n_obs - len(cells))
    if n_dropped:
        missing = {m: int(mdata.n_obs - mdata.mod[m].n_obs) for m in mods}
        warnings.append(
            f"{n_dropped} of {mdata.n_obs} cells are missing from some modality "
            f"({', '.join(f'{m}: {k} missing' for m, k in missing.items() if k)}) and are "
            "dropped: their token rows are padding (n_tokens 0) and their embeddings NaN. "
            "Subset with mdata = mdata[mdata.obs['<key>_n_tokens'] > 0] after tokenizing, or "
            "pass modalities= with fewer modalities"
        )
    caps = [parts[m].params.get("max_length", -1) for m in mods]
    total_cap = (
        int(sum(caps) + len(mods) + seq["add_cls"] + seq["add_eos"])
        if all(c is not None and c > 0 for c in caps)
        else -1
    )
    record = {
        "method": parts[mods[0]].params["method"],
        "mudata": True,
        "modality_order": list(mods),
        "modalities": {
            m: {
                **{k: v for k, v in parts[m].params.items() if k != "version"},
                "gene_medians_source": parts[m].params.get("gene_medians", "none"),
                "range": [int(r) for r in ranges[m]],
                "n_features": len(names[m]),
            }
            for m in mods
        },
        "add_cls": seq["add_cls"],
        "add_eos": seq["add_eos"],
        "pad_value": seq["pad_value"],
        "max_length": total_cap,
        "batch_key": "",
        "gene_key": "var_names",
        "seed": seed,
        "min_gene_fraction": min_gene_fraction,
        "n_cells_dropped": n_dropped,
        "n_genes_matched": int(sum(parts[m].params["n_genes_matched"] for m in mods)),
        "n_cells_without_tokens": int(sum(parts[m].params["n_cells_without_tokens"] for m in mods)),
        "version": __version__,
    }
    for m in mods:  # the per-modality record holds the median source under its own key
        record["modalities"][m].pop("gene_medians", None)
    out = Tokenized(arrays=arrays, params=record, vocab=full_vocab, warnings=warnings)
    return out, cells


def join(
    parts: list[TokenArrays],
    mod_ids: list[int],
    *,
    cls_id: int,
    eos_id: int,
    pad_id: int,
    pad_value: float,
) -> TokenArrays:
    """Per cell: ``<cls>``, then each part's modality token and tokens, then ``<eos>``."""
    n = len(parts[0])
    head = int(cls_id >= 0)
    lengths = head + sum(p.lengths + 1 for p in parts) + int(eos_id >= 0)
    width = int(lengths.max())
    tokens = np.full((n, width), pad_id, dtype=np.int32)
    values = np.full((n, width), pad_value, dtype=np.float32)
    if head:
        tokens[:, 0] = cls_id
    cur = np.full(n, head, dtype=np.int64)
    rows = np.arange(n)
    for p, mid in zip(parts, mod_ids, strict=True):
        tokens[rows, cur] = mid
        cols = np.arange(p.tokens.shape[1])
        valid = cols[None, :] < p.lengths[:, None]
        target = cur[:, None] + 1 + cols[None, :]
        r = np.broadcast_to(rows[:, None], valid.shape)[valid]
        tokens[r, target[valid]] = p.tokens[valid]
        values[r, target[valid]] = p.values[valid]
        cur = cur + 1 + p.lengths
    if eos_id >= 0:
        tokens[rows, cur] = eos_id
    return TokenArrays(
        tokens=tokens,
        values=values,
        lengths=lengths,
        pad_id=int(pad_id),
        pad_value=float(pad_value),
        all_integer=all(p.all_integer for p in parts),
        max_value=max(p.max_value for p in parts),
    )


def write_mudata_tokens(mdata, tok: Tokenized, cells: np.ndarray, key: str) -> str:
    """Store ``tok`` (over ``cells``) in ``mdata.obsm``/``obs``/``uns``; others get padding."""
    k = layout(key)
    n, width = mdata.n_obs, tok.arrays.tokens.shape[1]
    tokens = np.full((n, width), tok.arrays.pad_id, dtype=np.int32)
    values = np.full((n, width), tok.arrays.pad_value, dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    tokens[cells], values[cells], lengths[cells] = (
        tok.arrays.tokens,
        tok.arrays.values,
        tok.arrays.lengths,
    )
    mdata.obsm[k["tokens"]] = tokens
    mdata.obsm[k["values"]] = values
    mdata.obs[k["n_tokens"]] = lengths
    mdata.uns[k["uns"]] = {"params": tok.params, "vocab": tok.vocab.to_json()}
    return (
        f"mdata.obsm[{k['tokens']!r}], obsm[{k['values']!r}], obs[{k['n_tokens']!r}], uns[{key!r}]"
    )


def model_tokens(mdata, model, *, key: str = "sct", modalities=None, min_gene_fraction=0.2):
    """The shared cells' arrays as ``model`` reads them (stored tokens when made for it)."""
    if modalities is None and stored_for(mdata, model, key):
        arrays = read_tokens(mdata, key, pad_id=model.vocab.pad_id)
        cells = np.flatnonzero(arrays.lengths > 0)
        return arrays.subset(cells), cells, True, []
    tok, cells = tokenize_mudata(
        mdata, vocab=model, modalities=modalities, min_gene_fraction=min_gene_fraction
    )
    return tok.arrays, cells, False, tok.warnings
