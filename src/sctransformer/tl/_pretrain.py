"""``sct.tl.pretrain``: train a transformer on the user's own cells."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._token_store import read_tokens, stored_params, stored_vocab
from ..models import Model
from ..nn.config import TransformerConfig
from ..tokenizers import GeneVocab
from ._common import resolve_device

_VALUE_INPUT = {"rank": "none", "bin": "bins", "adaptive_bin": "bins", "value": "continuous"}


def default_config(
    vocab: GeneVocab, params: dict, objective: str, width: int, **kw
) -> TransformerConfig:
    """A small encoder sized for the tokens at hand (override any field through ``kw``)."""
    method = params["method"]
    value_input = _VALUE_INPUT[method]
    heads = ["ntp"] if objective == "ntp" else ["mlm"]
    if value_input == "bins":
        heads.append("bins")
    elif value_input == "continuous":
        heads.append("value")
    cfg = {
        "vocab_size": len(vocab),
        "hidden_size": 128,
        "num_layers": 4,
        "num_heads": 4,
        "ffn_size": 256,
        "max_positions": width if method == "rank" else 0,
        "value_input": value_input,
        "n_value_bins": int(params.get("n_bins", 51)),
        "pad_token_id": vocab.pad_id,
        "heads": heads,
    }
    cfg.update(kw)
    return TransformerConfig(**cfg)


def pretrain(
    adata: AnnData,
    *,
    model=None,
    objective: Literal["mlm", "ntp", "generative"] = "mlm",
    method: Literal["rank", "bin", "adaptive_bin", "value"] = "rank",
    tokens_key: str = "sct",
    batch_key: str | None = None,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_steps: int | None = None,
    clip: float = 1.0,
    mask_prob: float = 0.15,
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    device: str = "auto",
    seed: int = 0,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 0,
    resume_from: str | None = None,
    distributed: Literal["ddp", "fsdp"] = "ddp",
    key_added: str = "sct_pretrain",
):
    """Pretrain a transformer on ``adata``'s cells and return it.

    Reads tokens from ``obsm`` (``tokens_key``); when absent, tokenizes first with ``method``
    (writing the tokens, as :func:`sctransformer.pp.tokenize` would). Trains with AdamW,
    linear warm-up and cosine decay, gradient clipping and length-grouped batches; every random
    choice is seeded by ``seed`` and the step, so runs are reproducible on CPU and resuming from
    a checkpoint gives the uninterrupted result. Under ``torchrun`` the same call trains with
    DistributedDataParallel (gloo on CPU, nccl on GPU), or with the model sharded over the
    processes (``distributed="fsdp"``).

    Parameters
    ----------
    adata
        Cells × genes.
    model
        ``None`` builds a small encoder (:func:`default_config`); a
        :class:`~sctransformer.nn.TransformerConfig` builds that architecture; a model (or its
        name/path) continues training it. Its vocabulary must be the tokens' vocabulary.
    objective
        ``"mlm"`` masked tokens (Geneformer, scBERT, scGPT); ``"ntp"`` next token (tGPT,
        scMulan; needs an ``"ntp"`` head); ``"generative"`` scGPT's generative attention mask.
    method
        Tokenization when ``adata`` has none yet.
    tokens_key
        Prefix of the token arrays in ``obsm``/``obs``/``uns``.
    batch_key
        ``obs`` column whose value becomes a ``<batch=…>`` condition token after ``<cls>``
        (scGPT-style), so the model can tell technical from biological variation. Used when
        tokenizing here; tokens already in ``obsm`` must have been made with the same
        ``batch_key``.
    epochs, max_steps, batch_size, lr, weight_decay, warmup_steps, clip, mask_prob
        Optimisation; ``warmup_steps`` defaults to 5% of the steps.
    precision
        Autocast precision. ``"auto"``: whichever of fp32 and bf16 (fp16 on GPUs without
        bf16) trains this model's layer shape faster on this machine, timed once per process;
        the choice is recorded in ``uns["sct_pretrain"]["params"]["precision"]``.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``.
    seed
        Seeds initialisation, batch order, masking and dropout.
    checkpoint_dir, checkpoint_every
        Write ``checkpoint_dir/step-N`` every N steps (model folder + optimiser state).
    resume_from
        A ``step-N`` folder to continue from.
    distributed
        Under ``torchrun``: ``"ddp"`` every process holds the whole model; ``"fsdp"`` each
        holds a shard of the parameters, gradients and optimiser state (FSDP2), for models
        that do not fit one device. Checkpoints and the returned model are whole either way
        (gathered; with ``"fsdp"`` the returned model is on the CPU).
    key_added
        ``uns`` key of the loss history and parameters.

    Returns
    -------
    The trained :class:`~sctransformer.models.Model` (eval mode). Writes
    ``uns["sct_pretrain"]``: ``{"params": ..., "history": ...}``; the params hold the model
    name, sha256, version, device and seed, the history is a DataFrame of step, epoch, loss,
    lr and n_predicted.
    """
    from .._mudata import is_mudata

    if is_mudata(adata):  # one sequence per cell over the modalities (see _mudata.py)
        kw = {k: v for k, v in locals().items() if k not in ("adata", "is_mudata", "method")}
        from .._mudata import pretrain_input, record_pretrain

        stand_in = pretrain_input(adata, tokens_key=tokens_key, model=model, method=method,
                                  batch_key=batch_key)  # fmt: skip
        trained = pretrain(stand_in, **kw)
        record_pretrain(adata, trained, stand_in, tokens_key=tokens_key, key_added=key_added)
        return trained

    from ..models import resolve
    from ..train.distributed import init_distributed_from_env, require_process_group
    from ..train.loop import train
    from ..train.options import TrainConfig, config_dict

    _validate.check_nonempty(adata)
    require_process_group(distributed)
    cfg = TrainConfig(
        objective=objective,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        clip=clip,
        mask_prob=mask_prob,
        seed=seed,
        precision=precision,
        checkpoint_every=checkpoint_every,
        checkpoint_dir=checkpoint_dir,
        distributed=distributed,
    )
    existing = None
    if model is not None and not isinstance(model, TransformerConfig):
        existing = resolve(model)
    _ensure_tokens(adata, existing, method=method, batch_key=batch_key, tokens_key=tokens_key)
    params = stored_params(adata, tokens_key)
    if params.get("method") == "sentence":
        raise ValueError("method='sentence' makes text for language models, not model tokens")
    vocab = stored_vocab(adata, tokens_key)
    data = read_tokens(adata, tokens_key, pad_id=vocab.pad_id)
    if objective == "generative" or objective == "mlm":
        vocab.mask_id  # noqa: B018 - raises a clear error when the vocabulary has no <mask>

    net = _network(
        existing, model, vocab, params, objective, data, seed=seed, tokens_key=tokens_key
    )
    model_out = _card(existing, net, vocab, params, objective, adata)
    init_distributed_from_env()
    dev = resolve_device(device)
    # precision="auto" is settled by train(): the faster of fp32 and bf16, timed for this
    # model's shape on this machine, recorded in the params below
    cap = int(params.get("max_length", -1))
    cut = int((data.lengths >= cap).sum()) if cap > 0 else None  # cells filling max_length
    start = logg.info(f"pretraining ({objective}) on {adata.n_obs} cells")
    history = train(
        net,
        data,
        cfg,
        is_gene=vocab.is_gene,
        mask_id=vocab.mask_id if "mlm" in net.heads else 0,
        device=str(dev),
        resume_from=resume_from,
        card=model_out,
        max_length=cap if cap > 0 else None,
        n_truncated=cut,
    )
    adata.uns[key_added] = {
        "params": model_out.record(device=dev, **config_dict(cfg)),
        "history": pd.DataFrame(history),
    }
    logg.info("    finished", time=start, deep=f"added uns[{key_added!r}]")
    return model_out


def _ensure_tokens(adata, existing, *, method, batch_key, tokens_key) -> None:
    """Tokenize ``adata`` (with the model's vocabulary when there is one) unless tokens are
    stored already, which must then have been made with the same ``batch_key``.
    """
    if f"{tokens_key}_tokens" not in adata.obsm:
        from ..pp import tokenize

        if existing is not None:
            tokenize(adata, vocab=existing, batch_key=batch_key, key_added=tokens_key)
        else:
            tokenize(adata, method=method, batch_key=batch_key, key_added=tokens_key)
    elif batch_key is not None:
        made_with = adata.uns.get(tokens_key, {}).get("params", {}).get("batch_key", "")
        if made_with != batch_key:
            raise ValueError(
                f"obsm['{tokens_key}_tokens'] was made with batch_key={made_with or None!r}, "
                f"not {batch_key!r}; re-run sct.pp.tokenize(adata, ..., batch_key={batch_key!r})"
            )


def _network(existing, model, vocab, params, objective, data, *, seed, tokens_key):
    """The module to train: the given model's (its vocabulary must be the tokens'), or a new
    one, seeded, from ``model`` (a config) or the default; checked against the tokens.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if existing is not None:
            net = existing.module
            if existing.vocab != vocab:
                raise ValueError(
                    "the model's vocabulary differs from the tokens' vocabulary; tokenize with "
                    f"sct.pp.tokenize(adata, vocab=model, key_added={tokens_key!r}) first"
                )
        else:
            from ..nn.model import CellTransformer

            config = model or default_config(vocab, params, objective, data.tokens.shape[1])
            if config.vocab_size != len(vocab):
                raise ValueError(
                    f"config.vocab_size={config.vocab_size} but the vocabulary has {len(vocab)} "
                    "tokens; set vocab_size=len(vocab)"
                )
            net = CellTransformer(config)
    if objective == "ntp" and "ntp" not in net.heads:
        raise ValueError("objective='ntp' needs a model with an 'ntp' head (config heads=['ntp'])")
    if net.config.max_positions and data.tokens.shape[1] > net.config.max_positions:
        raise ValueError(
            f"cells have up to {data.tokens.shape[1]} tokens but the model has "
            f"max_positions={net.config.max_positions}; tokenize with max_length<="
            f"{net.config.max_positions}"
        )
    return net


def _card(existing, net, vocab, params, objective, adata) -> Model:
    """The returned model: the network, the tokens' vocabulary and settings, and a card."""
    meta = dict(existing.metadata) if existing is not None else {}
    meta.pop("weights_sha256", None)  # the weights change
    return Model(
        net,
        vocab=vocab,
        tokenize_params={
            k: v
            for k, v in params.items()
            if k not in ("version", "n_genes_matched", "n_genes_merged")
        },
        metadata={
            **meta,
            "objective": objective,
            "training_data": f"{adata.n_obs} cells × {adata.n_vars} genes",
        },
    )
