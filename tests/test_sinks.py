"""attnlib.sinks: sink metrics, calibration, sink and sigmoid attention maps, hooks and the massive-activation report;
attnlib.data.markov: the corpus the lab trains on."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib import sinks
from attnlib.core import scaled_dot_product_attention
from attnlib.data.markov import BOS, lm_batch, markov_chain, markov_corpus
from attnlib.masks import causal_mask
from attnlib.models import TinyTransformer, TransformerConfig, softmax_attention

shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 6))


def _causal_weights(b, h, lq, lk, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, h, lq, lk, generator=g, dtype=torch.float64) * scale
    mask = causal_mask(lq, lk)
    w = torch.softmax(s.masked_fill(~mask, float("-inf")), -1)
    return torch.nan_to_num(w)  # rows that see no key (Lq > Lk) are zeros


# ----------------------------------------------------------------------------- sink scores and ratio
def test_sink_scores_equal_a_loop_over_visible_queries():
    w = _causal_weights(2, 3, 5, 7)
    scores = sinks.sink_scores(w)
    for key in range(7):
        rows = [i for i in range(5) if key <= i + 7 - 5]
        expected = w[..., rows, key].mean(-1) if rows else torch.zeros(2, 3, dtype=w.dtype)
        torch.testing.assert_close(scores[..., key], expected)
    torch.testing.assert_close(sinks.sink_scores(w, causal=False), w.mean(-2))


def test_sink_ratio_of_a_hand_built_pattern():
    length = 6
    uniform = torch.tril(torch.ones(length, length)) / torch.arange(1, length + 1)[:, None]  # causal uniform
    sink = torch.zeros(length, length)
    sink[:, 0] = 0.8
    sink[torch.arange(length), torch.arange(length)] += 0.2
    sink[0, 0] = 1.0
    heads = torch.stack([sink, uniform, sink, uniform])[None]  # (1, 4, L, L): two sink heads of four
    assert sinks.sink_ratio(heads, threshold=0.5) == 0.5
    # uniform causal attention gives token 0 the mean of 1/(i+1): H_L / L
    harmonic = sum(1 / (i + 1) for i in range(length)) / length
    torch.testing.assert_close(sinks.sink_scores(uniform)[0], torch.tensor(harmonic))
    assert sinks.sink_ratio(uniform, threshold=harmonic - 1e-6) == 1.0
    assert sinks.sink_ratio(uniform, threshold=harmonic + 1e-6) == 0.0
    # per query: the sink heads' rows all exceed 0.5; in the uniform heads only rows 0 (1.0) exceed it
    assert sinks.sink_ratio(heads, threshold=0.5, per="query") == (2 * length + 2) / (4 * length)
    # a list of layers counts every head of every layer once
    assert sinks.sink_ratio([heads, heads[:, :1]], threshold=0.5) == 3 / 5
    # another sink position
    other = torch.zeros(1, 1, length, length)
    other[..., :, 2] = 1.0
    other[..., :2, 0] = 1.0
    assert sinks.sink_ratio(other, sink=2, threshold=0.9) == 1.0
    assert sinks.sink_ratio(other, sink=0, threshold=0.9) == 0.0


@settings(max_examples=12, deadline=None)
@given(shapes, st.floats(0.0, 0.99))
def test_sink_ratio_agrees_with_its_definition(shape, threshold):
    b, h, lq, lk, seed = shape
    w = _causal_weights(b, h, lq, lk, seed, scale=3.0)
    heads = [(b_, h_) for b_ in range(b) for h_ in range(h)]
    rows = [i for i in range(lq) if 0 <= i + lk - lq]
    alpha = [w[b_, h_, rows, 0].mean().item() if rows else 0.0 for b_, h_ in heads]
    assert sinks.sink_ratio(w, threshold=threshold) == sum(a > threshold for a in alpha) / len(heads)
    per_query = [w[b_, h_, i, 0].item() > threshold for b_, h_ in heads for i in rows]
    assert sinks.sink_ratio(w, threshold=threshold, per="query") == (sum(per_query) / len(per_query)
                                                                      if per_query else 0.0)


def test_sink_ratio_bad_input():
    w = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="sink must index"):
        sinks.sink_ratio(w, sink=4)
    with pytest.raises(TypeError, match="sink must be an int"):
        sinks.sink_ratio(w, sink=1.0)
    with pytest.raises(ValueError, match="per must be"):
        sinks.sink_ratio(w, per="layer")
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        sinks.sink_ratio(w, threshold=-0.1)
    with pytest.raises(ValueError, match="empty list"):
        sinks.sink_ratio([])
    with pytest.raises(TypeError, match=r"weights\[1\] must be a torch.Tensor"):
        sinks.sink_ratio([w, w.numpy()])
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        sinks.sink_scores(torch.rand(4))


# ----------------------------------------------------------------------------- calibration
@settings(max_examples=12, deadline=None)
@given(shapes, st.floats(0.0, 3.0))
def test_scale_token_attention_keeps_rows_on_the_simplex(shape, factor):
    b, h, lq, lk, seed = shape
    w = _causal_weights(b, h, lq, lk, seed, scale=4.0)
    tokens = torch.rand(b, h, 1, lk, generator=torch.Generator().manual_seed(seed)) > 0.5
    out = sinks.scale_token_attention(w, tokens, factor)
    torch.testing.assert_close(out.sum(-1), w.sum(-1))  # 1 on rows that see a key, 0 on empty rows
    assert (out >= 0).all() and (out[w == 0] == 0).all()
    # the unscaled keys keep their ratios (they all move by one factor per row)
    for idx in torch.nonzero(w.sum(-1) > 0):
        row_w, row_o, keep = w[tuple(idx)], out[tuple(idx)], ~tokens[tuple(idx[:2])][0]
        free = keep & (row_w > 1e-12)
        if free.sum() >= 2 and (row_o * ~keep).sum() < 1:
            ratio = row_o[free] / row_w[free]
            torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))


def test_scale_token_attention_closed_form_and_edge_cases():
    w = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    tokens = torch.tensor([False, True, False])
    out = sinks.scale_token_attention(w, tokens, 0.5)
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.15, 0.2]], dtype=torch.float64) / 0.85)
    torch.testing.assert_close(sinks.scale_token_attention(w, tokens, 1.0), w)
    only = torch.tensor([[0.0, 1.0, 0.0]])
    torch.testing.assert_close(sinks.scale_token_attention(only, tokens, 0.0), only)  # nowhere else to go
    # per-head factors
    w2 = torch.full((2, 1, 2), 0.5)
    out = sinks.scale_token_attention(w2, torch.tensor([True, False]), torch.tensor([3.0, 1.0])[:, None, None])
    torch.testing.assert_close(out, torch.tensor([[[0.75, 0.25]], [[0.5, 0.5]]]))
    with pytest.raises(TypeError, match="tokens must be a boolean"):
        sinks.scale_token_attention(w, torch.tensor([0, 1, 0]), 0.5)
    with pytest.raises(ValueError, match="does not broadcast"):
        sinks.scale_token_attention(w, torch.tensor([True, False]), 0.5)
    with pytest.raises(ValueError, match="factor must be >= 0"):
        sinks.scale_token_attention(w, tokens, -1.0)


def test_calibration_scales_only_non_initial_sinks():
    length = 8
    w = torch.zeros(1, 2, length, length, dtype=torch.float64)
    w[0, 0, :, 0] = 0.5  # head 0: an initial sink, and a later sink at key 3 (0.4 of the rows that see it)
    w[0, 0, 3:, 3] = 0.4
    w[0, 0, torch.arange(length), torch.arange(length)] += torch.tensor([0.5] * 3 + [0.1] * 5, dtype=torch.float64)
    w[0, 1] = torch.tril(torch.ones(length, length)) / torch.arange(1, length + 1)[:, None]  # head 1: uniform
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, length, dtype=torch.float64))
    # mean over all 8 queries: key 3 of head 0 gets 2.1 / 8 = 0.26; key 1 of the uniform head (H_8 - 1) / 8 = 0.21
    found = sinks.find_sinks(w, 0.23)
    assert found[0, 0, 0].nonzero().flatten().tolist() == [3] and not found[0, 1].any()
    assert sinks.find_sinks(w, 0.23, include_first=True)[0, 0, 0].nonzero().flatten().tolist() == [0, 3]
    # averaged over the visible queries only, the last key of the uniform head (seen by one query) looks like one
    assert sinks.find_sinks(w, 0.1, causal=True)[0, 1, 0, -1] and not sinks.find_sinks(w, 0.1)[0, 1, 0, -1]
    out = sinks.calibrate_attention(w, 0.23, 0.5)
    torch.testing.assert_close(out[0, 1], w[0, 1])  # no sink: unchanged
    torch.testing.assert_close(out.sum(-1), w.sum(-1))
    assert (out[0, 0, 3:, 3] < w[0, 0, 3:, 3]).all() and (out[0, 0, 3:, 0] > w[0, 0, 3:, 0]).all()
    expected = w[0, 0, 5].clone()
    expected[3] *= 0.5
    torch.testing.assert_close(out[0, 0, 5], expected / expected.sum())
    torch.testing.assert_close(sinks.calibrate_attention(w, 0.23, 1.0), w)


def test_calibrated_attention_map_recomputes_the_output():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 7, 4, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    mask = causal_mask(7, 7)
    out, w = sinks.CalibratedAttention(threshold=0.2, factor=0.25)(q, k, v, mask=mask)
    ref_out, ref_w = softmax_attention(q, k, v, mask=mask)
    torch.testing.assert_close(w, sinks.calibrate_attention(ref_w, 0.2, 0.25))
    torch.testing.assert_close(out, w @ v)
    same, _ = sinks.CalibratedAttention(factor=1.0)(q, k, v, mask=mask)
    torch.testing.assert_close(same, ref_out)
    with pytest.raises(TypeError, match="base must be"):
        sinks.CalibratedAttention(base=3)


# ----------------------------------------------------------------------------- sink attention
@settings(max_examples=15, deadline=None)
@given(shapes, st.floats(-4.0, 4.0), st.booleans())
def test_sink_attention_equals_softmax_over_an_extra_zero_value_key(shape, sink_bias, use_mask):
    b, h, lq, lk, seed = shape
    g = torch.Generator().manual_seed(seed)
    d, dv = 1 + seed % 4, 1 + (seed + 1) % 3
    q = torch.randn(b, h, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, h, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, h, lk, dv, generator=g, dtype=torch.float64)
    sk = torch.randn(h, 1, d, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, 1, lq, lk, generator=g) > 0.3) if use_mask else None
    out, w = sinks.sink_attention(q, k, v, sk, mask, sink_bias=sink_bias)
    # Independent reference: SDPA over [k; sink key] with a zero value row, the sink always visible
    k_ext = torch.cat([k, sk.expand(b, h, 1, d)], dim=-2)
    v_ext = torch.cat([v, torch.zeros(b, h, 1, dv, dtype=v.dtype)], dim=-2)
    bias_ext = torch.zeros(1, 1, 1, lk + 1, dtype=q.dtype)
    bias_ext[..., -1] = sink_bias * math.sqrt(d)  # the bias enters after the 1/sqrt(d) scale
    m_ext = None if mask is None else torch.cat([mask, torch.ones(b, 1, lq, 1, dtype=torch.bool)], dim=-1)
    ref = torch.nn.functional.scaled_dot_product_attention(q + 0, k_ext, v_ext, attn_mask=m_ext,
                                                           scale=1 / math.sqrt(d)) if sink_bias == 0 else None
    scores = (q @ k_ext.transpose(-2, -1)) / math.sqrt(d) + bias_ext / math.sqrt(d)
    if m_ext is not None:
        scores = scores.masked_fill(~m_ext, float("-inf"))
    p = torch.softmax(scores, -1)
    torch.testing.assert_close(w, p[..., :-1])
    torch.testing.assert_close(out, p @ v_ext)
    if ref is not None:
        torch.testing.assert_close(out, ref)
    # Property: out = (1 - a_sink) * (softmax attention without the sink), exactly the seed's "key bias"
    plain, plain_w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    a_sink = 1 - w.sum(-1, keepdim=True)
    torch.testing.assert_close(out, (1 - a_sink) * plain)
    torch.testing.assert_close(w, (1 - a_sink) * plain_w)


def test_sink_attention_value_and_fully_masked_rows_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    sk, sv = torch.randn(2, 1, 3, dtype=torch.float64), torch.randn(2, 1, 3, dtype=torch.float64)
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[1] = False
    out, w = sinks.sink_attention(q, k, v, sk, mask, sink_value=sv)
    assert (w[..., 1, :] == 0).all() and torch.isfinite(out).all()
    torch.testing.assert_close(out[..., 1, :], sv[:, 0].expand(1, 2, 3))  # all weight on the sink
    a_sink = 1 - w.sum(-1, keepdim=True)
    torch.testing.assert_close(out, w @ v + a_sink * sv)
    args = [t.clone().requires_grad_() for t in (q, k, v, sk, sv)]
    assert torch.autograd.gradcheck(lambda q, k, v, sk, sv: sinks.sink_attention(q, k, v, sk, mask, sink_value=sv)[0],
                                    args)
    with pytest.raises(ValueError, match="sink_key must end in the key dimension"):
        sinks.sink_attention(q, k, v, torch.zeros(2, 1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="normalizer must be None"):
        sinks.sink_attention(q, k, v, sk, normalizer=torch.softmax)
    with pytest.raises(ValueError, match="mask must be broadcastable"):
        sinks.sink_attention(q, k, v, sk, torch.ones(3, 4, dtype=torch.bool))


def test_sink_attention_module_parameters_and_heads():
    layer = sinks.SinkAttention(2, 4, learn_value=True)
    assert {n for n, _ in layer.named_parameters()} == {"key", "logit", "value"}
    assert {n for n, _ in sinks.SinkAttention(2, 4).named_parameters()} == {"key", "logit"}
    q = torch.randn(1, 2, 5, 4)
    out, w = layer(q, q, q, mask=causal_mask(5, 5))
    # at initialisation (zero key, zero logit) the sink logit is 0: row i has i + 1 keys plus the sink
    uniform_q = torch.zeros(1, 2, 5, 4)
    _, w0 = layer(uniform_q, uniform_q, uniform_q, mask=causal_mask(5, 5))
    torch.testing.assert_close(w0.sum(-1), (torch.arange(1, 6) / torch.arange(2, 7)).expand(1, 2, 5))
    with pytest.raises(ValueError, match="must have 2 heads"):
        layer(torch.randn(1, 3, 5, 4), torch.randn(1, 3, 5, 4), torch.randn(1, 3, 5, 4))
    with pytest.raises(TypeError, match="n_heads must be a positive int"):
        sinks.SinkAttention(2.0, 4)


# ----------------------------------------------------------------------------- sigmoid attention
@settings(max_examples=12, deadline=None)
@given(shapes)
def test_sigmoid_attention_is_elementwise(shape):
    b, h, lq, lk, seed = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, 3, generator=g, dtype=torch.float64)
    k = torch.randn(b, h, lk, 3, generator=g, dtype=torch.float64)
    v = torch.randn(b, h, lk, 2, generator=g, dtype=torch.float64)
    mask = torch.rand(lq, lk, generator=g) > 0.4
    out, w = sinks.sigmoid_attention(q, k, v, mask=mask)
    expected = torch.sigmoid(q @ k.transpose(-2, -1) / math.sqrt(3) - math.log(lk)) * mask
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(out, expected @ v)
    # Property: changing another key leaves key 0's weights unchanged
    k2 = k.clone()
    k2[..., 1:, :] = torch.randn_like(k2[..., 1:, :]) * 10
    torch.testing.assert_close(sinks.sigmoid_attention(q, k2, v, mask=mask)[1][..., 0], w[..., 0])
    bias = torch.randn(lq, lk, generator=g, dtype=torch.float64)
    _, wb = sinks.sigmoid_attention(q, k, v, mask=mask, bias=bias, offset=0.5)
    torch.testing.assert_close(wb, torch.sigmoid(q @ k.transpose(-2, -1) / math.sqrt(3) + bias + 0.5) * mask)


def test_sigmoid_attention_bad_input_and_gradcheck():
    q = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sinks.sigmoid_attention(x, x, x)[0], (q,))
    with pytest.raises(ValueError, match="normalizer must be None"):
        sinks.sigmoid_attention(q, q, q, normalizer=torch.softmax)
    with pytest.raises(ValueError, match="q and k must share"):
        sinks.sigmoid_attention(q, torch.randn(2, 4, 2, dtype=torch.float64), q)


# ----------------------------------------------------------------------------- plugging into TinyTransformer
@pytest.mark.parametrize("variant", ["sink", "sigmoid", "calibrated"])
def test_maps_plug_into_tiny_transformer(variant):
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=11, d_model=16, n_layers=2, n_heads=2)
    model = TinyTransformer(cfg)
    n_before = sum(p.numel() for p in model.parameters())
    make = {"sink": lambda layer: sinks.SinkAttention(2, 8), "sigmoid": lambda layer: sinks.sigmoid_attention,
            "calibrated": lambda layer: sinks.CalibratedAttention()}[variant]
    sinks.set_attention(model, make)
    added = sum(p.numel() for p in model.parameters()) - n_before
    assert added == (2 * (2 * 8 + 2) if variant == "sink" else 0)  # one key and one logit per head, per layer
    if variant == "sink":
        assert model.blocks[0].attn.attention is not model.blocks[1].attn.attention
    x = torch.randint(0, 11, (3, 9))
    logits, maps = model(x, return_attention=True)
    assert logits.shape == (3, 9, 11) and all(w.shape == (3, 2, 9, 9) for w in maps)
    assert all((w.triu(1) == 0).all() for w in maps)  # still causal
    logits.sum().backward()
    if variant == "sink":
        assert model.blocks[0].attn.attention.key.grad is not None
    with pytest.raises(TypeError, match="model must have"):
        sinks.set_attention(torch.nn.Linear(2, 2), make)


def test_record_forward_hooks_match_the_model():
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(vocab_size=11, d_model=16, n_layers=3, n_heads=4))
    x = torch.randint(0, 11, (2, 7))
    rec = sinks.record_forward(model, x)
    logits, maps = model(x, return_attention=True)
    assert len(rec["hidden"]) == 3 and all(h.shape == (2, 7, 16) for h in rec["hidden"])
    torch.testing.assert_close(model.head(model.norm(rec["hidden"][-1])), logits)
    for w, w_rec in zip(maps, rec["weights"]):
        torch.testing.assert_close(w_rec, w)
    block = model.blocks[0]
    qkv = block.attn.qkv(block.norm1(rec["embed"])).view(2, 7, 3, 4, 4)
    torch.testing.assert_close(rec["v"][0], qkv[:, :, 2].transpose(1, 2))
    assert all(rec["q"][i].shape == (2, 4, 7, 4) for i in range(3))
    assert not any(b._forward_hooks for b in model.blocks)  # hooks removed


# ----------------------------------------------------------------------------- massive activations
def test_massive_activation_report_finds_a_planted_activation():
    g = torch.Generator().manual_seed(0)
    hidden = [torch.randn(3, 10, 8, generator=g) for _ in range(2)]
    hidden[1][1, 0, 5] = 500.0  # a massive activation on token 0, dimension 5
    rep = sinks.massive_activation_report(hidden)
    assert rep.dim[1] == 5 and rep.position[1] == 0
    med = hidden[1].abs().double().median()
    torch.testing.assert_close(rep.ratio[1], torch.tensor(500.0, dtype=torch.float64) / med)
    torch.testing.assert_close(rep.largest[0], hidden[0].abs().max().double())
    assert rep.ratio[0] < 20 < rep.ratio[1]
    assert rep.massive_dims(20.0) == [[], [5]]
    torch.testing.assert_close(rep.dim_profile[0], hidden[0].abs().double().amax(dim=(0, 1)) / rep.median[0])
    single = sinks.massive_activation_report(hidden[1][0])  # one (L, d) tensor
    assert single.ratio.shape == (1,)
    with pytest.raises(ValueError, match="non-empty list"):
        sinks.massive_activation_report([])
    with pytest.raises(TypeError, match=r"hidden\[0\] must be a torch.Tensor"):
        sinks.massive_activation_report([[1.0]])


# ----------------------------------------------------------------------------- the corpus
def test_markov_corpus_is_seeded_and_follows_its_triggers():
    a = markov_corpus(50, 30, vocab_size=16, n_triggers=3, seed=4)
    assert torch.equal(a, markov_corpus(50, 30, vocab_size=16, n_triggers=3, seed=4))
    assert not torch.equal(a, markov_corpus(50, 30, vocab_size=16, n_triggers=3, seed=5))
    assert a.shape == (50, 30) and a.dtype == torch.int64 and (a[:, 0] == BOS).all()
    assert ((a[:, 1:] >= 1) & (a[:, 1:] < 16)).all()
    for row in a:
        seen = {}
        for t in range(1, 29):
            tok, nxt = int(row[t]), int(row[t + 1])
            if 1 <= tok <= 3:
                assert nxt != tok and seen.setdefault(tok, nxt) == nxt  # one successor per trigger per sequence
    chain = markov_chain(16)
    torch.testing.assert_close(chain.sum(-1), torch.ones(16, dtype=torch.float64))
    assert (chain[:, BOS] == 0).all()
    plain = markov_corpus(400, 2, vocab_size=5, n_triggers=0, sharpness=0.0, seed=1)  # uniform first tokens
    assert set(plain[:, 1].tolist()) == {1, 2, 3, 4}
    x, y = lm_batch(a)
    assert torch.equal(x, a[:, :-1]) and torch.equal(y, a[:, 1:])
    with pytest.raises(ValueError, match="n_triggers"):
        markov_corpus(2, 5, vocab_size=5, n_triggers=4)
    with pytest.raises(ValueError, match="vocab_size must be >= 3"):
        markov_chain(2)
    with pytest.raises(ValueError, match="at least 2 positions"):
        lm_batch(a[:, :1])


def test_feature_concentration():
    x = torch.ones(2, 3, 5, 4)
    c, profile = sinks.feature_concentration(x)
    assert c == 1.0 and torch.equal(profile, torch.ones(4, dtype=torch.float64))
    x[..., 2] = -10.0  # one dimension ten times larger (sign does not matter)
    c, profile = sinks.feature_concentration(x)
    torch.testing.assert_close(c, torch.tensor(10.0, dtype=torch.float64))
    assert profile.argmax() == 2
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        sinks.feature_concentration(torch.ones(3))
