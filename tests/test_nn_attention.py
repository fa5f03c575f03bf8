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
