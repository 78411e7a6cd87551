"""attnlib.core against torch's scaled_dot_product_attention, float64 gradcheck and its properties."""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.bias import causal_lower_right

from attnlib.core import chunked_attention, masked_softmax, scaled_dot_product_attention
from attnlib.masks import causal_mask

F = torch.nn.functional

shapes = st.tuples(
    st.integers(1, 2),  # batch
    st.integers(1, 3),  # heads
    st.integers(1, 13),  # Lq
    st.integers(1, 13),  # Lk
    st.integers(1, 9),  # d
    st.integers(1, 7),  # dv
)


def _qkv(shape, seed, dtype=torch.float64):
    b, h, lq, lk, d, dv = shape
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, lq, d, generator=g, dtype=dtype), torch.randn(b, h, lk, d, generator=g, dtype=dtype),
            torch.randn(b, h, lk, dv, generator=g, dtype=dtype))


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), causal=st.booleans(), use_mask=st.booleans())
def test_matches_torch_sdpa(shape, seed, causal, use_mask):
    q, k, v = _qkv(shape, seed)
    lq, lk = q.shape[-2], k.shape[-2]
    mask = None
    if use_mask:
        mask = torch.rand(lq, lk, generator=torch.Generator().manual_seed(seed)) > 0.3
        mask[:, 0] = True  # torch's NaN/zero behaviour on empty rows is version-dependent: avoid them here
    combined = mask
    if causal:
        c = causal_mask(lq, lk)
        combined = c if mask is None else mask & c
    ours = scaled_dot_product_attention(q, k, v, mask, causal=causal)
    if combined is not None and not combined.any(-1).all():
        rows = combined.any(-1)
        assert (ours[..., ~rows, :] == 0).all()
        theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=combined)
        torch.testing.assert_close(ours[..., rows, :], theirs[..., rows, :])
    else:
        theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=combined)
        torch.testing.assert_close(ours, theirs)


def test_causal_is_bottom_right_like_torch_causal_lower_right():
    q, k, v = _qkv((2, 2, 4, 9, 8, 5), 0)
    ours = scaled_dot_product_attention(q, k, v, causal=True)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(4, 9))
    torch.testing.assert_close(ours, theirs)


def test_scale_argument():
    q, k, v = _qkv((1, 2, 5, 6, 4, 3), 1)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, scale=0.3),
                               F.scaled_dot_product_attention(q, k, v, scale=0.3))


def test_weights_are_distributions_and_respect_mask():
    q, k, v = _qkv((2, 3, 6, 7, 4, 4), 2)
    mask = torch.rand(2, 1, 6, 7, generator=torch.Generator().manual_seed(3)) > 0.5
    mask[0, 0, 2] = False
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert (w.masked_select(~mask.expand_as(w)) == 0).all()
    sums = w.sum(-1)
    rows = mask.any(-1).expand_as(sums)
    torch.testing.assert_close(sums[rows], torch.ones_like(sums[rows]))
    assert (sums[~rows] == 0).all()
    torch.testing.assert_close(out, w @ v)


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    q, k, v = (t.requires_grad_() for t in _qkv((1, 2, 4, 5, 3, 2), 4))
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1] = False
    out = scaled_dot_product_attention(q, k, v, mask)
    assert (out[..., 1, :] == 0).all()
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[..., 1, :] == 0).all()


def test_causal_with_more_queries_than_keys_has_empty_rows():
    q, k, v = _qkv((1, 1, 6, 3, 4, 2), 5)
    for fn in (scaled_dot_product_attention, lambda *a, **kw: chunked_attention(*a, chunk_size=2, **kw)):
        out = fn(q, k, v, causal=True)
        assert (out[..., :3, :] == 0).all() and torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_large_logits_stay_finite(dtype):
    q, k, v = _qkv((2, 2, 9, 11, 16, 8), 6, dtype=torch.float32)
    q = q * 300  # logits of order 1e3-1e4: exp overflows in half precision without care
    ref = scaled_dot_product_attention(q.double(), k.double(), v.double(), causal=True)
    for fn in (scaled_dot_product_attention, chunked_attention):
        out = fn(q.to(dtype), k.to(dtype), v.to(dtype), causal=True)
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=3e-2)


def test_gradcheck_float64():
    q, k, v = (t.requires_grad_() for t in _qkv((1, 2, 3, 4, 3, 2), 7))
    mask = torch.tensor([[True, False, True, True]] * 3)
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask, causal=True), (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: chunked_attention(q, k, v, causal=True, chunk_size=3), (q, k, v))


@settings(max_examples=50, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), causal=st.booleans(), chunk=st.integers(1, 16))
def test_chunked_equals_reference(shape, seed, causal, chunk):
    q, k, v = _qkv(shape, seed)
    torch.testing.assert_close(chunked_attention(q, k, v, causal=causal, chunk_size=chunk),
                               scaled_dot_product_attention(q, k, v, causal=causal))


def test_broadcast_leading_dims():
    q = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    k, v = torch.randn(1, 3, 6, 4, dtype=torch.float64), torch.randn(2, 1, 6, 2, dtype=torch.float64)
    out = scaled_dot_product_attention(q, k, v)
    ref = scaled_dot_product_attention(q, k.expand(2, 3, 6, 4), v.expand(2, 3, 6, 2))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(chunked_attention(q, k, v, chunk_size=4), ref)


def test_masked_softmax_large_and_empty():
    s = torch.tensor([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, True, True], [False, False, False]])
    w = masked_softmax(s, mask)
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: scaled_dot_product_attention([1.0], torch.zeros(2, 3), torch.zeros(2, 3)), TypeError, "q must be a torch.Tensor"),
        (lambda: scaled_dot_product_attention(torch.zeros(3), torch.zeros(2, 3), torch.zeros(2, 3)), ValueError, "q must have at least 2"),
        (lambda: scaled_dot_product_attention(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 3)), ValueError, "q and k must share"),
        (lambda: scaled_dot_product_attention(torch.zeros(2, 3), torch.zeros(5, 3), torch.zeros(4, 3)), ValueError, "k and v must have the same sequence length"),
        (lambda: scaled_dot_product_attention(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64)), TypeError, "share a dtype"),
        (lambda: scaled_dot_product_attention(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 2)), TypeError, "mask must have dtype torch.bool"),
        (lambda: scaled_dot_product_attention(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(4, 3), torch.ones(2, 3, dtype=torch.bool)), ValueError, "mask must be broadcastable"),
        (lambda: scaled_dot_product_attention(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), scale=-1.0), ValueError, "scale must be"),
        (lambda: scaled_dot_product_attention(torch.zeros(2, 3, 2, 3), torch.zeros(4, 2, 3), torch.zeros(4, 2, 3)), ValueError, "must broadcast"),
        (lambda: chunked_attention(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), chunk_size=0), ValueError, "chunk_size"),
        (lambda: scaled_dot_product_attention(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)), TypeError, "floating-point"),
    ],
)
def test_bad_input_names_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()
