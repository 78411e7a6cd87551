"""The solutions' functions agree with attnlib on fresh random inputs (so labs and library never drift)."""

import torch
from helpers import exercise_namespace

import attnlib
from attnlib.checks import random_attention_cases


def test_lab01_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab01_scaled_dot_product")
    for case in random_attention_cases(seed=1001, n=12):
        out, w = ns["attention"](case.q, case.k, case.v, case.mask, causal=case.causal)
        ref, ref_w = attnlib.core.scaled_dot_product_attention(case.q, case.k, case.v, case.mask, causal=case.causal,
                                                               return_weights=True)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(w, ref_w)
        chunked = ns["chunked_attention"](case.q, case.k, case.v, causal=case.causal, chunk_size=3)
        torch.testing.assert_close(chunked, attnlib.core.chunked_attention(case.q, case.k, case.v, causal=case.causal))
    for lq, lk in [(3, 3), (2, 6), (6, 2)]:
        assert torch.equal(ns["causal_mask"](lq, lk), attnlib.masks.causal_mask(lq, lk))
    lengths = torch.tensor([0, 3, 5])
    assert torch.equal(ns["padding_mask"](lengths, 5), attnlib.masks.padding_mask(lengths, 5))
