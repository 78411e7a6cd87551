"""Tests for attnlib.rank: ranks, the Eckart-Young bound, rank collapse and variance subspaces."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.rank import (attention_stack, best_rank_r, collapse_residual, dims_for_variance, eckart_young_error,
                          effective_rank, fit_attention_pattern, fit_low_rank_logits, logit_rank)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 12), d=st.integers(1, 14), seed=st.integers(0, 1000))
def test_logit_rank_is_min_of_dims(n, m, d, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(m, d, generator=g, dtype=torch.float64)
    assert int(logit_rank(q, k)) == min(n, m, d)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), m=st.integers(1, 9), r=st.integers(0, 9), seed=st.integers(0, 1000))
def test_eckart_young_matches_svd_and_random_products_never_beat_it(n, m, r, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, m, generator=g, dtype=torch.float64)
    bound = eckart_young_error(s, r)
    torch.testing.assert_close(torch.linalg.norm(s - best_rank_r(s, r)), bound)
    assert int(torch.linalg.matrix_rank(best_rank_r(s, r))) <= r
    if r > 0:
        for _ in range(5):  # random rank-r matrices (and their least-squares rescaling) stay above the bound
            approx = torch.randn(n, r, generator=g, dtype=torch.float64) @ torch.randn(r, m, generator=g, dtype=torch.float64)
            c = (approx * s).sum() / (approx * approx).sum()
            assert torch.linalg.norm(s - c * approx) >= bound - 1e-12


def test_fit_low_rank_logits_reaches_but_never_beats_the_bound():
    s = torch.randn(10, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for r in (1, 3):
        q, k, err = fit_low_rank_logits(s, r, steps=300)
        bound = eckart_young_error(s, r)
        assert q.shape == (10, r) and err >= bound - 1e-12 and err < 1.05 * bound


def test_fit_attention_pattern_full_width_fits_dense_target():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(6, 6, generator=g, dtype=torch.float64), -1)
    kl_narrow, _ = fit_attention_pattern(p, 1, steps=200, lr=0.1)
    kl_full, p_fit = fit_attention_pattern(p, 6, steps=200, lr=0.1)
    assert kl_full < 1e-3 < kl_narrow and torch.allclose(p_fit.sum(-1), torch.ones(6, dtype=torch.float64))


def test_collapse_residual_and_attention_stack():
    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert float(collapse_residual(torch.ones(12, 1) * x[0])) < 1e-12  # identical rows
    torch.testing.assert_close(collapse_residual(3 * x), collapse_residual(x))  # scale invariant
    no_skip = attention_stack(x, 8, skip=False, seed=0)
    assert no_skip.shape == (9,) and (no_skip[1:] <= no_skip[:-1] + 1e-12).all() and no_skip[-1] < 1e-6
    assert attention_stack(x, 8, skip=True, seed=0)[-1] > 100 * no_skip[-1]


def test_attention_stack_norms_keep_or_lose_the_logit_scale():
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    log_n = torch.log(torch.tensor(16.0, dtype=torch.float64))
    res_rms, ent_rms = attention_stack(x, 6, skip=False, seed=1, norm="rms", return_entropy=True)
    res_frob, ent_frob = attention_stack(x, 6, skip=False, seed=1, norm="frobenius", return_entropy=True)
    assert ent_rms.shape == (6,) and res_rms.shape == (7,)
    assert ent_rms[1] < log_n - 0.05 and ent_frob[1] > log_n - 1e-3  # whole-matrix scaling: uniform attention
    torch.testing.assert_close(ent_rms[0], ent_frob[0])  # same first layer
    for norm in ("rms", "layernorm", "none"):
        assert attention_stack(x, 8, skip=False, seed=0, norm=norm)[-1] < 1e-6  # collapse survives per-row norms
    # the rms stack equals a hand-written loop: softmax(X Wq (X Wk)^T / sqrt d) X Wv, then rows to RMS 1
    g = torch.Generator().manual_seed(2)
    wq, wk, wv = (torch.randn(32, 32, generator=g, dtype=torch.float64) / 32**0.5 for _ in range(3))
    a = torch.softmax((x @ wq) @ (x @ wk).T / 32**0.5, -1)
    y = x + a @ x @ wv
    y = y / y.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(attention_stack(x, 1, skip=True, seed=2, norm="rms")[-1], collapse_residual(y))
    with pytest.raises(ValueError, match="norm"):
        attention_stack(x, 2, skip=False, norm="batch")


def test_dims_for_variance_and_effective_rank():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 10, generator=g, dtype=torch.float64)
    assert dims_for_variance(x, 1.0) == 3 and dims_for_variance(x, 0.5) <= 3
    scales = torch.tensor([10.0, 1.0, 0.01], dtype=torch.float64)
    y = torch.randn(2000, 3, generator=g, dtype=torch.float64) * scales
    assert dims_for_variance(y, 0.9) == 1 and dims_for_variance(y, 0.999) == 2
    torch.testing.assert_close(effective_rank(torch.eye(5, dtype=torch.float64)), torch.tensor(5.0, dtype=torch.float64))
    torch.testing.assert_close(effective_rank(torch.ones(4, 4, dtype=torch.float64)), torch.tensor(1.0, dtype=torch.float64))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="q and k"):
        logit_rank(torch.randn(3, 2), torch.randn(3, 4))
    with pytest.raises(ValueError, match="r must"):
        eckart_young_error(torch.randn(3, 3), -1)
    with pytest.raises(ValueError, match="fraction"):
        dims_for_variance(torch.randn(5, 3), 1.5)
    with pytest.raises(TypeError, match="x"):
        collapse_residual([[1.0]])
