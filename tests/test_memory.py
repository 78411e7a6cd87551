"""attnlib.memory against closed forms and properties: SDM, Hebbian memory, recurrent attention."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib import core, memory

DT = torch.float64


def bipolar(*shape, g):
    return torch.randint(0, 2, shape, generator=g).to(DT) * 2 - 1


# ------------------------------------------------------------------------ SDM


def brute_force_intersection(n, r, d):
    x = [0] * n
    y = [1] * d + [0] * (n - d)
    return sum(1 for z in itertools.product((0, 1), repeat=n)
               if sum(a != b for a, b in zip(z, x)) <= r and sum(a != b for a, b in zip(z, y)) <= r)


@pytest.mark.parametrize("n", [1, 4, 7, 10])
def test_intersection_matches_brute_force(n):
    for r in range(n + 1):
        for d in range(n + 1):
            assert memory.hamming_ball_intersection(n, r, d) == brute_force_intersection(n, r, d), (n, r, d)


def test_intersection_closed_forms():
    n = 64
    for r in (0, 5, 20):
        ball = sum(math.comb(n, i) for i in range(r + 1))
        assert memory.hamming_ball_intersection(n, r, 0) == ball  # d = 0: the whole ball
        assert memory.hamming_ball_intersection(n, r, 2 * r + 1) == 0  # balls too far apart to meet
    counts = [memory.hamming_ball_intersection(n, 15, d) for d in range(n + 1)]
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # non-increasing in d


def test_intersection_rejects_bad_arguments():
    with pytest.raises(ValueError, match="d must"):
        memory.hamming_ball_intersection(8, 2, 9)
    with pytest.raises(ValueError, match="r must"):
        memory.hamming_ball_intersection(8, -1, 2)


@pytest.mark.parametrize("r,r2_min", [(11, 0.97), (15, 0.97), (20, 0.97)])
def test_log_intersection_is_near_linear(r, r2_min):
    """Check T1(b): for n = 64 the log-intersection on 0 <= d <= r is near-linear in d."""
    ds = list(range(r + 1))
    beta, _, r2 = memory.fit_exponential_decay(ds, [memory.hamming_ball_intersection(64, r, d) for d in ds])
    assert r2 > r2_min
    assert beta > 0


def test_fit_exponential_decay_recovers_an_exact_exponential():
    x = torch.arange(10.0, dtype=DT)
    beta, log_c, r2 = memory.fit_exponential_decay(x, 3.0 * torch.exp(-0.7 * x))
    assert beta == pytest.approx(0.7, abs=1e-12)
    assert log_c == pytest.approx(math.log(3.0), abs=1e-12)
    assert r2 == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), lq=st.integers(1, 5), lk=st.integers(1, 9), beta=st.floats(0.01, 3.0),
       seed=st.integers(0, 2**31 - 1))
def test_exp_hamming_weights_equal_softmax_of_dot_products(n, lq, lk, beta, seed):
    """Check T1(a): for +-1 vectors exp(-beta*hamming) weights = softmax(beta/2 * q.K^T), to 1e-12."""
    g = torch.Generator().manual_seed(seed)
    q, p = bipolar(lq, n, g=g), bipolar(lk, n, g=g)
    v = torch.randn(lk, 3, generator=g, dtype=DT)
    w = memory.exp_hamming_weights(q, p, beta)
    torch.testing.assert_close(w, torch.softmax(beta / 2 * q @ p.T, -1), rtol=0, atol=1e-12)
    out = core.scaled_dot_product_attention(q, p, v, scale=beta / 2)
    torch.testing.assert_close(w @ v, out, rtol=0, atol=1e-12)


def test_hamming_distance_counts_differences():
    g = torch.Generator().manual_seed(0)
    a, b = bipolar(4, 13, g=g), bipolar(6, 13, g=g)
    expected = (a[:, None, :] != b[None, :, :]).sum(-1).to(DT)
    torch.testing.assert_close(memory.hamming_distance(a, b), expected)
    with pytest.raises(ValueError, match="-1 and \\+1"):
        memory.hamming_distance(a * 0.5, b)


def test_sdm_with_every_neuron_equals_intersection_read():
    """Kanerva's SDM with all 2^n hard locations reads exactly the intersection-weighted mean."""
    n, r = 8, 2
    g = torch.Generator().manual_seed(1)
    neurons = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=n)), dtype=DT)  # all 256 addresses
    patterns, values = bipolar(5, n, g=g), torch.randn(5, 3, generator=g, dtype=DT)
    q = bipolar(4, n, g=g)
    q[0] = patterns[2]  # one query sits on a stored pattern
    torch.testing.assert_close(memory.sdm_neuron_read(q, neurons, patterns, values, r),
                               memory.sdm_intersection_read(q, patterns, values, r), rtol=0, atol=1e-12)


