"""Lab 09's solution functions agree with attnlib.sparse and attnlib.flex on fresh random inputs."""

import torch
from helpers import exercise_namespace

from attnlib import flex, sparse


def test_lab09_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab09_sparse_and_long_context")
    for length, window, dilation in [(1, 1, 1), (19, 4, 3), (24, 7, 2)]:
        assert torch.equal(ns["sliding_window_mask"](length, window), sparse.sliding_window(length, window))
        assert torch.equal(ns["dilated_mask"](length, window, dilation), sparse.dilated(length, window, dilation))
        dense = flex.dense_mask(ns["dilated_window_mod"](window, dilation), 1, 2, length, length)
        assert torch.equal(dense, sparse.dilated(length, window, dilation).expand(1, 2, length, length))
    g = torch.Generator().manual_seed(2024)
    for n in (1, 3):
        mask = torch.rand(3, 14, 14, generator=g) > 0.8
        assert torch.equal(ns["receptive_field"](mask, n), sparse.receptive_field(mask, n))
    q, k, v = (torch.randn(2, 3, 31, 5, generator=g) for _ in range(3))
    for block, topk in [(1, 4), (6, 2), (8, 5)]:
        torch.testing.assert_close(ns["moba_attention"](q, k, v, block, topk),
                                   sparse.block_topk_attention(q, k, v, block=block, topk=topk))
    cents = torch.randn(4, 5, generator=g)
    torch.testing.assert_close(ns["kmeans_step"](cents, q, 0.8), sparse.online_kmeans_update(cents, q, decay=0.8))
    torch.testing.assert_close(ns["routing_attention"](q, k, v, cents), sparse.kmeans_routing_attention(q, k, v, cents))
    slopes = torch.tensor([0.2, 0.5, 1.0])
    score_mod = ns["capped_alibi_mod"](slopes, 2.0)
    ref_alibi, ref_cap = flex.alibi(slopes), flex.soft_cap(2.0)
    torch.testing.assert_close(flex.flex_attention(q, k, v, score_mod, flex.causal()),
                               flex.flex_attention(q, k, v, lambda s, *i: ref_cap(ref_alibi(s, *i), *i), flex.causal()))
