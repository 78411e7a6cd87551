"""attnlib.memory_augmented against torch SDPA, closed forms, naive loops and properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.core import scaled_dot_product_attention
from attnlib.memory_augmented import (KNNMemory, NeuralMemory, crossbatch_negatives, delta_rule_write,
                                      joint_softmax_read, knn_read, neural_memory_step, window_memories)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 9), st.integers(1, 7), st.integers(0, 3))
def test_delta_rule_exact(dk, dv, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(2, dv, dk, generator=g, dtype=torch.float64)
    k, v = torch.randn(2, dk, generator=g, dtype=torch.float64), torch.randn(2, dv, generator=g, dtype=torch.float64)
    m2 = delta_rule_write(m, k, v)
    torch.testing.assert_close((m2 @ k[..., None])[..., 0], v)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 6), st.integers(1, 6), st.integers(0, 3))
def test_knn_full_capacity_equals_full_attention(n_mem, lc, d, dv, seed):
    g = torch.Generator().manual_seed(seed)
    mk, mv = torch.randn(n_mem, d, generator=g), torch.randn(n_mem, dv, generator=g)
    q, k, v = torch.randn(lc, d, generator=g), torch.randn(lc, d, generator=g), torch.randn(lc, dv, generator=g)
    mem = KNNMemory(n_mem, n_mem)
    mem.add(mk, mv)
    out = mem.attend(q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(q[None], torch.cat([mk, k])[None], torch.cat([mv, v])[None])[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_empty_memory_is_local_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(5, 3, generator=g), torch.randn(7, 3, generator=g), torch.randn(7, 2, generator=g)
    mask = torch.rand(5, 7, generator=g) > 0.4
    torch.testing.assert_close(KNNMemory(4, 2).attend(q, k, v, mask), scaled_dot_product_attention(q, k, v, mask))


def test_knn_topk_is_exact_and_fifo():
    mem = KNNMemory(3, 1)
    mem.add(torch.eye(4)[:2], torch.arange(2.0)[:, None])
    mem.add(torch.eye(4)[2:], torch.arange(2.0, 4)[:, None])
    assert len(mem) == 3  # oldest (e0) dropped
    keys, vals = mem.retrieve(torch.eye(4)[3:])
    torch.testing.assert_close(vals, torch.tensor([[[3.0]]]))


def test_knn_errors():
    with pytest.raises(ValueError, match="k must be <= capacity"):
        KNNMemory(2, 3)
    with pytest.raises(ValueError):
        KNNMemory(0, 1)
    mem = KNNMemory(4, 2)
    with pytest.raises(ValueError, match="equal N"):
        mem.add(torch.randn(3, 2), torch.randn(2, 2))


def test_neural_memory_loss_decreases():
    g = torch.Generator().manual_seed(1)
    k, v = torch.randn(6, 8, generator=g), torch.randn(6, 3, generator=g)
    mem = NeuralMemory(8, 3, lr=0.01)
    losses = [float(mem.loss(k, v))] + [mem.step(k, v) for _ in range(30)]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    with pytest.raises(ValueError):
        mem.step(torch.randn(6, 5), v)


def test_window_memories():
    x = torch.arange(10.0).reshape(5, 2)
    w = window_memories(x, 2)
    assert w.shape == (4, 4)
    torch.testing.assert_close(w[1], torch.tensor([2.0, 3.0, 4.0, 5.0]))
    torch.testing.assert_close(window_memories(x, 1), x)
    with pytest.raises(ValueError):
        window_memories(x, 6)


def test_fifo_first_chunk_and_closed_gate_are_local():
    from attnlib.memory_augmented import GatedFIFOMemory
    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(2, 11, 3, generator=g), torch.randn(2, 11, 3, generator=g), torch.randn(2, 11, 4, generator=g)
    out = GatedFIFOMemory(2, 4)(q, k, v)
    torch.testing.assert_close(out[..., :4, :], scaled_dot_product_attention(q[..., :4, :], k[..., :4, :],
                                                                              v[..., :4, :], causal=True))
    closed = GatedFIFOMemory(2, 4, gate=-1e4)(q, k, v)
    local = torch.cat([scaled_dot_product_attention(q[..., s:s + 4, :], k[..., s:s + 4, :], v[..., s:s + 4, :],
                                                    causal=True) for s in (0, 4, 8)], -2)
    torch.testing.assert_close(closed, local)
    with pytest.raises(ValueError):
        GatedFIFOMemory(2, 4)(q, k[..., :5, :], v)


def test_joint_softmax_read_shape_errors():
    q, k, v = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 2)
    with pytest.raises(ValueError, match="key dim"):
        joint_softmax_read(q, torch.randn(6, 3), torch.randn(6, 2), k, v)
    with pytest.raises(ValueError, match="must match"):
        joint_softmax_read(q, torch.randn(6, 4), torch.randn(7, 2), k, v)
    with pytest.raises(ValueError, match="equal dv"):
        joint_softmax_read(q, torch.randn(6, 4), torch.randn(6, 3), k, v)


def test_joint_softmax_read_per_query_memory_equals_sdpa_per_row():
    g = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(2, 4, 3, generator=g), torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 2, generator=g)
    mk, mv = torch.randn(2, 4, 6, 3, generator=g), torch.randn(2, 4, 6, 2, generator=g)
    out = joint_softmax_read(q, mk, mv, k, v)
    for b in range(2):
        for i in range(4):
            ref = torch.nn.functional.scaled_dot_product_attention(
                q[b, i][None, None], torch.cat([mk[b, i], k[b]])[None], torch.cat([mv[b, i], v[b]])[None])[0, 0]
            torch.testing.assert_close(out[b, i], ref)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 7), st.integers(1, 5), st.integers(0, 3), st.floats(0.1, 3.0))
def test_crossbatch_negatives_equals_naive_loop(n, d, seed, scale):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(3, n, d, generator=g, dtype=torch.float64), torch.randn(3, n, d, generator=g, dtype=torch.float64)
    total = 0.0
    for b in range(3):
        for i in range(n):
            s = [scale * float(q[b, i] @ k[b, j]) for j in range(n)]
            total += -(s[i] - torch.logsumexp(torch.tensor(s, dtype=torch.float64), 0).item())
    torch.testing.assert_close(crossbatch_negatives(q, k, scale=scale), torch.tensor(total / (3 * n), dtype=torch.float64))
    # flattening the groups adds the other groups' keys as negatives: every row's denominator grows
    flat = crossbatch_negatives(q.reshape(1, -1, d), k.reshape(1, -1, d), scale=scale)
    assert flat >= crossbatch_negatives(q, k, scale=scale) - 1e-12


def test_crossbatch_negatives_closed_forms_and_errors():
    # orthonormal keys, q = k: every off-diagonal logit is 0, so the loss is log(1 + (N-1) e^{-s})
    k = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(crossbatch_negatives(k, k, scale=2.0),
                               torch.log(torch.tensor(1 + 3 * torch.e ** -2.0, dtype=torch.float64)))
    torch.testing.assert_close(crossbatch_negatives(torch.randn(1, 3), torch.randn(1, 3)), torch.tensor(0.0))
    with pytest.raises(ValueError, match="same shape"):
        crossbatch_negatives(torch.randn(4, 3), torch.randn(5, 3))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 8), st.integers(1, 10), st.integers(1, 6), st.integers(0, 3))
def test_knn_read_batched_memory(n_mem, top_k, lc, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, 3, 4, generator=g), torch.randn(2, lc, 4, generator=g), torch.randn(2, lc, 3, generator=g)
    mk, mv = torch.randn(2, n_mem, 4, generator=g), torch.randn(2, n_mem, 3, generator=g)
    out = knn_read(q, mk, mv, k, v, top_k)
    for b in range(2):
        if n_mem == 0:
            ref = scaled_dot_product_attention(q[b], k[b], v[b])
        else:
            mem = KNNMemory(n_mem, min(top_k, n_mem))
            mem.add(mk[b], mv[b])
            ref = mem.attend(q[b], k[b], v[b])
        torch.testing.assert_close(out[b], ref)
    if top_k >= n_mem:  # every stored pair retrieved: full attention over memory and context
        full = torch.nn.functional.scaled_dot_product_attention(q, torch.cat([mk, k], 1), torch.cat([mv, v], 1))
        torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        knn_read(q, mk, mv, k, v, 0)


def test_neural_memory_step_matches_autograd_and_class():
    g = torch.Generator().manual_seed(4)
    m = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = torch.randn(2, 7, 5, generator=g, dtype=torch.float64), torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    ((k @ m.mT - v) ** 2).sum(-1).mean(-1).sum().backward()
    m2, s2 = neural_memory_step(m.detach(), torch.zeros_like(m.detach()), k, v, lr=0.1)
    torch.testing.assert_close(m2, m.detach() - 0.1 * m.grad)
    torch.testing.assert_close(s2, -0.1 * m.grad)
    mem = NeuralMemory(5, 3, lr=0.1, momentum=0.5, decay=0.1, dtype=torch.float64)
    mem.m = m.detach()[0].clone()
    mem.step(k[0], v[0])
    ref, _ = neural_memory_step(m.detach()[0], torch.zeros(3, 5, dtype=torch.float64), k[0], v[0], 0.1, 0.5, 0.1)
    torch.testing.assert_close(mem.m, ref)
    with pytest.raises(ValueError):
        neural_memory_step(m.detach(), m.detach(), k, v, lr=0.0)
    with pytest.raises(ValueError):
        neural_memory_step(m.detach(), m.detach()[..., :4], k, v, lr=0.1)


def test_capacity_and_shape_errors():
    from attnlib.memory_augmented import GatedFIFOMemory
    for bad in (0, -1, 2.5):
        with pytest.raises((ValueError, TypeError)):
            GatedFIFOMemory(bad, 4)
        with pytest.raises((ValueError, TypeError)):
            GatedFIFOMemory(2, bad)
        with pytest.raises((ValueError, TypeError)):
            KNNMemory(bad, 1)
    mem = KNNMemory(4, 2)
    mem.add(torch.randn(3, 5), torch.randn(3, 2))
    with pytest.raises(ValueError, match="stored"):
        mem.add(torch.randn(1, 4), torch.randn(1, 2))  # key dim 4, stored 5
    with pytest.raises(ValueError, match="key dim"):
        mem.retrieve(torch.randn(2, 4))
    with pytest.raises(ValueError):
        delta_rule_write(torch.zeros(3, 4), torch.ones(3), torch.ones(3))