def test_sdm_read_of_far_query_is_zero():
    n, r = 16, 1
    p = torch.ones(1, n, dtype=DT)
    out = memory.sdm_intersection_read(-p, p, torch.ones(1, 2, dtype=DT), r)  # distance 16 > 2r
    torch.testing.assert_close(out, torch.zeros(1, 2, dtype=DT))


# ------------------------------------------------------------ Hebbian memory


@settings(max_examples=30, deadline=None)
@given(dk=st.integers(1, 24), dv=st.integers(1, 7), data=st.data())
def test_orthonormal_keys_retrieve_exactly(dk, dv, data):
    """Check T2(a): orthonormal keys, N <= d_k: ||M k_j - v_j|| < 1e-6 for every j."""
    n = data.draw(st.integers(1, dk))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    basis, _ = torch.linalg.qr(torch.randn(dk, dk, generator=g, dtype=DT))
    k = basis.T[:n]  # (N, dk), orthonormal rows
    v = torch.randn(n, dv, generator=g, dtype=DT)
    read = memory.hebbian_read(memory.hebbian_write(k, v), k)
    assert (read - v).norm(dim=-1).max() < 1e-6


def test_hebbian_read_is_unnormalised_linear_attention():
    g = torch.Generator().manual_seed(2)
    k, v, q = (torch.randn(2, 7, 5, generator=g, dtype=DT), torch.randn(2, 7, 3, generator=g, dtype=DT),
               torch.randn(2, 4, 5, generator=g, dtype=DT))
    m = memory.hebbian_write(k, v)
    assert m.shape == (2, 3, 5)
    torch.testing.assert_close(memory.hebbian_read(m, q), (q @ k.transpose(-2, -1)) @ v)
    # M is a sum of one outer product per pair
    torch.testing.assert_close(m[0], sum(torch.outer(v[0, i], k[0, i]) for i in range(7)))


def test_crosstalk_energy_matches_closed_form():
    """E||M k_j - v_j||^2 = (N - 1)/d_k for unit random keys and unit random values."""
    g = torch.Generator().manual_seed(3)
    dk, dv, trials = 32, 16, 400
    for n in (8, 32, 64):
        k = torch.nn.functional.normalize(torch.randn(trials, n, dk, generator=g, dtype=DT), dim=-1)
        v = torch.nn.functional.normalize(torch.randn(trials, n, dv, generator=g, dtype=DT), dim=-1)
        err = ((memory.hebbian_read(memory.hebbian_write(k, v), k) - v) ** 2).sum(-1).mean(-1)  # per memory
        se = err.std() / math.sqrt(err.numel())
        assert abs(err.mean() - (n - 1) / dk) < 4 * se + 1e-12, (n, err.mean(), (n - 1) / dk)


def test_retrieval_accuracy_counts_nearest_value():
    v = torch.eye(3, dtype=DT)
    assert memory.retrieval_accuracy(v, v) == 1.0
    assert memory.retrieval_accuracy(v[[1, 0, 2]], v) == pytest.approx(1 / 3)


# --------------------------------------------------------------- recurrent form


