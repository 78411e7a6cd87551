"""Tests for attnlib.position: each scheme against an independent form and its defining property."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.core import scaled_dot_product_attention
from attnlib.position import (
    POSITION_SCHEMES,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    cope_attention,
    cope_logits,
    cope_positions,
    make_position,
    relative_positions,
    rope_frequencies,
    rotate_half,
    shaw_attention,
    sinusoidal_encoding,
)

SETTINGS = dict(max_examples=25, deadline=None)


# ----------------------------------------------------------------------------- sinusoidal


def test_sinusoidal_matches_closed_form():
    pe = sinusoidal_encoding(7, 6, dtype=torch.float64)
    for p in range(7):
        for i in range(3):
            w = 10000.0 ** (-2 * i / 6)
            assert pe[p, 2 * i] == pytest.approx(math.sin(p * w), abs=1e-12)
            assert pe[p, 2 * i + 1] == pytest.approx(math.cos(p * w), abs=1e-12)


def test_sinusoidal_odd_width_and_bad_input():
    assert sinusoidal_encoding(3, 5).shape == (3, 5)
    with pytest.raises(ValueError, match="d_model"):
        sinusoidal_encoding(3, 0)
    with pytest.raises(ValueError, match="base"):
        sinusoidal_encoding(3, 4, base=1.0)


# ----------------------------------------------------------------------------- RoPE


def rope_complex(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Independent RoPE: pair (x_i, x_{i+d/2}) as the complex number x_i + i x_{i+d/2}, times e^{i m theta_i}."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(d // 2, dtype=torch.float64) * 2 / d)
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2:].double())
    z = z * torch.polar(torch.ones_like(theta), positions.double()[:, None] * theta)
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


@settings(**SETTINGS)
@given(length=st.integers(1, 9), half=st.integers(1, 8), base=st.sampled_from([100.0, 10000.0]),
       seed=st.integers(0, 10**6))
def test_rope_matches_complex_multiplication(length, half, base, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, length, 2 * half, generator=g, dtype=torch.float64)
    pos = torch.randint(-50, 200, (length,), generator=g)
    torch.testing.assert_close(apply_rope(x, pos, base), rope_complex(x, pos, base))


@settings(**SETTINGS)
@given(half=st.integers(1, 16), m=st.integers(-100, 100), n=st.integers(-100, 100), t=st.integers(-500, 500),
       seed=st.integers(0, 10**6))
def test_rope_scores_depend_only_on_offset(half, m, n, t, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 2 * half, generator=g, dtype=torch.float64)

    def score(a, b):
        return (apply_rope(q, torch.tensor([a])) * apply_rope(k, torch.tensor([b]))).sum()

    torch.testing.assert_close(score(m, n), score(m + t, n + t), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(score(m, n), score(m - n, 0), rtol=1e-9, atol=1e-9)


@settings(**SETTINGS)
@given(length=st.integers(1, 11), half=st.integers(1, 12), seed=st.integers(0, 10**6))
def test_rope_preserves_norms(length, half, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(length, 2 * half, generator=g, dtype=torch.float64)
    pos = torch.randint(0, 10**4, (length,), generator=g)
    torch.testing.assert_close(apply_rope(x, pos).norm(dim=-1), x.norm(dim=-1))


def test_rope_int_offset_position_zero_and_half_precision():
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(apply_rope(x, 3), apply_rope(x, torch.arange(3, 8)))
    torch.testing.assert_close(apply_rope(x, torch.zeros(5)), x)  # position 0: identity
    y = apply_rope(x.half(), torch.arange(5))
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), apply_rope(x, torch.arange(5)), rtol=1e-2, atol=1e-2)


def test_rope_frequencies_and_rotate_half():
    torch.testing.assert_close(rope_frequencies(8, 10000.0),
                               torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64))
    torch.testing.assert_close(rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0]))


def test_rope_bad_input():
    with pytest.raises(ValueError, match="even"):
        apply_rope(torch.randn(3, 5), torch.arange(3))
    with pytest.raises(ValueError, match="positions"):
        apply_rope(torch.randn(3, 4), torch.arange(4))
    with pytest.raises(TypeError, match="positions"):
        apply_rope(torch.randn(3, 4), [0, 1, 2])
    with pytest.raises(TypeError, match="x"):
        apply_rope([[1.0, 2.0]], torch.arange(1))


# ----------------------------------------------------------------------------- ALiBi


def test_alibi_slopes_closed_form_8_heads():
    # Press et al.: for 8 heads the slopes are 1/2, 1/4, ..., 1/256.
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -h for h in range(1, 9)]))


@pytest.mark.parametrize("n", [1, 2, 4, 16, 32])
def test_alibi_slopes_powers_of_two(n):
    start = 2.0 ** (-8.0 / n)
    torch.testing.assert_close(alibi_slopes(n), torch.tensor([start ** (h + 1) for h in range(n)]))


@pytest.mark.parametrize("n", [3, 5, 6, 7, 12])
def test_alibi_slopes_non_power_of_two(n):
    # The reference rule: the 2^floor(log2 n) geometric slopes, then every other slope of
    # the sequence for twice as many heads, until there are n.
    p = 2 ** int(math.floor(math.log2(n)))
    base = [2.0 ** (-8.0 * h / p) for h in range(1, p + 1)]
    extra = [2.0 ** (-8.0 * h / (2 * p)) for h in range(1, 2 * p + 1, 2)][: n - p]
    torch.testing.assert_close(alibi_slopes(n), torch.tensor(base + extra))
    assert len(set(alibi_slopes(n).tolist())) == n  # all distinct


def test_alibi_slopes_hand_computed_6_heads():
    # 4 heads: 1/4, 1/16, 1/64, 1/256; 8 heads every other from the first: 1/2, 1/8.
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]))


@settings(**SETTINGS)
@given(h=st.integers(1, 12), lq=st.integers(1, 10), lk=st.integers(1, 10))
def test_alibi_bias_depends_only_on_offset(h, lq, lk):
    bias = alibi_bias(h, lq, lk)  # (H, lq, lk)
    assert bias.shape == (h, lq, lk)
    slopes = alibi_slopes(h)
    for i in range(lq):
        for j in range(lk):
            offset = i + lk - lq - j
            torch.testing.assert_close(bias[:, i, j], -slopes * offset)
    # shifting query and key by one keeps the bias (a Toeplitz matrix)
    torch.testing.assert_close(bias[:, 1:, 1:], bias[:, :-1, :-1])


def test_alibi_bad_input():
    with pytest.raises(ValueError, match="n_heads"):
        alibi_slopes(0)
    with pytest.raises(TypeError, match="lq"):
        alibi_bias(2, 1.5, 3)


# ----------------------------------------------------------------------------- Shaw


def shaw_naive(q, k, v, rel_k, rel_v, mask, scale):
    """The paper's equations, one (i, j) pair at a time (3-D q, k, v)."""
    big_k = (rel_k.shape[0] - 1) // 2
    b, lq, _ = q.shape
    lk = k.shape[1]
    out = torch.zeros(b, lq, v.shape[-1], dtype=q.dtype)
    for n in range(b):
        for i in range(lq):
            ip = i + lk - lq
            e = torch.full((lk,), float("-inf"), dtype=q.dtype)
            for j in range(lk):
                if mask is None or mask[n, i, j]:
                    r = max(-big_k, min(big_k, j - ip)) + big_k
                    e[j] = scale * (q[n, i] @ (k[n, j] + rel_k[r]))
            if torch.isinf(e).all():
                continue
            a = torch.softmax(e, dim=0)
            for j in range(lk):
                r = max(-big_k, min(big_k, j - ip)) + big_k
                out[n, i] += a[j] * (v[n, j] + rel_v[r])
    return out


