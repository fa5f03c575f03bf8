"""MuData ↔ token arrays: one sequence per cell over several modalities.

A cell's sequence is ``<cls>``, then for each modality in a fixed order its modality token
``<mod=NAME>`` followed by that modality's tokens (encoded as :func:`sctransformer.pp.tokenize`
encodes one AnnData), then ``<eos>`` when asked. Each modality's features take their own range
of the vocabulary; a feature name that an earlier modality already uses is prefixed with the
modality (``"prot:CD4"`` next to the RNA gene ``"CD4"``), so the two never share a token.

Only cells present in every modality used get a sequence. The others are dropped with a
warning: their rows of the token arrays are padding with ``n_tokens`` 0 and their embedding
rows are NaN. Nothing is written before every check has passed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _validate
from ._tokens import OPTIONAL, Tokenized, layout, read_tokens, stored_for, tokenize_arrays
from ._version import __version__
from .tokenizers import GeneVocab, TokenArrays

# options that may be given per modality as a {modality: value} mapping
PER_MODALITY = (*OPTIONAL, "layer", "gene_key", "gene_medians", "total_key")
_SEQUENCE = ("add_cls", "add_eos", "pad_value")  # options of the whole sequence, not a modality


def is_mudata(obj) -> bool:
    """Whether ``obj`` is a :class:`mudata.MuData` (without importing mudata when unused)."""
    if "mudata" not in sys.modules:
        return False
    from mudata import MuData

    return isinstance(obj, MuData)


def _modalities(mdata, modalities, known: list[str] | None) -> list[str]:
    have = list(mdata.mod)
    if modalities is None:
        chosen = have
    else:
        chosen = [str(m) for m in ([modalities] if isinstance(modalities, str) else modalities)]
        missing = [m for m in chosen if m not in have]
        if missing:
            raise ValueError(
                f"modalities {missing} are not in the MuData (it has {have}); pass "
                f"modalities= naming some of {have}"
            )
    if known is not None:
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise ValueError(
                f"the model was trained on modalities {known}; the MuData's {unknown} are not "
                f"among them: embed a MuData of the modalities it knows, e.g. "
                f"md.MuData({{m: mdata[m] for m in {[m for m in chosen if m in known]}}})"
            )
        chosen = [m for m in known if m in chosen]  # the model's order
    if not chosen:
        raise ValueError(
            f"no modality to tokenize: the MuData has {have}"
            + (f", the model knows {known}" if known is not None else "")
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"modalities {chosen} name a modality twice")
    return chosen


def shared_cells(mdata, mods: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Positions (in ``mdata.obs``) of the cells every modality has, and each modality's row
    of those cells. Raises when no cell is shared.
    """
    names = pd.Index(mdata.obs_names)
    if not names.is_unique:
        raise ValueError(
            "the MuData's obs_names are not unique; run mdata.obs_names_make_unique() first"
        )
    present = np.ones(len(names), dtype=bool)
    where: dict[str, np.ndarray] = {}
    for m in mods:
        pos = names.get_indexer(pd.Index(mdata.mod[m].obs_names))
        if (pos < 0).any() or not pd.Index(mdata.mod[m].obs_names).is_unique:
            raise ValueError(
                f"mdata[{m!r}].obs_names are not all unique cells of the MuData; run "
                "mdata.update() after editing a modality"
            )
        row = np.full(len(names), -1, dtype=np.int64)
        row[pos] = np.arange(len(pos))
        where[m] = row
        present &= row >= 0
    cells = np.flatnonzero(present)
    if len(cells) == 0:
        sizes = ", ".join(f"{m}: {mdata.mod[m].n_obs} cells" for m in mods)
        raise ValueError(
            f"no cell is in every modality ({sizes}; 0 shared): a cell's sequence joins its "
            "modalities, so their obs_names must name the same cells. Check the barcodes "
            "(e.g. a suffix added to one modality), or pass modalities= with fewer modalities"
        )
    return cells, {m: where[m][cells] for m in mods}


def _option(value, mod: str, mods):
    """``value[mod]`` when ``value`` maps modality names to values, else ``value`` itself
    (a gene → median mapping is not keyed by modalities).
    """
    if isinstance(value, Mapping) and value and set(map(str, value)) <= set(mods):
        return value.get(mod)
    return value


def _feature_names(adata: AnnData, gene_key: str | None) -> list[str]:
    if gene_key is None:
        return [str(g) for g in adata.var_names]
    _validate.check_key(adata.var, gene_key, where="adata.var")
    return [str(g) for g in adata.var[gene_key]]


