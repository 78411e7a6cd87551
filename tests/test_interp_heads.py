"""Tests for attnlib.interp.heads and attnlib.interp.attention_only: each score against a naive loop over
queries and keys, the defining properties the lab checks (hand-built induction pattern = 1, uniform = chance,
lookback ratio in [0, 1] and 1 without generated attention, gating = zeroed W_O columns, alpha = 0 = base),
the QK/OV circuits against the module's own scores and outputs, and the attention-only model's causality."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnlib.heads import MultiHeadAttention
from attnlib.interp import (AttentionOnlyTransformer, contrast_decode, entropy, head_ablation, induction_chance,
                            induction_score, lookback_ratio, ov_copying_score, position_profile, qk_ov_svd,
                            retrieval_score)


def _causal_weights(b, h, n, g, dtype=torch.float64):
    s = torch.randn(b, h, n, n, generator=g, dtype=dtype)
    return torch.softmax(3 * s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), -float("inf")), -1)


# --- induction ---------------------------------------------------------------------------------------------------

def _naive_induction(weights, tokens):
    b, h, n, _ = weights.shape
    out = []
    for head in range(h):
        total, count = 0.0, 0
        for bb in range(b):
            for i in range(n):
                targets = {j + 1 for j in range(n) if j + 1 < i and tokens[bb, j] == tokens[bb, i]}
                if targets:
                    total += sum(weights[bb, head, i, k].item() for k in targets)
                    count += 1
        out.append(total / count if count else 0.0)
    return torch.tensor(out, dtype=weights.dtype)


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), n=st.integers(1, 10), vocab=st.integers(1, 6),
       seed=st.integers(0, 10_000))
def test_induction_score_matches_a_loop(b, h, n, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (b, n), generator=g)
    w = _causal_weights(b, h, n, g)
    torch.testing.assert_close(induction_score(w, tokens), _naive_induction(w, tokens))


@pytest.mark.parametrize("t", [3, 5, 8])
def test_induction_score_of_a_perfect_head_is_one_and_uniform_is_chance(t):
    first = torch.randperm(40)[:t][None]
    tokens = torch.cat([first, first], 1)
    n = 2 * t
    perfect = torch.eye(n)
    for i in range(t, n):
        perfect[i] = 0
        perfect[i, i - t + 1] = 1
    torch.testing.assert_close(induction_score(perfect[None, None], tokens), torch.ones(1))
    chance = sum(1 / (i + 1) for i in range(t, n)) / t
    assert induction_chance(tokens).item() == pytest.approx(chance)


def test_induction_score_validates():
    with pytest.raises(ValueError, match="tokens"):
        induction_score(torch.rand(1, 1, 3, 3), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="tokens"):
        induction_score(torch.rand(1, 1, 3, 3), torch.zeros(1, 3))


# --- retrieval ---------------------------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), lq=st.integers(1, 4), lk=st.integers(1, 8),
       vocab=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_retrieval_score_matches_a_loop(b, h, lq, lk, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.softmax(3 * torch.randn(b, h, lq, lk, generator=g), -1)
    tokens = torch.randint(0, vocab, (b, lk), generator=g)
    needle = torch.rand(b, lk, generator=g) < 0.5
    generated = torch.randint(-1, vocab, (b, lq), generator=g)
    steps = [(bb, i) for bb in range(b) for i in range(lq)
             if generated[bb, i] >= 0 and any(needle[bb, j] and tokens[bb, j] == generated[bb, i] for j in range(lk))]
    expected = []
    for head in range(h):
        hits = 0
        for bb, i in steps:
            j = int(w[bb, head, i].argmax())
            hits += bool(needle[bb, j] and tokens[bb, j] == generated[bb, i])
        expected.append(hits / len(steps) if steps else 0.0)
    torch.testing.assert_close(retrieval_score(w, tokens, generated, needle), torch.tensor(expected))


# --- lookback ratio ----------------------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(lq=st.integers(1, 6), lk=st.integers(1, 9), data=st.data(), seed=st.integers(0, 10_000))
def test_lookback_ratio_matches_a_loop_and_lies_in_unit_interval(lq, lk, data, seed):
    n_ctx = data.draw(st.integers(1, lk))
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, lq, lk, generator=g, dtype=torch.float64)
    s = s.masked_fill(torch.arange(lk) > torch.arange(lq)[:, None] + lk - lq, -float("inf"))
    w = torch.softmax(s, -1)
    r = lookback_ratio(w, n_ctx)
    assert ((r >= 0) & (r <= 1)).all()
    for b in range(2):
        for i in range(lq):
            visible = [j for j in range(n_ctx, lk) if j <= i + lk - lq]
            ctx = w[b, i, :n_ctx].sum().item() / n_ctx
            new = sum(w[b, i, j].item() for j in visible) / len(visible) if visible else 0.0
            expected = ctx / (ctx + new) if new > 0 else 1.0
            assert r[b, i].item() == pytest.approx(expected)


def test_lookback_ratio_is_one_without_attention_on_generated_tokens():
    w = torch.zeros(3, 5, 7)
    w[..., :4] = torch.softmax(torch.randn(3, 5, 4), -1)
    torch.testing.assert_close(lookback_ratio(w, 4), torch.ones(3, 5))
    with pytest.raises(ValueError, match="n_context"):
        lookback_ratio(w, 0)


# --- contrastive decoding ----------------------------------------------------------------------------------------

def test_contrast_decode_alpha_zero_is_base_and_softmax_is_that_of_log_probs():
    base, masked = torch.randn(4, 9), torch.randn(4, 9)
    torch.testing.assert_close(contrast_decode(base, masked, 0.0), base)
    torch.testing.assert_close(torch.softmax(contrast_decode(base, masked, 1.3), -1),
                               torch.softmax(contrast_decode(base.log_softmax(-1), masked.log_softmax(-1), 1.3), -1))
    alpha = torch.rand(4, 1)
    torch.testing.assert_close(contrast_decode(base, masked, alpha), base + alpha * (base - masked))
    with pytest.raises(ValueError, match="same shape"):
        contrast_decode(base, masked[:, :3], 1.0)


def test_entropy_against_closed_forms():
    assert entropy(torch.zeros(5)).item() == pytest.approx(torch.log(torch.tensor(5.0)).item())
    assert entropy(torch.tensor([0.0, -1e4])).item() == pytest.approx(0.0, abs=1e-6)


# --- head ablation -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("heads", [[], [(0, 0)], [(1, 2), (0, 1)], [(0, 0), (0, 1), (0, 2), (1, 1)]])
def test_head_ablation_equals_zeroed_wo_columns_and_head_mask(heads):
    torch.manual_seed(0)
    model = AttentionOnlyTransformer(13, d_model=12, n_layers=2, n_heads=3, max_len=10).eval()
    tokens = torch.randint(0, 13, (2, 10))
    with torch.no_grad():
        before = model(tokens)
        zeroed = copy.deepcopy(model)
        for layer, head in heads:
            zeroed.blocks[layer].o_proj.weight[:, 4 * head:4 * (head + 1)] = 0
        mask = torch.ones(2, 3)
        for layer, head in heads:
            mask[layer, head] = 0
        with head_ablation(model, heads):
            gated = model(tokens)
        torch.testing.assert_close(gated, zeroed(tokens))
        torch.testing.assert_close(gated, model(tokens, head_mask=mask))
        torch.testing.assert_close(model(tokens), before)  # hooks removed


def test_head_ablation_on_a_gqa_stack_and_validation():
    torch.manual_seed(1)
    stack = nn.Sequential(MultiHeadAttention(8, 4, n_kv_heads=2), MultiHeadAttention(8, 2)).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        zeroed = copy.deepcopy(stack)
        zeroed[0].o_proj.weight[:, 2:4] = 0  # head 1 of layer 0, head_dim 2
        with head_ablation(stack, [(0, 1)]):
            torch.testing.assert_close(stack(x), zeroed(x))
    with pytest.raises(ValueError, match="not in a model"):
        with head_ablation(stack, [(2, 0)]):
            pass
    with pytest.raises(ValueError, match="MultiHeadAttention"):
        with head_ablation(nn.Linear(2, 2), []):
            pass


# --- QK / OV circuits --------------------------------------------------------------------------------------------

def test_qk_ov_reproduce_the_heads_scores_and_outputs():
    torch.manual_seed(2)
    mha = MultiHeadAttention(10, 2, head_dim=3).double()
    x = torch.randn(1, 6, 10, dtype=torch.float64)
    for h in range(2):
        c = qk_ov_svd(mha, h)
        q = mha.q_proj(x)[..., 3 * h:3 * (h + 1)]
        k = mha.k_proj(x)[..., 3 * h:3 * (h + 1)]
        torch.testing.assert_close(x @ c["qk"] @ x.mT, q @ k.mT)  # raw scores (before the 1/sqrt(d) scale)
        mask = torch.zeros(2)
        mask[h] = 1
        _, w = mha(x, need_weights=True)
        torch.testing.assert_close(mha(x, head_mask=mask), w[:, h] @ (x @ c["ov"].T))  # no biases
        assert int((c["ov_s"] > 1e-10).sum()) <= 3 and int((c["qk_s"] > 1e-10).sum()) <= 3
        torch.testing.assert_close(c["ov_s"], torch.linalg.svdvals(c["ov"]))


def test_ov_copying_score_of_identity_and_of_a_shift():
    e = torch.eye(5)
    assert ov_copying_score(torch.eye(5), e, e) == 1.0
    assert ov_copying_score(torch.roll(torch.eye(5), 1, 0), e, e) == 0.0


def test_position_profile_sums_mass_per_item():
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    prof = position_profile(w, torch.tensor([0, 0, 1, -1]), 2)
    torch.testing.assert_close(prof, torch.tensor([0.5, 0.25]))  # rows (0.3, 0.3) and (0.7, 0.2)


# --- the attention-only model ------------------------------------------------------------------------------------

def test_attention_only_transformer_is_causal_and_returns_weights():
    torch.manual_seed(3)
    model = AttentionOnlyTransformer(9, d_model=8, n_layers=2, n_heads=2, max_len=7).eval()
    a = torch.randint(0, 9, (2, 7))
    b = a.clone()
    b[:, 5:] = (b[:, 5:] + 1) % 9
    with torch.no_grad():
        la, maps = model(a, return_attention=True)
        torch.testing.assert_close(la[:, :5], model(b)[:, :5])  # the future does not leak
    assert la.shape == (2, 7, 9) and len(maps) == 2 and maps[0].shape == (2, 2, 7, 7)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 2, 7))
    assert (maps[0].triu(1) == 0).all()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="head_mask"):
        model(a, head_mask=torch.ones(3, 2))
