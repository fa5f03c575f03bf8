"""Attention backends agree; the math backend's probabilities are the textbook softmax."""

from __future__ import annotations

import math

import pytest
import torch

from sctransformer.nn.attention import attention, select_backend, xformers_available
from sctransformer.nn.masks import causal_mask, generative_mask, padding_mask_from_lengths


def _qkv(batch=3, heads=4, length=11, dim=8, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=gen).to(device) for _ in range(3)]


def _reference(q, k, v, allowed):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return probs @ v, probs


LENGTHS = torch.tensor([11, 7, 3])


@pytest.mark.parametrize("objective", ["mlm", "ntp", "generative"])
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_backends_match_reference_with_padding(backend, objective):
    q, k, v = _qkv()
    pad = padding_mask_from_lengths(LENGTHS, 11)
    mask, causal = None, False
    if objective == "ntp":
        causal = True
        allowed = causal_mask(pad)
    elif objective == "generative":
        gen = torch.zeros_like(pad)
        gen[:, 1::3] = True
        mask = allowed = generative_mask(pad, gen)
    else:
        allowed = pad[:, None, None, :].expand(3, 1, 11, 11)
    out, _ = attention(q, k, v, mask=mask, key_padding=pad, causal=causal, backend=backend)
    ref, _ = _reference(q, k, v, allowed)
    valid = pad[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[valid], ref[valid], atol=1e-5, rtol=0)


def test_math_probabilities_are_softmax_and_ignore_padding():
    q, k, v = _qkv(seed=1)
    pad = padding_mask_from_lengths(LENGTHS, 11)
    _, probs = attention(q, k, v, key_padding=pad, backend="math", need_weights=True)
    assert probs.shape == (3, 4, 11, 11)
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(8)
    scores = scores + torch.where(pad, 0.0, float("-inf"))[:, None, None, :]
    torch.testing.assert_close(probs, torch.softmax(scores, -1), atol=1e-6, rtol=0)
    for b, n in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(probs[b, :, :n, :n].sum(-1), torch.ones(4, n))
        assert torch.all(probs[b, :, :, n:] == 0)


def test_auto_uses_math_when_probabilities_requested():
    assert select_backend("auto", "cpu", need_weights=True) == "math"
    assert select_backend(None, "cpu", need_weights=False) == "sdpa"
    with pytest.raises(ValueError, match="math"):
        select_backend("sdpa", "cpu", need_weights=True)
    with pytest.raises(ValueError, match="not supported"):
        select_backend("flash", "cpu", need_weights=False)


def test_xformers_refused_without_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        select_backend("xformers", "cpu", need_weights=False)


@pytest.mark.gpu
@pytest.mark.skipif(
    not (torch.cuda.is_available() and xformers_available()), reason="needs CUDA and xformers"
)
@pytest.mark.parametrize("causal", [False, True])
def test_xformers_matches_sdpa_on_padded_batch(causal):
    q, k, v = _qkv(device="cuda")
    pad = padding_mask_from_lengths(LENGTHS, 11).cuda()
    out_x, _ = attention(q, k, v, key_padding=pad, causal=causal, backend="xformers")
    out_s, _ = attention(q, k, v, key_padding=pad, causal=causal, backend="sdpa")
    valid = pad[:, None, :, None].expand_as(out_x)
    torch.testing.assert_close(out_x[valid], out_s[valid], atol=1e-5, rtol=0)


def _masks(objective, pad):
    """(mask, causal, allowed) for an objective, as the model passes them."""
    if objective == "ntp":
        return None, True, causal_mask(pad)
    if objective == "generative":
        gen = torch.zeros_like(pad)
        gen[:, 1::3] = True
        allowed = generative_mask(pad, gen)
        return allowed, False, allowed
    return None, False, pad[:, None, None, :].expand(3, 1, 11, 11)