@settings(max_examples=15, deadline=None)
@given(lq=st.integers(1, 7), lk=st.integers(1, 7), d=st.integers(1, 5), dv=st.integers(1, 4),
       big_k=st.integers(0, 4), masked=st.booleans(), seed=st.integers(0, 10**6))
def test_shaw_efficient_equals_naive_loop(lq, lk, d, dv, big_k, masked, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(2, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(2, lk, dv, generator=g, dtype=torch.float64)
    rel_k = torch.randn(2 * big_k + 1, d, generator=g, dtype=torch.float64)
    rel_v = torch.randn(2 * big_k + 1, dv, generator=g, dtype=torch.float64)
    mask = None
    if masked:
        mask = torch.rand(2, lq, lk, generator=g) > 0.4
        mask[:, 0] = False  # a fully masked row must give zeros
    out = shaw_attention(q, k, v, rel_k, rel_v, mask)
    torch.testing.assert_close(out, shaw_naive(q, k, v, rel_k, rel_v, mask, 1 / math.sqrt(d)))


def test_shaw_with_zero_tables_is_plain_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g) for _ in range(3))
    zeros = torch.zeros(7, 4)
    out = shaw_attention(q, k, v, zeros, zeros, causal=True)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, causal=True))


def test_shaw_gradcheck_and_bad_input():
    g = torch.Generator().manual_seed(1)
    args = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
            for s in [(3, 2), (4, 2), (4, 3), (5, 2), (5, 3)]]
    assert torch.autograd.gradcheck(lambda *a: shaw_attention(*a, causal=True), args)
    with pytest.raises(ValueError, match="rel_k"):
        shaw_attention(*args[:3], torch.zeros(4, 2))
    with pytest.raises(ValueError, match="rel_v"):
        shaw_attention(*args[:3], torch.zeros(5, 2), torch.zeros(5, 2))


