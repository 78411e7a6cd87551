"""Labs 04 and 05: the solutions' exercise functions agree with attnlib on fresh random inputs."""

import torch
from helpers import exercise_namespace

import attnlib.lengthgen
import attnlib.position


def test_lab04_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab04_position")
    g = torch.Generator().manual_seed(2004)
    for length, d in [(1, 2), (6, 8), (9, 4)]:
        x = torch.randn(3, length, d, generator=g, dtype=torch.float64)
        pos = torch.randint(0, 1000, (length,), generator=g)
        torch.testing.assert_close(ns["apply_rope"](x, pos, 500.0), attnlib.position.apply_rope(x, pos, 500.0))
    for n in range(1, 20):
        torch.testing.assert_close(ns["alibi_slopes"](n), attnlib.position.alibi_slopes(n))
    for n, lq, lk in [(3, 4, 4), (5, 2, 6)]:
        torch.testing.assert_close(ns["alibi_bias"](n, lq, lk), attnlib.position.alibi_bias(n, lq, lk))
    for length, big_k, causal in [(1, 1, True), (7, 2, False), (8, 3, True)]:
        q, k, v = (torch.randn(2, 2, length, 4, generator=g, dtype=torch.float64) for _ in range(3))
        rk, rv = (torch.randn(2 * big_k + 1, 4, generator=g, dtype=torch.float64) for _ in range(2))
        torch.testing.assert_close(ns["shaw_attention"](q, k, v, rk, rv, causal),
                                   attnlib.position.shaw_attention(q, k, v, rk, rv, causal=causal))
    gates = torch.rand(2, 7, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ns["cope_positions"](gates), attnlib.position.cope_positions(gates))


def test_lab05_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab05_length_generalization")
    g = torch.Generator().manual_seed(2005)
    for h, length, tau in [(1, 1, 0.0), (3, 8, -0.3), (2, 11, float("-inf"))]:
        q, k, v = (torch.randn(2, h, length, 4, generator=g, dtype=torch.float64) for _ in range(3))
        slopes = attnlib.position.alibi_slopes(h).double()
        out, w = ns["threshold_relative_attention"](q, k, v, tau, slopes)
        ref, ref_w = attnlib.lengthgen.threshold_relative_attention(q, k, v, tau=tau, slopes=slopes,
                                                                    return_weights=True)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(w, ref_w)
    mu = torch.rand(3, 9, generator=g, dtype=torch.float64).cumsum(-1)
    sigma = torch.rand(3, 9, generator=g, dtype=torch.float64) + 0.2
    torch.testing.assert_close(ns["location_weights"](mu, sigma), attnlib.lengthgen.location_weights(mu, sigma))
