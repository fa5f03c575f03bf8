"""Pretraining objectives through sct.tl.pretrain: losses fall, the right masks reach the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sctransformer as sct
from _train_utils import loss_drop, tiny_config, tokenized_pbmc, vocab_of
from sctransformer.train.optim import schedule


@pytest.fixture(scope="module")
def pbmc64():
    return tokenized_pbmc(max_length=64)


class _Recorder:
    """Forward hook that keeps the inputs of every training forward pass."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        if module.training:
            tokens = args[0] if args else kwargs["tokens"]
            self.calls.append(
                {"tokens": tokens.detach().clone(), **{k: v for k, v in kwargs.items()}}
            )


def _pretrain_recorded(adata, config, **kw):
    """pretrain() on a model built here, so a hook can watch its forward passes."""
    from sctransformer.nn import CellTransformer

    torch.manual_seed(0)
    model = CellTransformer(config)
    model.vocab = vocab_of(adata)
    rec = _Recorder(model)
    sct.tl.pretrain(adata, model=model, device="cpu", precision="fp32", **kw)
    rec.handle.remove()
    return model, rec.calls


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mlm", "ntp", "generative"])
def test_loss_falls_on_pbmc(pbmc64, objective):
    adata = pbmc64.copy()
    vocab = vocab_of(adata)
    config = tiny_config(
        vocab, 64, num_layers=1, num_heads=2, heads=["ntp"] if objective == "ntp" else ["mlm"]
    )
    sct.tl.pretrain(
        adata,
        model=config,
        objective=objective,
        max_steps=40,
        epochs=3,
        batch_size=32,
        lr=1e-2,
        seed=0,
        device="cpu",
        precision="fp32",
    )
    hist = adata.uns["sct_pretrain"]["history"]
    assert list(hist["step"]) == list(range(1, 41))
    first, last = loss_drop(hist)
    print(f"{objective}: loss {first:.3f} -> {last:.3f}")
    # chance level is log(vocabulary size); training must get clearly below where it started
    assert first == pytest.approx(np.log(len(vocab)), abs=0.3)
    assert last < first - 0.2, (first, last)
    params = adata.uns["sct_pretrain"]["params"]
    assert params["objective"] == objective
    assert all(v is not None for v in params.values())


def test_mlm_masks_gene_positions_only(pbmc64):
    adata = pbmc64[:128].copy()
    vocab = vocab_of(adata)
    _, calls = _pretrain_recorded(
        adata, tiny_config(vocab, 64), objective="mlm", max_steps=4, batch_size=32, mask_prob=0.15
    )
    assert len(calls) == 4
    originals = np.asarray(adata.obsm["sct_tokens"])
    n_mask = n_gene = n_changed = 0
    for call in calls:
        assert call["objective"] == "mlm"
        tokens, pad = call["tokens"], call["padding_mask"]
        # special tokens and padding are never corrupted: <cls> stays first, padding stays pad
        assert (tokens[:, 0] == vocab.cls_id).all()
        assert (tokens[~pad] == vocab.pad_id).all()
        gene = pad.clone()
        gene[:, 0] = False
        n_gene += int(gene.sum())
        n_mask += int((tokens == vocab.mask_id).sum())
        # find the uncorrupted cells by their padded length and count changed positions
        rows = {
            tuple(r[: int(p.sum())])
            for r, p in zip(originals, originals != vocab.pad_id, strict=True)
        }
        n_changed += sum(
            tuple(t[: int(p.sum())].tolist()) not in rows for t, p in zip(tokens, pad, strict=True)
        )
    # 15% chosen, 80% of those become <mask>: about 12% of gene positions
    assert 0.08 < n_mask / n_gene < 0.16, n_mask / n_gene
    assert n_changed == sum(len(c["tokens"]) for c in calls)  # every cell was corrupted


