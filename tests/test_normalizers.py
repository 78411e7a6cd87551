"""Tests for attnlib.normalizers: against the `entmax` package, closed forms, gradcheck and properties."""

import entmax
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib import normalizers as N
from attnlib.core import scaled_dot_product_attention

ALPHAS = [1.1, 1.25, 1.5, 2.0, 2.5, 4.0]


def _x(shape, seed=0, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


# ---------------------------------------------------------------- values against the entmax package
@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_sparsemax_and_entmax15_match_entmax_package(dim):
    x = _x((4, 9, 5), seed=1)
    torch.testing.assert_close(N.sparsemax(x, dim=dim), entmax.sparsemax(x, dim=dim))
    torch.testing.assert_close(N.entmax15(x, dim=dim), entmax.entmax15(x, dim=dim))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_entmax_bisect_matches_entmax_package(alpha):
    x = _x((6, 11), seed=2)
    torch.testing.assert_close(N.entmax_bisect(x, alpha), entmax.entmax_bisect(x, alpha, dim=-1),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15", "bisect"])
def test_gradients_match_entmax_package(name):
    x = _x((5, 8), seed=3)
    g = _x((5, 8), seed=4)
    ours = {"sparsemax": N.sparsemax, "entmax15": N.entmax15, "bisect": lambda t: N.entmax_bisect(t, 1.7)}[name]
    theirs = {"sparsemax": lambda t: entmax.sparsemax(t, dim=-1), "entmax15": lambda t: entmax.entmax15(t, dim=-1),
              "bisect": lambda t: entmax.entmax_bisect(t, 1.7, dim=-1)}[name]
    grads = []
    for fn in (ours, theirs):
        xx = x.clone().requires_grad_()
        (fn(xx) * g).sum().backward()
        grads.append(xx.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- closed forms and identities
def test_two_input_sparsemax_closed_form():
    z = _x((1000, 2), seed=5, scale=1.5)
    p1 = torch.clamp((z[:, 0] - z[:, 1] + 1) / 2, 0, 1)
    torch.testing.assert_close(N.sparsemax(z)[:, 0], p1)
    torch.testing.assert_close(N.sparsemax(z)[:, 1], 1 - p1)


def test_entmax_alpha2_is_sparsemax_alpha15_is_entmax15_alpha1_is_softmax():
    x = _x((7, 13), seed=6)
    torch.testing.assert_close(N.entmax_bisect(x, 2.0), N.sparsemax(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(N.entmax_bisect(x, 1.5), N.entmax15(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(N.entmax_bisect(x, 1.0), torch.softmax(x, -1))
    assert (N.entmax_bisect(x, 1.001) - torch.softmax(x, -1)).abs().max() < 5e-3


def test_sparsemax_jacobian_is_the_closed_form():
    z = _x((9,), seed=7)
    jac = torch.autograd.functional.jacobian(N.sparsemax, z)
    s = (N.sparsemax(z) > 0).double()
    torch.testing.assert_close(jac, torch.diag(s) - torch.outer(s, s) / s.sum())


@pytest.mark.parametrize("fn", [N.sparsemax, N.entmax15, lambda t: N.entmax_bisect(t, 1.3),
                                lambda t: N.entmax_bisect(t, 2.7)])
def test_gradcheck_float64(fn):
    x = _x((3, 6), seed=8).requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,))


def test_sparse_normalizers_are_exactly_sparse_softmax_is_not():
    x = torch.tensor([[3.0, 1.0, 0.5, -2.0]])
    assert (N.sparsemax(x) == 0).any() and (N.entmax15(x) == 0).any()
    assert (torch.softmax(x, -1) > 0).all()


def test_large_logits_and_half_precision():
    x = _x((4, 10), seed=9, scale=1e4).float()
    for fn in (N.sparsemax, N.entmax15, lambda t: N.entmax_bisect(t, 1.5)):
        p = fn(x)
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(4))
        ph = fn(x.half() / 1e3)
        assert ph.dtype == torch.float16 and torch.isfinite(ph).all()
        torch.testing.assert_close(ph.float(), fn(x.half().float() / 1e3), rtol=1e-3, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=3), seed=st.integers(0, 10_000),
       alpha=st.floats(1.05, 3.0), scale=st.sampled_from([0.01, 1.0, 30.0]))
def test_properties_hypothesis(shape, seed, alpha, scale):
    x = _x(shape, seed=seed, scale=scale)
    dim = seed % len(shape)
    for p in (N.sparsemax(x, dim), N.entmax15(x, dim), N.entmax_bisect(x, alpha, dim)):
        assert p.shape == x.shape and (p >= 0).all()
        torch.testing.assert_close(p.sum(dim), torch.ones_like(p.sum(dim)))
        # order-preserving: a larger score never gets a smaller weight
        xi, pi = x.movedim(dim, -1), p.movedim(dim, -1)
        order = xi.argsort(-1)
        assert (pi.gather(-1, order).diff(dim=-1) >= -1e-12).all()
    torch.testing.assert_close(N.sparsemax(x, dim), entmax.sparsemax(x, dim=dim))
    torch.testing.assert_close(N.entmax15(x, dim), entmax.entmax15(x, dim=dim))


# ---------------------------------------------------------------- unnormalized helpers and masks
def test_relu_sigmoid_sink():
    x = torch.tensor([[-1.0, -2.0, -0.5], [2.0, -1.0, 0.0]])
    assert (N.relu_weights(x)[0] == 0).all()  # a query that switches off
    torch.testing.assert_close(N.sigmoid_weights(x, bias=0.0), torch.sigmoid(x))
    torch.testing.assert_close(N.sigmoid_weights(x), torch.sigmoid(x - torch.log(torch.tensor(3.0))))
    p = N.softmax_with_sink(x)
    torch.testing.assert_close(p, torch.exp(x) / (1 + torch.exp(x).sum(-1, keepdim=True)))
    assert (p.sum(-1) < 1).all()
    torch.testing.assert_close(N.softmax_with_sink(x, sink_logit=-1e4), torch.softmax(x, -1))


@pytest.mark.parametrize("name,kw", [("softmax", {}), ("sparsemax", {}), ("entmax15", {}), ("entmax", {"alpha": 1.3}),
                                     ("relu", {}), ("sigmoid", {}), ("sink", {})])
def test_normalize_masks_and_empty_rows(name, kw):
    x = _x((2, 5, 7), seed=10)
    g = torch.Generator().manual_seed(11)
    mask = torch.rand(2, 5, 7, generator=g) > 0.4
    mask[:, 0] = False
    w = N.normalize(x, name, mask=mask, **kw)
    assert torch.isfinite(w).all()
    assert (w[~mask] == 0).all() and (w[:, 0] == 0).all()
    if name in ("softmax", "sparsemax", "entmax15", "entmax"):
        rows = mask.any(-1)
        torch.testing.assert_close(w.sum(-1)[rows], torch.ones(int(rows.sum()), dtype=x.dtype))
        # on the allowed entries it is the unmasked normalizer of the allowed scores alone
        b, i = [int(t) for t in rows.nonzero()[0]]
        allowed = mask[b, i]
        ref = N.NORMALIZERS[name](x[b, i, allowed], **kw)
        torch.testing.assert_close(w[b, i, allowed], ref)
    xx = x.clone().requires_grad_()
    N.normalize(xx, name, mask=mask, **kw).sum().backward()
    assert torch.isfinite(xx.grad).all() and (xx.grad[:, 0] == 0).all()


def test_normalized_attention_softmax_is_reference():
    g = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g) for n in (5, 7, 7))
    mask = torch.rand(2, 3, 5, 7, generator=g) > 0.3
    for causal in (False, True):
        torch.testing.assert_close(N.normalized_attention(q, k, v, mask, causal=causal),
                                   scaled_dot_product_attention(q, k, v, mask, causal=causal))
    out, w = N.normalized_attention(q, k, v, normalizer="sparsemax", causal=True, return_weights=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))
    assert (w.triu(1 + 7 - 5) == 0).all()
    torch.testing.assert_close(out, w @ v)


def test_bad_input_raises():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="x"):
        N.sparsemax([1.0, 2.0])
    with pytest.raises(ValueError, match="dim"):
        N.entmax15(x, dim=2)
    with pytest.raises(ValueError, match="alpha"):
        N.entmax_bisect(x, 0.5)
    with pytest.raises(TypeError, match="alpha"):
        N.entmax_bisect(x, "2")
    with pytest.raises(ValueError, match="normalizer"):
        N.normalize(x, "softermax")
    with pytest.raises(ValueError, match="temperature"):
        N.softmax_jacobian(x, 0.0)


def test_entropy_support_and_jacobian():
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(N.entropy(p), torch.tensor([torch.log(torch.tensor(2.0)).item(), 0.0]))
    assert N.support_size(p).tolist() == [2, 1]
    s = _x((6,), seed=13)
    for t in (0.3, 1.0, 4.0):
        jac = torch.autograd.functional.jacobian(lambda z, t=t: torch.softmax(z / t, -1), s)
        torch.testing.assert_close(N.softmax_jacobian(s, t), jac)
