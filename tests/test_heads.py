"""Tests for attnlib.heads: MHA/GQA/MQA against torch SDPA, head slicing, MLA absorption, cache sizes."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.heads import (
    MultiHeadAttention,
    MultiHeadLatentAttention,
    count_parameters,
    greedy_prune,
    kv_cache_bytes_per_token,
    mla_cache_bytes_per_token,
    single_head,
)


def _torch_reference(m: MultiHeadAttention, x, context=None, mask=None, causal=False):
    """Independent reference: torch's SDPA with K/V heads repeated explicitly (torch.repeat, not interleave)."""
    context = x if context is None else context
    b, lq, _ = x.shape
    lk = context.shape[1]
    h, g, d = m.n_heads, m.n_kv_heads, m.head_dim
    q = m.q_proj(x).view(b, lq, h, d).permute(0, 2, 1, 3)
    k = m.k_proj(context).view(b, lk, g, d).permute(0, 2, 1, 3)
    v = m.v_proj(context).view(b, lk, g, d).permute(0, 2, 1, 3)
    # kv head j serves query heads j*group ... (j+1)*group - 1
    k = k[:, :, None].expand(b, g, h // g, lk, d).reshape(b, h, lk, d)
    v = v[:, :, None].expand(b, g, h // g, lk, d).reshape(b, h, lk, d)
    if causal:
        cm = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
        mask = cm if mask is None else mask & cm
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return m.o_proj(o.permute(0, 2, 1, 3).reshape(b, lq, h * d))


@pytest.mark.parametrize("n_kv", [8, 4, 2, 1])
@pytest.mark.parametrize("causal", [False, True])
def test_gqa_mqa_equal_torch_sdpa(n_kv, causal):
    torch.manual_seed(0)
    m = MultiHeadAttention(32, 8, n_kv, bias=True).double()
    x = torch.randn(3, 7, 32, dtype=torch.float64)
    torch.testing.assert_close(m(x, causal=causal), _torch_reference(m, x, causal=causal))


@settings(max_examples=25, deadline=None)
@given(h_per_g=st.integers(1, 4), g=st.integers(1, 3), d=st.integers(1, 5), b=st.integers(1, 3),
       lq=st.integers(1, 9), lk=st.integers(1, 9), seed=st.integers(0, 1000), masked=st.booleans())
def test_cross_attention_with_masks_hypothesis(h_per_g, g, d, b, lq, lk, seed, masked):
    torch.manual_seed(seed)
    h = h_per_g * g
    m = MultiHeadAttention(6, h, g, head_dim=d).double()
    x, ctx = torch.randn(b, lq, 6, dtype=torch.float64), torch.randn(b, lk, 6, dtype=torch.float64)
    mask = None
    if masked:
        mask = torch.rand(b, 1, lq, lk) > 0.3
        mask[..., 0] = True  # torch's SDPA gives NaN on fully masked rows; keep every row alive here
    torch.testing.assert_close(m(x, ctx, mask), _torch_reference(m, x, ctx, mask))


def test_fully_masked_row_gives_zeros_not_nan():
    torch.manual_seed(1)
    m = MultiHeadAttention(8, 2, 1)
    x = torch.randn(1, 4, 8)
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 2, :] = False
    out, w = m(x, mask=mask, need_weights=True)
    assert torch.isfinite(out).all() and (w[..., 2, :] == 0).all()
    torch.testing.assert_close(out[0, 2], torch.zeros(8))  # no bias: o_proj(0) = 0


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_keeping_only_head_h_equals_single_head_from_slices(n_kv):
    torch.manual_seed(2)
    m = MultiHeadAttention(24, 4, n_kv).double()
    x = torch.randn(2, 5, 24, dtype=torch.float64)
    for h in range(4):
        keep = torch.zeros(4, dtype=torch.float64)
        keep[h] = 1
        torch.testing.assert_close(m(x, causal=True, head_mask=keep), single_head(m, h)(x, causal=True))
    # and the heads add up: MHA = sum of its single heads
    total = sum(single_head(m, h)(x) for h in range(4))
    torch.testing.assert_close(m(x), total)


def test_param_counts_mqa_lt_gqa_lt_mha_and_formula():
    d, h, dh = 64, 8, 8
    counts = {g: count_parameters(MultiHeadAttention(d, h, g)) for g in (1, 2, 8)}
    assert counts[1] < counts[2] < counts[8]
    for g, c in counts.items():
        assert c == 2 * d * h * dh + 2 * d * g * dh  # W_Q, W_O plus W_K, W_V


def test_kv_cache_bytes():
    assert kv_cache_bytes_per_token(8, 128, n_layers=2, bytes_per_elem=2) == 2 * 2 * 8 * 128 * 2
    assert MultiHeadAttention(64, 8, 2).kv_cache_bytes_per_token(4) == 2 * 2 * 8 * 4
    assert mla_cache_bytes_per_token(512, d_rope=64, n_layers=3) == 3 * 576 * 2
    assert MultiHeadLatentAttention(64, 8, 16).kv_cache_bytes_per_token() == 32
    with pytest.raises(ValueError, match="d_rope"):
        mla_cache_bytes_per_token(8, d_rope=-1)


def test_mla_absorbed_equals_expanded_and_reference():
    torch.manual_seed(3)
    m = MultiHeadLatentAttention(32, 4, 12).double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    for causal in (False, True):
        torch.testing.assert_close(m.forward_absorbed(x, causal=causal), m(x, causal=causal))
    # reference: torch SDPA on explicitly expanded keys/values
    c = x @ m.kv_down.weight.T
    q = (x @ m.q_proj.weight.T).view(2, 9, 4, 8).transpose(1, 2)
    k = (c @ m.k_up.weight.T).view(2, 9, 4, 8).transpose(1, 2)
    v = (c @ m.v_up.weight.T).view(2, 9, 4, 8).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 9, 32)
    torch.testing.assert_close(m(x, causal=True), o @ m.o_proj.weight.T)