@pytest.mark.parametrize("objective", ["mlm", "ntp", "generative"])
def test_blockwise_equals_reference_forward_and_backward(objective):
    """Blocks of 2 queries, recomputed in backward: same output and gradients as one softmax."""
    from sctransformer.nn.blockwise import blockwise_attention

    pad = padding_mask_from_lengths(LENGTHS, 11)
    _, _, allowed = _masks(objective, pad)
    q, k, v = (t.requires_grad_() for t in _qkv(seed=3))
    # 3 cells x 4 heads x 11 keys x 2 queries per block
    out = blockwise_attention(q, k, v, allowed, 0.0, block_elements=3 * 4 * 11 * 2)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref, _ = _reference(q2, k2, v2, allowed)
    valid = pad[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[valid], ref[valid], atol=1e-5, rtol=0)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)) * valid
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    for got, want in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-5, rtol=0)


def test_blockwise_backward_reuses_the_forward_dropout_pattern():
    """Gradients equal those of the same blocks computed without recomputation, same seed."""
    from sctransformer.nn.blockwise import blockwise_attention

    pad = padding_mask_from_lengths(LENGTHS, 11)
    allowed = pad[:, None, None, :]
    p, rows = 0.3, 4
    q, k, v = (t.requires_grad_() for t in _qkv(seed=5))
    torch.manual_seed(123)
    out = blockwise_attention(q, k, v, allowed, p, block_elements=3 * 4 * 11 * rows)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    torch.manual_seed(123)
    blocks = []
    for start in range(0, 11, rows):  # the textbook formula with dropout, block by block
        qb = q2[:, :, start : start + rows]
        scores = qb @ k2.transpose(-1, -2) / math.sqrt(8)
        probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
        blocks.append(torch.nn.functional.dropout(probs, p=p) @ v2)
    ref = torch.cat(blocks, dim=2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert not torch.allclose(out, _reference(q2, k2, v2, allowed.expand(3, 1, 11, 11))[0])
    out.square().sum().backward()
    ref.square().sum().backward()
    for got, want in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-5, rtol=0)


def test_training_with_dropout_on_cpu_never_materialises_full_scores(monkeypatch):
    """sdpa + dropout on CPU: no allocation as large as one [B, H, L, L] score tensor."""
    from torch.profiler import profile

    import sctransformer.nn.blockwise as blockwise

    batch, heads, length = 2, 4, 256
    full = batch * heads * length * length * 4  # bytes of fp32 scores
    monkeypatch.setattr(blockwise, "BLOCK_ELEMENTS", batch * heads * length * 16)
    monkeypatch.setattr(blockwise, "DIRECT_ELEMENTS", batch * heads * length * 32)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(batch, heads, length, 16, generator=gen).requires_grad_() for _ in range(3)
    )
    pad = padding_mask_from_lengths(torch.tensor([256, 200]), length)
    with profile(profile_memory=True) as prof:
        out, _ = attention(q, k, v, key_padding=pad, backend="sdpa", dropout_p=0.1)
        out.sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_attention_math" not in names
    largest = max(e.self_cpu_memory_usage for e in prof.events())
    assert 0 < largest < full / 4, (largest, full)
    # the same call through torch's own math fallback allocates whole score tensors
    with profile(profile_memory=True) as prof:
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=pad[:, None, None, :], dropout_p=0.1
        )
        out.sum().backward()
    assert max(e.self_cpu_memory_usage for e in prof.events()) >= full


def test_small_score_tensors_keep_torchs_own_path():
    """Below DIRECT_ELEMENTS training runs torch's sdpa unchanged (same dropout draws)."""
    from sctransformer.nn.blockwise import DIRECT_ELEMENTS, needs_blockwise

    assert not needs_blockwise(16, 4, 512, 0.1, "cpu")  # 16 x 4 x 512^2 == DIRECT_ELEMENTS
    assert 16 * 4 * 512 * 512 == DIRECT_ELEMENTS
    assert needs_blockwise(16, 4, 1024, 0.1, "cpu")
    assert not needs_blockwise(16, 4, 1024, 0.0, "cpu")
    q, k, v = _qkv(seed=7)
    pad = padding_mask_from_lengths(LENGTHS, 11)
    torch.manual_seed(11)
    out, _ = attention(q, k, v, key_padding=pad, backend="sdpa", dropout_p=0.2)
    torch.manual_seed(11)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=pad[:, None, None, :], dropout_p=0.2
    )
    assert torch.equal(out, ref)