def _fresh_vocab(names: dict[str, list[str]], mods: list[str]):
    """A vocabulary over every modality's features; colliding names prefixed ``"mod:"``."""
    seen: set[str] = set()
    mapped: dict[str, list[str]] = {}
    for m in mods:
        out = []
        for g in names[m]:
            out.append(f"{m}:{g}" if g in seen else g)
        seen.update(names[m])
        mapped[m] = out
    everything = [g for m in mods for g in mapped[m]]
    vocab = GeneVocab.from_genes(everything, conditions={"mod": mods})
    ranges = {}
    for m in mods:
        ids = vocab.encode_genes(mapped[m])
        ranges[m] = [int(ids.min()), int(ids.max()) + 1]
    return vocab, mapped, ranges


def _model_names(vocab: GeneVocab, names: list[str], mod: str, rng) -> list[str]:
    """Names as the model's vocabulary knows them, restricted to the modality's range."""
    lo, hi = rng
    out = []
    for g in names:
        pick = None
        for cand in (f"{mod}:{g}", g):
            if cand in vocab:
                i = vocab[cand]
                if lo <= i < hi:
                    pick = cand
                    break
        out.append(pick if pick is not None else f"\x00{mod}:{g}")  # in no vocabulary
    return out


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

    Returns the :class:`~sctransformer._tokens.Tokenized` result over the shared cells and
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
    mods = _modalities(mdata, modalities, known)
    for m in mods:
        _validate.check_nonempty(mdata.mod[m])
    cells, rows = shared_cells(mdata, mods)

    names = {
        m: _feature_names(mdata.mod[m], _option(options.get("gene_key"), m, mdata.mod))
        for m in mods
    }
    if model is None:
        full_vocab, mapped, ranges = _fresh_vocab(names, mods)
    else:
        full_vocab = model.vocab
        ranges = {m: mod_params[m]["range"] for m in mods}
        mapped = {m: _model_names(full_vocab, names[m], m, ranges[m]) for m in mods}
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
        layer = _option(options.get("layer"), m, mdata.mod)
        saved = dict(mod_params.get(m, {}))
        explicit = {
            k: _option(options.get(k), m, mdata.mod) for k in OPTIONAL if k not in _SEQUENCE
        }  # fmt: skip
        for k in explicit:
            if explicit[k] is None and k in saved:
                explicit[k] = saved[k]
        if explicit.get("max_length") is not None and explicit["max_length"] < 0:
            explicit["max_length"] = None
        sub_x = _rows(mod, layer, rows[m])
        sub = AnnData(
            X=sub_x,
            obs=pd.DataFrame(index=pd.Index(mdata.obs_names[cells]).astype(str)),
            var=pd.DataFrame(index=pd.Index(mapped[m]).astype(str)),
        )
        gm = _option(options.get("gene_medians"), m, mdata.mod)
        total_key = _option(options.get("total_key"), m, mdata.mod)
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
        tok.params["gene_key"] = _option(options.get("gene_key"), m, mdata.mod) or "var_names"

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


def _copy(mdata):
    import warnings

    with warnings.catch_warnings():
        # features named alike in two modalities (a gene and its protein) are expected here
        warnings.filterwarnings("ignore", message="var_names are not unique", category=UserWarning)
        # mudata 0.3's copy() re-runs update(), which fails on integer obsm arrays (it writes
        # NaN into them when cells are reordered): set them aside and copy them ourselves
        ints = {k: v for k, v in mdata.obsm.items() if np.asarray(v).dtype.kind in "iu"}
        for k in ints:
            del mdata.obsm[k]
        try:
            out = mdata.copy()
        finally:
            for k, v in ints.items():
                mdata.obsm[k] = v
        for k, v in ints.items():
            out.obsm[k] = np.array(v)
        return out


def _rows(adata: AnnData, layer: str | None, rows: np.ndarray):
    from ._data import expression_matrix

    x = expression_matrix(adata, layer)
    if adata.isbacked or np.array_equal(rows, np.arange(adata.n_obs)):
        return x if not adata.isbacked else x[np.sort(rows)][np.argsort(np.argsort(rows))]
    return x[rows]


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


def tokenize(mdata, *, key_added: str = "sct", copy: bool = False, **kw):
    """:func:`sctransformer.pp.tokenize` for a MuData (see there)."""
    from . import logging as logg

    start = logg.info(f"tokenizing a MuData of {mdata.n_obs} cells over {list(mdata.mod)}")
    tok, cells = tokenize_mudata(mdata, **kw)
    for message in tok.warnings:
        _validate.warn(message)
    mdata = _copy(mdata) if copy else mdata
    written = write_mudata_tokens(mdata, tok, cells, key_added)
    logg.info("    finished", time=start, deep=f"added {written}")
    return mdata if copy else None


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