def test_gradients_flow_and_half_precision():
    torch.manual_seed(4)
    m = MultiHeadAttention(16, 4, 2)
    x = torch.randn(2, 5, 16, requires_grad=True)
    m(x, causal=True).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    mh = MultiHeadAttention(16, 4, 2).half()
    assert torch.isfinite(mh(torch.randn(1, 5, 16).half() * 30)).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_kv_heads"):
        MultiHeadAttention(32, 8, 3)
    with pytest.raises(ValueError, match="n_heads"):
        MultiHeadAttention(30, 8)
    with pytest.raises(TypeError, match="n_kv_heads"):
        MultiHeadAttention(32, 8, 2.0)
    with pytest.raises(ValueError, match="n_kv_heads"):
        MultiHeadAttention(32, 8, 0)
    m = MultiHeadAttention(32, 8, 2)
    with pytest.raises(ValueError, match="x"):
        m(torch.randn(2, 5, 31))
    with pytest.raises(ValueError, match="head_mask"):
        m(torch.randn(2, 5, 32), head_mask=torch.ones(3))
    with pytest.raises(ValueError, match="h must"):
        single_head(m, 8)


def test_greedy_prune_order_and_redundancy():
    weight = torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.7, 0.3]])
    order, scores = greedy_prune(lambda m: float((weight * m).sum()), 2, 3)
    assert order == [(0, 1), (1, 0), (1, 2), (0, 0), (1, 1), (0, 2)]
    torch.testing.assert_close(torch.tensor(scores), weight.sum() - weight.flatten().sort().values.cumsum(0))
    # two redundant copies: greedy removes one copy first although each has zero single-head importance
    order, scores = greedy_prune(lambda m: (1.0 if m[0, 0] + m[0, 1] > 0 else 0.0) + 0.3 * float(m[0, 2]), 1, 3)
    assert order == [(0, 0), (0, 2), (0, 1)] and scores == [1.3, 1.0, 0.0]
    with pytest.raises(TypeError, match="evaluate"):
        greedy_prune(None, 1, 1)
