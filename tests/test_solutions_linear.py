"""The lab08 solution's functions agree with attnlib.linear on fresh random inputs."""

import torch
import torch.nn.functional as F
from helpers import exercise_namespace

from attnlib import linear as LA


def test_lab08_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab08_linear_attention")
    g = torch.Generator().manual_seed(808)
    elu1 = lambda x: F.elu(x) + 1  # noqa: E731
    x = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ns["relu_features"](x), LA.relu(x))
    torch.testing.assert_close(ns["elu_plus_one"](x), LA.elu_plus_one(x))
    rf = LA.softmax_kernel_features(5, 17, seed=3, dtype=torch.float64)
    torch.testing.assert_close(ns["positive_random_features"](x, rf.omega), rf(x))
    for lead, lq, lk in [((1,), 1, 1), ((2,), 5, 8), ((2, 3), 7, 4)]:
        q, k, v = (torch.randn(*lead, n, 4, generator=g, dtype=torch.float64) for n in (lq, lk, lk))
        torch.testing.assert_close(ns["linear_attention_parallel"](q, k, v, elu1), LA.linear_attention(q, k, v))
    for lead, length in [((1,), 1), ((2,), 9), ((2, 3), 6)]:
        q, k, v = (torch.randn(*lead, length, 3, generator=g, dtype=torch.float64) for _ in range(3))
        expected = LA.linear_attention(q, k, v, causal=True, feature_map="relu")
        torch.testing.assert_close(ns["causal_linear_attention"](q, k, v, torch.relu), expected)
        out, (s, z) = ns["recurrent_linear_attention"](q, k, v, torch.relu)
        ref, (s_ref, z_ref) = LA.linear_attention_recurrent(q, k, v, feature_map="relu", return_state=True)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close((s, z), (s_ref, z_ref))
        decay = torch.rand(*lead, length, generator=g, dtype=torch.float64) * 0.8 + 0.2
        torch.testing.assert_close(ns["gated_linear_attention"](q, k, v, decay), LA.gated_linear_attention(q, k, v, decay))
        alpha = torch.tensor([0.2, 0.7, 1.0], dtype=torch.float64)
        torch.testing.assert_close(ns["ema"](v, alpha), LA.ema(v, alpha))
