"""Tests for attnlib.lengthgen: threshold relative attention and monotonic location attention."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.core import masked_softmax
from attnlib.lengthgen import (
    MonotonicLocationAttention,
    TRAAttention,
    contextual_distance,
    location_weights,
    monotonic_means,
    threshold_relative_attention,
)
from attnlib.models import TinyTransformer, TransformerConfig
from attnlib.position import alibi_bias, alibi_slopes

SETTINGS = dict(max_examples=20, deadline=None)


def _qkv(seed, b=2, h=3, length=6, d=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, length, d, generator=g, dtype=dtype) for _ in range(3))


@settings(**SETTINGS)
@given(length=st.integers(1, 9), h=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_tra_with_tau_minus_inf_is_alibi_attention(length, h, seed):
    q, k, v = _qkv(seed, h=h, length=length)
    out = threshold_relative_attention(q, k, v, tau=float("-inf"), slopes=alibi_slopes(h).double())
    scores = q @ k.transpose(-2, -1) / 2.0 + alibi_bias(h, length, length).double()
    mask = torch.ones(length, length, dtype=torch.bool).tril()
    torch.testing.assert_close(out, masked_softmax(scores, mask) @ v)


def naive_tra(q, k, v, tau, slopes):
    """One query at a time: keep causal keys above tau, count kept keys in (j, i], softmax."""
    b, h, length, d = q.shape
    out = torch.zeros_like(v)
    for n in range(b):
        for hh in range(h):
            for i in range(length):
                s = [(q[n, hh, i] @ k[n, hh, j]).item() / math.sqrt(d) for j in range(i + 1)]
                kept = [j for j in range(i + 1) if s[j] > tau]
                if not kept:
                    continue
                logits = torch.tensor([s[j] - slopes[hh].item() * sum(1 for t in kept if t > j) for j in kept],
                                      dtype=q.dtype)
                a = torch.softmax(logits, 0)
                out[n, hh, i] = sum(a_j * v[n, hh, j] for a_j, j in zip(a, kept))
    return out


@settings(max_examples=12, deadline=None)
@given(length=st.integers(1, 7), tau=st.floats(-1.0, 1.0), seed=st.integers(0, 10**6))
def test_tra_matches_naive_loop_and_drops_keys_below_tau(length, tau, seed):
    q, k, v = _qkv(seed, b=1, h=2, length=length)
    slopes = torch.tensor([0.5, 0.25], dtype=torch.float64)
    out, w = threshold_relative_attention(q, k, v, tau=tau, slopes=slopes, return_weights=True)
    torch.testing.assert_close(out, naive_tra(q, k, v, tau, slopes))
    scores = q @ k.transpose(-2, -1) / 2.0
    assert (w[scores <= tau] == 0).all()  # selective sparsity: exactly zero
    assert (w.triu(1) == 0).all()


def test_contextual_distance_counts_kept_keys_only():
    keep = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    # query 3 keeps keys 0 and 3: key 0 is one kept key away, not three tokens
    assert contextual_distance(keep)[3].tolist() == [1.0, 1.0, 1.0, 0.0]
    full = torch.ones(5, 5, dtype=torch.bool).tril()
    i, j = torch.arange(5)[:, None], torch.arange(5)[None, :]
    torch.testing.assert_close(contextual_distance(full), torch.where(j <= i, i - j, 0).float())


def test_location_weights_and_monotonic_means():
    steps = torch.nn.functional.softplus(torch.randn(2, 9))
    mu = monotonic_means(steps)
    assert (mu[:, 1:] >= mu[:, :-1]).all()  # the falsifiable check: means never move back
    w = location_weights(mu, torch.full_like(mu, 0.7))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 9))
    assert (w.triu(1) == 0).all()
    # a sharp Gaussian at an integer mean puts (almost) all weight there
    w = location_weights(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.full((4,), 0.05))
    assert w.argmax(-1).tolist() == [0, 0, 1, 1] and (w.max(-1).values > 0.999).all()


def test_monotonic_location_attention_ignores_content():
    att = MonotonicLocationAttention(4)
    q, k, v = _qkv(0, dtype=torch.float32)
    _, w1 = att(q, k, v)
    _, w2 = att(q, k, torch.randn_like(v))
    torch.testing.assert_close(w1, w2)  # values never change where it looks
    # at initialisation the mean sits on the query itself (steps = 1)
    assert (w1.argmax(-1) == torch.arange(6)).all()


@pytest.mark.parametrize("attention", [TRAAttention(2, 0.0), MonotonicLocationAttention(8)])
def test_plugs_into_tiny_transformer_and_is_causal(attention):
    model = TinyTransformer(TransformerConfig(vocab_size=7, d_model=16, n_heads=2, position="none"),
                            attention=attention).eval()
    x = torch.randint(0, 7, (2, 8))
    y = x.clone()
    y[:, 5] = (y[:, 5] + 1) % 7
    torch.testing.assert_close(model(x)[:, :5], model(y)[:, :5])
    out = model(x)
    out.sum().backward()
    assert all(p.grad is not None for p in attention.parameters())


def test_bad_input():
    q, k, v = _qkv(1)
    with pytest.raises(ValueError, match="slopes"):
        threshold_relative_attention(q, k, v, tau=0.0, slopes=torch.ones(5))
    with pytest.raises(TypeError, match="tau"):
        threshold_relative_attention(q, k, v, tau=None, slopes=torch.ones(3))
    with pytest.raises(ValueError, match="mu and sigma"):
        location_weights(torch.zeros(3), torch.ones(4))
    with pytest.raises(TypeError, match="keep"):
        contextual_distance(torch.ones(3, 3))
