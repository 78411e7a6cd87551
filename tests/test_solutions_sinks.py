"""Lab 12's solution functions agree with attnlib.sinks on fresh random inputs."""

import torch
from helpers import exercise_namespace

from attnlib import sinks
from attnlib.checks import random_attention_cases
from attnlib.core import combine_masks
from attnlib.masks import causal_mask


def test_lab12_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab12_sinks_and_massive_activations")
    g = torch.Generator().manual_seed(1201)
    for lead, lq, lk in [((2, 3), 7, 7), ((1,), 5, 9), ((3, 2), 9, 4)]:
        s = torch.randn(*lead, lq, lk, generator=g) * 3 + 4 * (torch.rand(*lead, 1, lk, generator=g) < 0.3)
        w = torch.softmax(s.masked_fill(~causal_mask(lq, lk), -1e9), -1) * causal_mask(lq, lk)
        for causal in (True, False):
            torch.testing.assert_close(ns["sink_scores"](w, causal=causal), sinks.sink_scores(w, causal=causal))
        for threshold in (0.1, 0.3):
            assert abs(ns["sink_ratio"]([w, w[:1]], threshold=threshold)
                       - sinks.sink_ratio([w, w[:1]], threshold=threshold)) < 1e-6
            torch.testing.assert_close(ns["calibrate_attention"](w, threshold, 0.4),
                                       sinks.calibrate_attention(w, threshold, 0.4))
    for case in random_attention_cases(seed=1202, n=10):
        mask = combine_masks(case.mask, case.causal, case.q.shape[-2], case.k.shape[-2], case.q.device)
        key = torch.randn(case.q.shape[-1], generator=g)
        for got, want in zip(ns["sink_attention"](case.q, case.k, case.v, key, mask),
                             sinks.sink_attention(case.q, case.k, case.v, key, mask)):
            torch.testing.assert_close(got, want)
        for got, want in zip(ns["sigmoid_attention"](case.q, case.k, case.v, mask=mask),
                             sinks.sigmoid_attention(case.q, case.k, case.v, mask=mask)):
            torch.testing.assert_close(got, want)
