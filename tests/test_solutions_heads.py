"""Lab 14's solution functions agree with attnlib.interp.heads on fresh random inputs (labs and library never drift)."""

import torch
from helpers import exercise_namespace

import attnlib.interp as interp


def test_lab14_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab14_heads_as_mechanisms")
    g = torch.Generator().manual_seed(1414)
    for b, h, n, vocab in [(2, 3, 9, 3), (1, 2, 14, 6)]:
        tokens = torch.randint(0, vocab, (b, n), generator=g)
        w = torch.softmax(torch.randn(b, h, n, n, generator=g).masked_fill(~torch.ones(n, n).tril().bool(), -1e9), -1)
        torch.testing.assert_close(ns["induction_score"](w, tokens), interp.induction_score(w, tokens))
        needle = torch.rand(b, n, generator=g) < 0.3
        generated = torch.randint(-1, vocab, (b, n), generator=g)
        torch.testing.assert_close(ns["retrieval_score"](w, tokens, generated, needle),
                                   interp.retrieval_score(w, tokens, generated, needle))
        for n_ctx in (1, n // 2, n):
            torch.testing.assert_close(ns["lookback_ratio"](w, n_ctx), interp.lookback_ratio(w, n_ctx))
    base, masked = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    torch.testing.assert_close(ns["contrast_decode"](base, masked, 0.7), interp.contrast_decode(base, masked, 0.7))
    torch.manual_seed(0)
    model = interp.AttentionOnlyTransformer(9, d_model=8, n_layers=2, n_heads=2, max_len=6).eval()
    tokens = torch.randint(0, 9, (2, 6))
    with torch.no_grad():
        with ns["head_ablation"](model, [(1, 0)]):
            mine = model(tokens)
        with interp.head_ablation(model, [(1, 0)]):
            theirs = model(tokens)
    torch.testing.assert_close(mine, theirs)