def test_relative_positions_clip():
    idx = relative_positions(3, 5, 2)
    # query i sits at key position i + 2
    assert idx.tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 2, 3], [0, 0, 0, 1, 2]]


# ----------------------------------------------------------------------------- CoPE


def test_cope_positions_all_gates_one_are_token_counts():
    pos = cope_positions(torch.ones(6, 6))
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    torch.testing.assert_close(pos, torch.where(j <= i, i - j + 1, 0).float())


def test_cope_positions_count_only_selected_tokens():
    # Gates open on keys 1 and 3 only: seen from query 4, key 0 is 2 selected tokens back.
    gates = torch.zeros(5, 5)
    gates[:, [1, 3]] = 1.0
    pos = cope_positions(gates)
    assert pos[4].tolist() == [2.0, 2.0, 1.0, 1.0, 0.0]
    assert pos[2].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]  # key 3 is in query 2's future: not counted


def test_cope_logits_interpolate_between_integer_positions():
    g = torch.Generator().manual_seed(0)
    q, emb = torch.randn(3, 4, generator=g), torch.randn(6, 4, generator=g)
    pos = torch.tensor([[0.0, 2.5, 9.0], [1.0, 1.25, 0.0], [5.0, 3.75, 4.0]])
    out = cope_logits(q, emb, pos)
    qe = q @ emb.T  # (3, 6)
    torch.testing.assert_close(out[0, 1], 0.5 * qe[0, 2] + 0.5 * qe[0, 3])
    torch.testing.assert_close(out[1, 1], 0.75 * qe[1, 1] + 0.25 * qe[1, 2])
    torch.testing.assert_close(out[0, 2], qe[0, 5])  # clipped to P - 1
    torch.testing.assert_close(out[2, 0], qe[2, 5])


def test_cope_attention_causal_rows_sum_to_one_and_zero_embeddings_reduce_to_sdpa():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 7, 4, generator=g) for _ in range(3))
    out, w = cope_attention(q, k, v, torch.zeros(8, 4), return_weights=True)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, causal=True))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 7))
    assert (w.triu(1) == 0).all()
    emb = torch.randn(8, 4, generator=g)
    assert not torch.allclose(cope_attention(q, k, v, emb), out)


# ----------------------------------------------------------------------------- schemes


@pytest.mark.parametrize("name", POSITION_SCHEMES)
def test_every_scheme_keeps_shapes(name):
    scheme = make_position(name, d_model=8, n_heads=2, max_len=16)
    x = torch.randn(3, 5, 8)
    q, k = torch.randn(2, 3, 2, 5, 4)
    assert scheme.embed(x).shape == x.shape
    q2, k2 = scheme.rotate(q, k)
    assert q2.shape == q.shape and k2.shape == k.shape
    scores = (q @ k.transpose(-2, -1)).masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    bias = scheme.score_bias(q, k, scores)
    if bias is not None:
        assert torch.broadcast_shapes(bias.shape, scores.shape) == scores.shape
    extra = scheme.value_term(torch.softmax(scores, -1))
    if extra is not None:
        assert extra.shape == q.shape


def test_make_position_bad_input():
    with pytest.raises(ValueError, match="position"):
        make_position("sinus", d_model=8, n_heads=2)
    with pytest.raises(ValueError, match="even head_dim"):
        make_position("rope", d_model=6, n_heads=2)
    with pytest.raises(ValueError, match="divisible"):
        make_position("none", d_model=7, n_heads=2)
    with pytest.raises(ValueError, match="max_len"):
        make_position("learned", d_model=8, n_heads=2, max_len=4).embed(torch.randn(1, 5, 8))
