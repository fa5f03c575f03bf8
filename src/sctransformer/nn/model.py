"""The cell transformer: embeddings, encoder layers and heads, with a padded and a packed path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .config import TransformerConfig
from .embeddings import CellEmbeddings
from .heads import BinHead, ClassifierHead, MaskedTokenHead, NextTokenHead, ValueDecoder
from .layers import EncoderLayer, _layer_norm
from .masks import padding_mask_from_lengths
from .precision import autocast_context, resolve_precision
from .varlen import Workspace

__all__ = ["CellTransformer", "PackedOutput", "TransformerOutput", "pool"]

Objective = Literal["mlm", "ntp", "generative"]


@dataclass
class TransformerOutput:
    """Output of :meth:`CellTransformer.forward`.

    Attributes
    ----------
    last_hidden_state
        ``[B, L, d]``.
    padding_mask
        ``[B, L]`` boolean, ``True`` for real tokens (as used by the model).
    hidden_states
        When requested: the embedding output followed by each layer's output (``num_layers + 1``
        tensors ``[B, L, d]``), as in ``transformers``.
    attentions
        When requested: one ``[B, H, L, L]`` float32 tensor of attention probabilities per layer.
    """

    last_hidden_state: torch.Tensor
    padding_mask: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PackedOutput:
    """Output of :meth:`CellTransformer.encode`: real tokens of all cells back to back.

    Attributes
    ----------
    hidden
        ``[total_tokens, d]`` float32; cell ``i`` owns rows ``cu_seqlens[i]:cu_seqlens[i + 1]``.
    cu_seqlens
        ``[B + 1]`` cumulative token counts.
    padding_mask
        ``[B, L]`` boolean layout of the padded input, ``True`` for real tokens.
    """

    hidden: torch.Tensor
    cu_seqlens: torch.Tensor
    padding_mask: torch.Tensor

    def to_padded(self) -> torch.Tensor:
        """Hidden states in the padded input layout ``[B, L, d]`` (zeros at padding)."""
        b, length = self.padding_mask.shape
        out = self.hidden.new_zeros(b, length, self.hidden.shape[-1])
        out[self.padding_mask] = self.hidden
        return out

    def pool(self, mode: Literal["cls", "mean"] = "cls", mask: torch.Tensor | None = None):
        """Cell vectors ``[B, d]``; see :func:`pool` (``mask`` in the padded ``[B, L]`` layout)."""
        selected = self.padding_mask if mask is None else (mask & self.padding_mask)
        return pool(self.to_padded(), selected, mode)


def pool(
    hidden: torch.Tensor, mask: torch.Tensor, mode: Literal["cls", "mean"] = "cls"
) -> torch.Tensor:
    """Pool token states ``[B, L, d]`` into cell vectors ``[B, d]``.

    Parameters
    ----------
    hidden
        Token states, ``[B, L, d]``.
    mask
        Boolean ``[B, L]``. ``"mean"`` averages over the positions it selects; callers decide
        whether special tokens (CLS, batch tokens) count by leaving them in or out. ``"cls"``
        takes the first selected position of each cell (the CLS token when the cell starts with
        one).
    mode
        ``"cls"`` or ``"mean"``.

    Returns
    -------
    ``[B, d]`` tensor; a cell with no selected position gets zeros under ``"mean"``.
    """
    if mode == "cls":
        first = mask.int().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if mode == "mean":
        w = mask.to(hidden.dtype)[..., None]
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1)
    raise ValueError(f"pooling mode {mode!r} is not supported; use 'cls' or 'mean'")


class CellTransformer(nn.Module):
    """Encoder transformer over gene tokens (Geneformer, scBERT, scGPT, tGPT shapes).

    Parameters
    ----------
    config
        The architecture.

    Attributes
    ----------
    embeddings, layers, final_norm, heads
        Submodules; ``final_norm`` exists only for ``norm="pre"``; ``heads`` holds the heads named
        in ``config.heads`` (``"mlm"``, ``"bins"``, ``"value"``, ``"ntp"``) and ``"classifier"``
        when ``config.num_classes > 0``.
    vocab, tokenize_params, metadata
        Plain attributes for the vocabulary object, the tokenizer settings and free-form metadata;
        set by the code that builds or loads the model (this module never reads them).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = CellEmbeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.final_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            if config.norm == "pre"
            else None
        )
        heads = nn.ModuleDict()
        for name in config.heads:
            if name == "mlm":
                heads[name] = MaskedTokenHead(config, self.embeddings.token)
            elif name == "bins":
                heads[name] = BinHead(config)
            elif name == "value":
                heads[name] = ValueDecoder(config)
            elif name == "ntp":
                heads[name] = NextTokenHead(config)
        if config.num_classes:
            heads["classifier"] = ClassifierHead(config)
        self.heads = heads
        self.vocab = None
        self.tokenize_params: dict = {}
        self.metadata: dict = {}
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _padding_mask(self, tokens, lengths, padding_mask) -> torch.Tensor:
        if lengths is not None and padding_mask is not None:
            raise ValueError("pass either lengths or padding_mask, not both")
        if lengths is not None:
            return padding_mask_from_lengths(
                torch.as_tensor(lengths, device=tokens.device), tokens.shape[1]
            )
        if padding_mask is not None:
            if padding_mask.shape != tokens.shape:
                raise ValueError(
                    f"padding_mask has shape {tuple(padding_mask.shape)}, "
                    f"tokens {tuple(tokens.shape)}"
                )
            return padding_mask.bool()
        return tokens != self.config.pad_token_id

    @staticmethod
    def _check_objective(objective: str, gen_mask) -> None:
        if objective not in ("mlm", "ntp", "generative"):
            raise ValueError(
                f"objective={objective!r} is not supported; use 'mlm', 'ntp' or 'generative'"
            )
        if objective == "generative" and gen_mask is None:
            raise ValueError('objective="generative" needs gen_mask (True for genes to generate)')

    def forward(
        self,
        tokens: torch.Tensor,
        values: torch.Tensor | None = None,
        *,
        lengths: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        objective: Objective = "mlm",
        gen_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        backend: str | None = None,
    ) -> TransformerOutput:
        """Run the encoder on a padded batch.

        Parameters
        ----------
        tokens
            Token ids, ``LongTensor [B, L]``.
        values
            Expression values ``[B, L]`` when ``config.value_input`` is ``"bins"`` (bin indices)
            or ``"continuous"``; ``None`` otherwise.
        lengths
            Real tokens per cell (right padding). Alternative to ``padding_mask``.
        padding_mask
            Boolean ``[B, L]``, ``True`` for real tokens. With neither this nor ``lengths``,
            tokens equal to ``config.pad_token_id`` are padding.
        objective
            ``"mlm"``: bidirectional; ``"ntp"``: causal; ``"generative"``: scGPT's mask, which
            needs ``gen_mask`` (boolean ``[B, L]``, ``True`` for genes to generate).
        gen_mask
            See ``objective``.
        output_hidden_states
            Also return the embedding output and every layer's output.
        output_attentions
            Also return per-layer attention probabilities (uses the math backend).
        backend
            Attention backend; ``None`` uses ``config.attention_backend``.

        Returns
        -------
        :class:`TransformerOutput`. Heads are applied separately, e.g.
        ``model.heads["mlm"](out.last_hidden_state)``.
        """
        self._check_objective(objective, gen_mask)
        mask_pad = self._padding_mask(tokens, lengths, padding_mask)
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        x = self.embeddings(tokens, values, positions)
        explicit = None
        if objective == "generative":
            from .masks import generative_mask

            explicit = generative_mask(mask_pad, gen_mask.bool())
        backend = backend or self.config.attention_backend
        hidden = [x] if output_hidden_states else None
        probs_all = [] if output_attentions else None
        for layer in self.layers:
            x, probs = layer(
                x,
                mask=explicit,
                key_padding=mask_pad,
                causal=objective == "ntp",
                backend=backend,
                need_weights=output_attentions,
            )
            if hidden is not None:
                hidden.append(x)
            if probs_all is not None:
                probs_all.append(probs)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return TransformerOutput(
            last_hidden_state=x,
            padding_mask=mask_pad,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(probs_all) if probs_all is not None else None,
        )

    @torch.no_grad()
    def encode(
        self,
        tokens: torch.Tensor,
        values: torch.Tensor | None = None,
        *,
        lengths: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        objective: Objective = "mlm",
        gen_mask: torch.Tensor | None = None,
        precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32",
        backend: str | None = None,
        output_layer: int = -1,
    ) -> PackedOutput:
        """Fast inference: the same numbers as :meth:`forward`, no compute spent on padding.

        The real tokens of all cells are packed into one ``[total_tokens, d]`` matrix, so every
        projection, LayerNorm and feed-forward runs as one large GEMM without padding; attention
        runs cell by cell (or in one block-diagonal xformers call on CUDA). In reduced precision
        the weights are cast once per call instead of per op.

        Parameters
        ----------
        tokens, values, lengths, padding_mask, objective, gen_mask, backend
            As in :meth:`forward`.
        precision
            ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA) or ``"auto"`` (bf16 where one layer of this
            model's shape at this batch's length is measured faster, once per process); see
            :func:`~sctransformer.nn.precision.resolve_precision`.
            A loop over many batches should resolve ``"auto"`` once
            (:func:`~sctransformer.nn.precision.choose_precision`) and pass the name, so that
            batches of different lengths run at one precision.
        output_layer
            Return this layer's output: -1 the last (default), -2 the one before (Geneformer
            V1's embedding layer), or 1-based from the bottom. Layers above it are not run.
            The final LayerNorm of pre-LN models applies only to the last layer, matching
            ``hidden_states`` of :meth:`forward`.

        Returns
        -------
        :class:`PackedOutput` (float32); use ``.pool("cls" | "mean")`` for cell vectors and
        ``.to_padded()`` for the ``[B, L, d]`` layout.
        """
        self._check_objective(objective, gen_mask)
        if self.training:
            raise RuntimeError("encode() is for inference; call model.eval() first")
        n_layers = len(self.layers)
        if output_layer == 0 or not -n_layers <= output_layer <= n_layers:
            raise ValueError(
                f"output_layer={output_layer} is out of range for {n_layers} layers; use "
                f"1..{n_layers} or -1..-{n_layers}"
            )
        n_run = output_layer if output_layer > 0 else n_layers + 1 + output_layer
        mask_pad = self._padding_mask(tokens, lengths, padding_mask)
        counts = mask_pad.sum(1)
        if counts.numel() and int(counts.min()) == 0:
            empty = torch.nonzero(counts == 0).flatten().tolist()[:5]
            raise ValueError(f"cells {empty} have no tokens; drop them before encoding")
        cu = torch.zeros(len(counts) + 1, dtype=torch.long, device=tokens.device)
        cu[1:] = counts.cumsum(0)
        cu_list = cu.tolist()
        # column index of each real token = its position, exactly as in the padded path
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)[mask_pad]
        packed_values = values[mask_pad] if values is not None else None
        packed_gen = gen_mask.bool()[mask_pad] if objective == "generative" else None
        dtype = resolve_precision(
            precision, tokens.device, config=self.config, length=tokens.shape[1]
        )
        with autocast_context("fp32", tokens.device):  # outer autocast must not recast our ops
            x = self.embeddings(tokens[mask_pad], packed_values, positions)
            x = x.to(dtype)
            backend = backend or self.config.attention_backend
            workspace = Workspace()
            for layer in self.layers[:n_run]:
                x = layer.forward_packed(
                    x,
                    cu_list,
                    causal=objective == "ntp",
                    gen_mask=packed_gen,
                    backend=backend,
                    dtype=dtype,
                    workspace=workspace,
                )
            if self.final_norm is not None and n_run == n_layers:
                x = _layer_norm(x, self.final_norm, dtype)
        return PackedOutput(hidden=x.float(), cu_seqlens=cu, padding_mask=mask_pad)