@settings(max_examples=20, deadline=None)
@given(order=st.integers(0, 4), d=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_taylor_features_give_the_truncated_exponential(order, d, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(5, d, generator=g, dtype=DT), torch.randn(6, d, generator=g, dtype=DT)
    s = 0.7
    phi = memory.taylor_feature_map(order, s)
    assert phi(x).shape == (5, sum(d**n for n in range(order + 1)))
    dots = s * x @ y.T
    expected = sum(dots**n / math.factorial(n) for n in range(order + 1))
    torch.testing.assert_close(phi(x) @ phi(y).T, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 9), d=st.integers(1, 4), dv=st.integers(1, 4), order=st.integers(0, 3),
       batch=st.sampled_from([(), (2,), (2, 3)]), seed=st.integers(0, 2**31 - 1))
def test_recurrent_form_equals_parallel_causal_form(L, d, dv, order, batch, seed):
    """The RNN (running Hebbian state) and the parallel causal form agree for any feature map."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(*batch, L, d, generator=g, dtype=DT) for _ in range(2))
    v = torch.randn(*batch, L, dv, generator=g, dtype=DT)
    s = 0.3

    def elu1(x):
        return torch.nn.functional.elu(x) + 1

    torch.testing.assert_close(memory.recurrent_kernel_attention(q, k, v, elu1),
                               memory.parallel_kernel_attention(elu1(q), elu1(k), v, lambda a: a, scale=1.0),
                               rtol=1e-10, atol=1e-10)
    truncated = lambda a: sum(a**n / math.factorial(n) for n in range(order + 1))  # noqa: E731
    torch.testing.assert_close(
        memory.recurrent_kernel_attention(q, k, v, memory.taylor_feature_map(order, s)),
        memory.parallel_kernel_attention(q, k, v, truncated, scale=s), rtol=1e-9, atol=1e-9)


def test_recurrent_softmax_converges_to_causal_attention():
    """Check T2(b): the recurrent (Taylor) form of softmax attention equals parallel causal attention
    within the closed-form truncation bound, and exactly with the exp kernel."""
    g = torch.Generator().manual_seed(4)
    L, d, dv, s = 7, 3, 4, 0.5
    q = torch.nn.functional.normalize(torch.randn(2, L, d, generator=g, dtype=DT), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(2, L, d, generator=g, dtype=DT), dim=-1)
    v = torch.randn(2, L, dv, generator=g, dtype=DT)
    ref = core.scaled_dot_product_attention(q, k, v, causal=True, scale=s)
    torch.testing.assert_close(memory.parallel_kernel_attention(q, k, v, torch.exp, scale=s), ref,
                               rtol=1e-12, atol=1e-12)
    errors = []
    for order in range(1, 9):
        y = memory.recurrent_kernel_attention(q, k, v, memory.taylor_feature_map(order, s))
        errors.append((y - ref).abs().max().item())
    assert all(b < a for a, b in zip(errors, errors[1:]))  # more terms, smaller error
    # |x| = |s q.k| <= s: kernel relative error <= e^{2s} s^{P+1}/(P+1)!, output error <= 2 * that * max|v|
    bound = 2 * math.exp(2 * s) * s**9 / math.factorial(9) * v.abs().max().item()
    assert errors[-1] < bound
    assert errors[-1] < 1e-6


def test_first_order_recurrent_form_is_a_linear_attention():
    """P = 1: phi(x) = [1, sqrt(s) x], kernel 1 + s q.k, a linear attention."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, generator=g, dtype=DT)
    phi = memory.taylor_feature_map(1, 0.25)(x)
    torch.testing.assert_close(phi, torch.cat([torch.ones(4, 1, dtype=DT), 0.5 * x], -1))


def test_recurrent_form_validates_lengths():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="Lq == Lk"):
        memory.recurrent_kernel_attention(x, torch.zeros(4, 2), torch.zeros(4, 2), lambda a: a)
    with pytest.raises(ValueError, match="order"):
        memory.taylor_feature_map(-1)
