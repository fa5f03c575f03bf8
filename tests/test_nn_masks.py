"""Attention masks match their definitions; the model respects them."""

from __future__ import annotations

import pytest
import torch

from _nn_utils import padded_batch, randomize_, small_config
from sctransformer.nn import CellTransformer
from sctransformer.nn.masks import (
    bidirectional_mask,
    causal_mask,
    generative_mask,
    mask_for_objective,
    padding_mask_from_lengths,
    to_additive,
)


def test_padding_and_bidirectional():
    pad = padding_mask_from_lengths(torch.tensor([3, 1]), 4)
    assert pad.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert bidirectional_mask(pad).shape == (2, 1, 1, 4)


def test_causal_definition():
    pad = padding_mask_from_lengths(torch.tensor([4, 2]), 4)
    m = causal_mask(pad)[:, 0]
    for b, n in enumerate([4, 2]):
        for i in range(4):
            for j in range(4):
                assert m[b, i, j] == ((j <= i and j < n) or i == j)


def test_generative_definition_position_by_position():
    pad = padding_mask_from_lengths(torch.tensor([6, 4]), 6)
    gen = torch.tensor([[0, 1, 0, 1, 1, 0], [1, 0, 0, 1, 0, 0]], dtype=torch.bool)
    m = generative_mask(pad, gen)[:, 0]
    for b in range(2):
        for i in range(6):
            for j in range(6):
                known_j = bool(pad[b, j]) and not bool(gen[b, j])
                assert bool(m[b, i, j]) == (known_j or i == j), (b, i, j)
    # a gene to generate never reads another gene being generated
    assert not m[0, 1, 3] and not m[0, 3, 4]
    with pytest.raises(ValueError, match="gen_mask"):
        mask_for_objective("generative", pad)


def test_to_additive():
    a = to_additive(torch.tensor([True, False]))
    assert a[0] == 0 and a[1] == float("-inf")


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_ntp_cannot_see_the_future(backend):
    model = randomize_(CellTransformer(small_config())).eval()
    tokens, lengths = padded_batch([12, 9])
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] % 50) + 1
    with torch.no_grad():
        a = model(tokens, lengths=lengths, objective="ntp", backend=backend).last_hidden_state
        b = model(changed, lengths=lengths, objective="ntp", backend=backend).last_hidden_state
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=0)
    assert (a[:, 6:9] - b[:, 6:9]).abs().max() > 1e-3


def test_generative_mask_in_model():
    model = randomize_(CellTransformer(small_config(value_input="continuous"))).eval()
    tokens, lengths = padded_batch([10])
    values = torch.rand(1, 10) * 5
    gen = torch.zeros(1, 10, dtype=torch.bool)
    gen[0, [2, 5, 7]] = True
    changed = values.clone()
    changed[0, 5] = 100.0  # value of a gene being generated: read by no other position
    with torch.no_grad():
        a = model(tokens, values, lengths=lengths, objective="generative", gen_mask=gen)
        b = model(tokens, changed, lengths=lengths, objective="generative", gen_mask=gen)
    diff = (a.last_hidden_state - b.last_hidden_state).abs().amax(-1)[0]
    assert diff[5] > 1e-3
    assert diff[torch.arange(10) != 5].max() < 1e-6
