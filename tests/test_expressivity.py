"""Tests for attnlib.expressivity: the prefix decomposition against attention over the concatenation (attnlib
and torch SDPA) and its closed-form properties; the scan-and-snap toy against its formulas and its dynamics."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.expressivity import ScanSnapToy, prefix_decomposition, scan_snap_data, train_scan_snap

SETTINGS = dict(max_examples=30, deadline=None)


@settings(**SETTINGS)
@given(b=st.integers(1, 3), lq=st.integers(1, 6), lc=st.integers(1, 9), lp=st.integers(1, 7),
       d=st.integers(1, 9), dv=st.integers(1, 5), spread=st.floats(0.1, 5.0), seed=st.integers(0, 10**6))
def test_identity_matches_sdpa_over_the_concatenation(b, lq, lc, lp, d, dv, spread, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, lq, d, generator=g, dtype=torch.float64)
    k_c, v_c = torch.randn(b, lc, d, generator=g, dtype=torch.float64), torch.randn(b, lc, dv, generator=g, dtype=torch.float64)
    k_p = spread * torch.randn(b, lp, d, generator=g, dtype=torch.float64)
    v_p = torch.randn(b, lp, dv, generator=g, dtype=torch.float64)
    lam, out_c, out_p = prefix_decomposition(q, k_c, v_c, k_p, v_p)
    assert lam.shape == (b, lq, 1) and out_c.shape == out_p.shape == (b, lq, dv)
    full = torch.nn.functional.scaled_dot_product_attention(q, torch.cat([k_p, k_c], -2), torch.cat([v_p, v_c], -2))
    torch.testing.assert_close((1 - lam) * out_c + lam * out_p, full, atol=1e-12, rtol=0)
    torch.testing.assert_close(out_c, torch.nn.functional.scaled_dot_product_attention(q, k_c, v_c), atol=1e-12, rtol=0)
    # lam is Z_P / (Z_P + Z_C), computed from the scores directly.
    s = lambda k: torch.exp(q @ k.transpose(-2, -1) / math.sqrt(d)).sum(-1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(lam, s(k_p) / (s(k_p) + s(k_c)), atol=1e-12, rtol=1e-10)
    assert ((lam > 0) & (lam < 1)).all()


def test_explicit_scale_empty_prefix_and_no_overflow():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g), torch.randn(5, 2, generator=g)
    lam, out_c, out_p = prefix_decomposition(q, k, v, k[:0], v[:0], scale=0.7)
    assert (lam == 0).all() and (out_p == 0).all()
    torch.testing.assert_close(out_c, torch.softmax(0.7 * q @ k.T, -1) @ v)
    # Huge prefix scores: the log-sum-exp form gives lam -> 1 and the prefix output, never NaN.
    lam, out_c, out_p = prefix_decomposition(q, k, v, 1e4 * q[:1], v[:1])
    assert torch.isfinite(lam).all() and torch.isfinite(out_p).all()


def test_validation_names_the_argument():
    q, k, v = torch.randn(2, 4), torch.randn(3, 4), torch.randn(3, 2)
    with pytest.raises(ValueError, match="k_content"):
        prefix_decomposition(q, k[:0], v[:0], k, v)
    with pytest.raises(ValueError, match="v_prefix"):
        prefix_decomposition(q, k, v, k, torch.randn(3, 5))
    with pytest.raises(ValueError, match="q and k"):
        prefix_decomposition(q, k, v, torch.randn(3, 5), v)


def test_scan_snap_data_groups_and_determinism():
    data = scan_snap_data(200, n_classes=3, m_distinct=2, m_common=4, length=10, p_common=0.3, seed=1)
    assert data.contexts.shape == (200, 10) and data.targets.shape == (200,) and data.vocab_size == 10
    assert torch.equal(scan_snap_data(200, n_classes=3, m_distinct=2, m_common=4, length=10, p_common=0.3,
                                      seed=1).contexts, data.contexts)
    for row, n in zip(data.contexts, data.targets):
        distinct = row[~torch.isin(row, data.common)]
        assert torch.isin(distinct, data.distinct[n]).all()  # distinct tokens belong to the row's class only
    share = torch.isin(data.contexts, data.common).double().mean().item()
    assert abs(share - 0.3) < 0.05
    with pytest.raises(ValueError, match="p_common"):
        scan_snap_data(5, p_common=1.0)


def test_toy_starts_uniform_and_matches_its_formula():
    data = scan_snap_data(8, length=6, seed=0)
    model = ScanSnapToy(data.vocab_size, 4)
    torch.testing.assert_close(model.attention(data.contexts), torch.full((8, 6), 1 / 6))
    with torch.no_grad():
        model.z.normal_()
        model.Y.normal_()
    alpha = torch.softmax(model.z[data.contexts], -1)
    loop = torch.stack([sum(alpha[i, t] * model.Y[:, data.contexts[i, t]] for t in range(6)) for i in range(8)])
    torch.testing.assert_close(model(data.contexts), loop)


def test_training_scans_onto_distinct_tokens_and_the_ratio_decides_the_mix():
    data = scan_snap_data(512, seed=0)
    evenness = {}
    for ratio in (10.0, 0.1):
        model, hist = train_scan_snap(data, lr_attention=1.0, lr_decoder=ratio, steps=800, record_every=100)
        assert hist["step"][0] == 0 and hist["step"][-1] == 800
        assert hist["distinct"][-1] > hist["distinct"][0] + 0.3
        torch.testing.assert_close(torch.tensor(hist["distinct"]) + torch.tensor(hist["common"]),
                                   torch.ones(len(hist["step"]), dtype=torch.float32))
        w = torch.softmax(model.z.detach()[data.distinct], -1)
        evenness[ratio] = (-(w * w.log()).sum(-1) / math.log(3)).min().item()
    assert evenness[10.0] > 0.9 > 0.5 > evenness[0.1], evenness
    with pytest.raises(ValueError, match="lr_decoder"):
        train_scan_snap(data, lr_attention=1.0, lr_decoder=0, steps=1)
