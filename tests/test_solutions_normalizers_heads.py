"""The lab06 and lab07 solutions' functions agree with attnlib.normalizers / attnlib.heads on fresh inputs."""

import torch
from helpers import exercise_namespace

from attnlib import heads, normalizers


def test_lab06_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab06_normalizers")
    g = torch.Generator().manual_seed(606)
    for shape in [(1,), (7,), (3, 5), (2, 4, 9)]:
        z = torch.randn(*shape, generator=g, dtype=torch.float64) * 3
        torch.testing.assert_close(ns["sparsemax"](z), normalizers.sparsemax(z))
        for alpha in (1.2, 1.5, 2.0, 3.0):
            torch.testing.assert_close(ns["entmax_bisect"](z, alpha), normalizers.entmax_bisect(z, alpha),
                                       rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(ns["softmax_with_sink"](z, 0.5), normalizers.softmax_with_sink(z, sink_logit=0.5))
        zz = z.clone().requires_grad_()
        p = normalizers.sparsemax(zz)
        up = torch.randn(*shape, generator=g, dtype=torch.float64)
        (expected,) = torch.autograd.grad((p * up).sum(), zz)
        torch.testing.assert_close(ns["sparsemax_backward"](p.detach(), up), expected)


def test_lab07_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab07_multi_head_family")
    g = torch.Generator().manual_seed(707)
    for h, kv, d_head, length in [(1, 1, 3, 1), (4, 2, 2, 5), (6, 3, 1, 7), (8, 1, 4, 4)]:
        torch.manual_seed(h * 10 + kv)
        module = heads.MultiHeadAttention(10, h, kv, head_dim=d_head)
        x = torch.randn(2, length, 10, generator=g)
        w = [p.detach() for p in (module.q_proj.weight, module.k_proj.weight, module.v_proj.weight,
                                  module.o_proj.weight)]
        for causal in (False, True):
            with torch.no_grad():
                expected = module(x, causal=causal)
            torch.testing.assert_close(ns["grouped_query_attention"](x, *w, h, kv, causal=causal), expected)
        assert ns["kv_cache_bytes"](3, kv, d_head, 2) == heads.kv_cache_bytes_per_token(kv, d_head, n_layers=3)
        assert ns["mla_cache_bytes"](3, 5 * h, d_head) == heads.mla_cache_bytes_per_token(5 * h, d_rope=d_head,
                                                                                          n_layers=3)
    interact = torch.rand(6, 6, generator=g)
    evaluate = lambda m: float(m.flatten() @ interact @ m.flatten())  # noqa: E731
    assert ns["greedy_prune"](evaluate, 2, 3) == heads.greedy_prune(evaluate, 2, 3)
