"""Masks, score modules and FLOP counts against their definitions."""

import pytest
import torch

from attnlib.bench import attention_flops
from attnlib.masks import causal_mask, padding_mask, sliding_window_mask
from attnlib.scores import AdditiveScore, DotScore, GeneralScore, ScaledDotScore


@pytest.mark.parametrize("lq, lk", [(1, 1), (5, 5), (3, 8), (8, 3), (1, 7)])
def test_causal_mask_definition(lq, lk):
    mask = causal_mask(lq, lk)
    expected = torch.tensor([[j <= i + lk - lq for j in range(lk)] for i in range(lq)])
    assert torch.equal(mask, expected)
    if lq == lk:
        assert torch.equal(mask, torch.ones(lq, lk, dtype=torch.bool).tril())


def test_padding_mask_definition_and_errors():
    mask = padding_mask(torch.tensor([3, 0, 5]), 5)
    assert mask.shape == (3, 5) and mask.sum(-1).tolist() == [3, 0, 5]
    with pytest.raises(ValueError, match="lengths must lie in"):
        padding_mask(torch.tensor([6]), 5)
    with pytest.raises(TypeError, match="integers"):
        padding_mask(torch.tensor([1.0]), 5)


@pytest.mark.parametrize("lq, lk, window", [(6, 6, 2), (3, 7, 3), (5, 5, 10)])
def test_sliding_window_definition(lq, lk, window):
    mask = sliding_window_mask(lq, lk, window)
    expected = torch.tensor([[0 <= i + lk - lq - j < window for j in range(lk)] for i in range(lq)])
    assert torch.equal(mask, expected)


def test_score_modules_against_pairwise_formulas():
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 6, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(DotScore()(q, k), torch.einsum("bid,bjd->bij", q, k))
    torch.testing.assert_close(ScaledDotScore()(q, k), torch.einsum("bid,bjd->bij", q, k) / 6**0.5)
    general = GeneralScore(6, 6).double()
    torch.testing.assert_close(general(q, k), torch.einsum("bid,de,bje->bij", q, general.W, k))
    additive = AdditiveScore(6, 6, 3).double()
    loop = torch.empty(2, 4, 5, dtype=torch.float64)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                hidden = torch.tanh(additive.W_q.weight @ q[b, i] + additive.W_k.weight @ k[b, j])
                loop[b, i, j] = additive.w.weight[0] @ hidden
    torch.testing.assert_close(additive(q, k), loop)


def test_score_errors():
    with pytest.raises(ValueError, match="d_q=4"):
        GeneralScore(4, 4)(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="equal width"):
        DotScore()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="d_hidden"):
        AdditiveScore(2, 2, 1.5)


def test_attention_flops():
    assert attention_flops(2, 3, 5, 7, 11) == 4 * 2 * 3 * 5 * 7 * 11
    assert attention_flops(2, 3, 5, 7, 11, causal=True) == 2 * 2 * 3 * 5 * 7 * 11
    assert attention_flops(1, 1, 4, 4, 4, mode="bwd") == 2.5 * attention_flops(1, 1, 4, 4, 4)
    assert attention_flops(1, 1, 4, 4, 4, mode="fwd_bwd") == 3.5 * attention_flops(1, 1, 4, 4, 4)
    # The paper grid: B*N = 16k tokens, H*D = 2048, N = 4k, D = 128, non-causal.
    assert attention_flops(4, 16, 4096, 4096, 128) == 4 * 4 * 16 * 4096**2 * 128
    with pytest.raises(ValueError, match="mode"):
        attention_flops(1, 1, 1, 1, 1, mode="forward")
    with pytest.raises(ValueError, match="heads"):
        attention_flops(1, 0, 1, 1, 1)