def embed_cells(
    mdata,
    model,
    *,
    pooling=None,
    layer=None,
    batch_size: int = 32,
    precision: str = "auto",
    device: str = "auto",
    min_gene_fraction: float = 0.2,
    seed: int = 0,
    tokens_key: str = "sct",
    key_added: str = "X_sct",
    modalities=None,
    copy: bool = False,
):
    """:func:`sctransformer.tl.embed_cells` for a MuData: ``mdata.obsm[key_added]``."""
    from . import logging as logg
    from .models import resolve
    from .tl._common import check_positive, resolve_device
    from .train import infer

    model = resolve(model)
    model.check()
    pooling, layer = model.pooling(pooling), model.layer(layer)
    check_positive(batch_size=batch_size)
    arrays, cells, reused, warnings = model_tokens(
        mdata, model, key=tokens_key, modalities=modalities, min_gene_fraction=min_gene_fraction
    )
    if model.max_length and arrays.tokens.shape[1] > model.max_length:
        raise ValueError(
            f"cells have up to {arrays.tokens.shape[1]} tokens but the model reads at most "
            f"{model.max_length}; tokenize with smaller per-modality max_length"
        )
    for message in warnings:
        _validate.warn(message)
    dev = resolve_device(device)
    model.to(dev).eval()
    start = logg.info(f"embedding {len(cells)} cells of a MuData")
    bar = logg.progress(total=len(cells), desc="embed", unit="cells")
    vec = infer.pooled(
        model.module,
        arrays,
        pooling=pooling,
        layer=layer,
        is_gene=model.vocab.is_gene,
        batch_size=batch_size,
        device=dev,
        precision=precision,
        progress=bar,
    )
    bar.close()
    emb = np.full((mdata.n_obs, vec.shape[1]), np.nan, dtype=np.float32)
    emb[cells] = vec
    mdata = _copy(mdata) if copy else mdata
    mdata.obsm[key_added] = emb
    uns_key = f"{key_added.removeprefix('X_')}_embed"
    mdata.uns[uns_key] = {
        "params": model.record(
            device=dev,
            seed=seed,
            pooling=pooling,
            layer=layer,
            precision=precision,
            batch_size=batch_size,
            tokens_reused=reused,
            min_gene_fraction=min_gene_fraction,
            modalities=list(model.tokenize_params.get("modality_order", [])),
            n_cells_embedded=len(cells),
        )
    }
    logg.info("    finished", time=start, deep=f"added obsm[{key_added!r}], uns[{uns_key!r}]")
    return mdata if copy else None


def pretrain(mdata, *, tokens_key: str = "sct", key_added: str = "sct_pretrain", **kw):
    """:func:`sctransformer.tl.pretrain` on a MuData's shared cells (tokenized here if needed)."""
    from .tl._pretrain import pretrain as pretrain_adata

    if kw.get("batch_key") is not None:
        raise ValueError("batch_key is not supported for a MuData yet; drop batch_key")
    existing = kw.get("model")
    k = layout(tokens_key)
    if k["tokens"] not in mdata.obsm:
        from .models import resolve
        from .nn.config import TransformerConfig

        vocab = None
        if existing is not None and not isinstance(existing, TransformerConfig):
            vocab = resolve(existing)
        tok, cells = tokenize_mudata(
            mdata, vocab=vocab, method=None if vocab is not None else kw.get("method", "rank")
        )
        for message in tok.warnings:
            _validate.warn(message)
        write_mudata_tokens(mdata, tok, cells, tokens_key)
    elif not mdata.uns.get(tokens_key, {}).get("params", {}).get("mudata", False):
        raise ValueError(
            f"mdata.obsm[{k['tokens']!r}] was not made from the MuData's modalities; re-run "
            "sct.pp.tokenize(mdata, ...) on the MuData"
        )
    lengths = np.asarray(mdata.obs[k["n_tokens"]])
    cells = np.flatnonzero(lengths > 0)
    stand_in = AnnData(
        obs=pd.DataFrame(index=pd.Index(mdata.obs_names[cells]).astype(str)),
        var=pd.DataFrame(index=["tokens"]),  # the tokens are all it reads
    )
    stand_in.obsm[k["tokens"]] = np.asarray(mdata.obsm[k["tokens"]])[cells]
    stand_in.obsm[k["values"]] = np.asarray(mdata.obsm[k["values"]])[cells]
    stand_in.obs[k["n_tokens"]] = lengths[cells]
    stand_in.uns[tokens_key] = mdata.uns[tokens_key]
    kw.pop("method", None)
    model = pretrain_adata(stand_in, tokens_key=tokens_key, key_added=key_added, **kw)
    mods = mdata.uns[tokens_key]["params"]["modality_order"]
    model.metadata["training_data"] = (
        f"{len(cells)} cells of a MuData ({', '.join(f'{m}: {mdata.mod[m].n_vars} features' for m in mods)})"
    )
    mdata.uns[key_added] = stand_in.uns[key_added]
    return model