def test_ntp_training_uses_causal_mask(pbmc64):
    adata = pbmc64[:64].copy()
    vocab = vocab_of(adata)
    model, calls = _pretrain_recorded(
        adata, tiny_config(vocab, 64, heads=["ntp"]), objective="ntp", max_steps=2, batch_size=32
    )
    assert [c["objective"] for c in calls] == ["ntp", "ntp"]
    # the mask the training step asked for really hides the future: changing the tokens after
    # position k leaves the outputs up to k unchanged
    tokens, pad = calls[-1]["tokens"], calls[-1]["padding_mask"]
    k = 10
    changed = tokens.clone()
    changed[:, k + 1 :][pad[:, k + 1 :]] = vocab.encode_genes(vocab.genes[:1])[0]
    model.train()  # as during training (no dropout in this config)
    with torch.no_grad():
        a = model(tokens, padding_mask=pad, objective=calls[-1]["objective"]).last_hidden_state
        b = model(changed, padding_mask=pad, objective=calls[-1]["objective"]).last_hidden_state
    model.eval()
    torch.testing.assert_close(a[:, : k + 1], b[:, : k + 1], atol=1e-5, rtol=0)
    assert (a[:, k + 1 :] - b[:, k + 1 :]).abs().max() > 1e-3


def test_generative_training_uses_generative_mask(pbmc64):
    adata = pbmc64[:64].copy()
    vocab = vocab_of(adata)
    model, calls = _pretrain_recorded(
        adata, tiny_config(vocab, 64), objective="generative", max_steps=2, batch_size=32
    )
    assert [c["objective"] for c in calls] == ["generative", "generative"]
    call = calls[-1]
    tokens, pad, gen = call["tokens"], call["padding_mask"], call["gen_mask"]
    # the positions to generate are exactly the hidden ones, inside the cells, never <cls>
    assert gen.any()
    assert torch.equal(gen, tokens == vocab.mask_id)
    assert not (gen & ~pad).any() and not gen[:, 0].any()
    # known genes never read the genes to be generated: changing those leaves them unchanged
    changed = tokens.clone()
    changed[gen] = vocab.encode_genes(vocab.genes[:1])[0]
    with torch.no_grad():
        a = model(tokens, padding_mask=pad, objective="generative", gen_mask=gen)
        b = model(changed, padding_mask=pad, objective="generative", gen_mask=gen)
    known = pad & ~gen
    torch.testing.assert_close(
        a.last_hidden_state[known], b.last_hidden_state[known], atol=1e-5, rtol=0
    )


def test_history_and_schedule(pbmc64):
    adata = pbmc64[:96].copy()
    vocab = vocab_of(adata)
    sct.tl.pretrain(
        adata,
        model=tiny_config(vocab, 64, num_layers=1),
        max_steps=6,
        batch_size=16,
        lr=1e-3,
        warmup_steps=2,
        device="cpu",
    )
    hist = adata.uns["sct_pretrain"]["history"]
    assert list(hist.columns) == ["step", "epoch", "loss", "lr", "n_predicted"]
    # the recorded lr is the one used in that step: warm-up, then cosine decay
    expected = [1e-3 * schedule(s, 6, 2) for s in range(6)]
    np.testing.assert_allclose(hist["lr"], expected, rtol=1e-9)
    assert (hist["n_predicted"] > 0).all()


def test_pretrain_bad_input_leaves_adata_unchanged(pbmc64):
    adata = pbmc64[:32].copy()
    before = (set(adata.obsm), set(adata.uns))
    vocab = vocab_of(adata)
    with pytest.raises(ValueError, match="objective"):
        sct.tl.pretrain(adata, objective="clm")
    with pytest.raises(ValueError, match="ntp"):
        sct.tl.pretrain(adata, model=tiny_config(vocab, 64), objective="ntp", max_steps=1)
    with pytest.raises(ValueError, match="max_positions"):
        sct.tl.pretrain(adata, model=tiny_config(vocab, 16), max_steps=1)
    with pytest.raises(ValueError, match="vocab_size"):
        sct.tl.pretrain(adata, model=tiny_config(vocab, 64, vocab_size=len(vocab) + 1))
    assert (set(adata.obsm), set(adata.uns)) == before
