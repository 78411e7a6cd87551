"""Tests for attnlib.linear against naive O(L^2) loops, closed forms, gradcheck and properties.

No package reference: ``flash-linear-attention`` (``fla``) implements its gated and linear kernels
in Triton and needs a GPU, so it is not a CPU reference and is not installed here; the naive loops
below (one Python loop over queries and keys per form) are the independent references.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib import linear as LA
from attnlib.core import scaled_dot_product_attention

MAPS = {"relu": torch.relu, "elu+1": lambda x: torch.nn.functional.elu(x) + 1, "identity": lambda x: x}


def _qkv(lead, lq, lk, d, dv, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead, lq, d, generator=g, dtype=dtype), torch.randn(*lead, lk, d, generator=g, dtype=dtype),
            torch.randn(*lead, lk, dv, generator=g, dtype=dtype))


def naive_linear(q, k, v, phi, causal=False, eps=1e-6, normalize=True, decay=None):
    """Independent reference: a double loop over queries and keys; ``decay`` (L,) gates the causal form."""
    lq, lk = q.shape[-2], k.shape[-2]
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=v.dtype)
    for i in range(lq):
        num = torch.zeros((*q.shape[:-2], v.shape[-1]), dtype=v.dtype)
        den = torch.zeros(q.shape[:-2], dtype=v.dtype)
        for j in range(lk):
            if causal and j > i + lk - lq:
                continue
            w = (phi(q[..., i, :]) * phi(k[..., j, :])).sum(-1)
            if decay is not None:
                w = w * torch.prod(decay[..., j + 1:i + 1], dim=-1)
            num = num + w[..., None] * v[..., j, :]
            den = den + w
        out[..., i, :] = num / den.clamp_min(eps)[..., None] if normalize else num
    return out


# ---------------------------------------------------------------- against the naive loop
@pytest.mark.parametrize("name", ["relu", "elu+1"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq, lk", [(1, 1), (5, 5), (7, 3), (3, 8), (9, 9)])
def test_linear_attention_matches_naive_loop(name, causal, lq, lk):
    q, k, v = _qkv((2, 3), lq, lk, 4, 3, seed=lq * 10 + lk)
    expected = naive_linear(q, k, v, MAPS[name], causal=causal)
    for chunk in (1, 2, 64):
        torch.testing.assert_close(LA.linear_attention(q, k, v, causal=causal, feature_map=name, chunk_size=chunk),
                                   expected, rtol=1e-10, atol=1e-12)


def test_unnormalised_identity_is_the_hebbian_read():
    q, k, v = _qkv((2,), 6, 6, 5, 4, seed=3)
    torch.testing.assert_close(LA.linear_attention(q, k, v, feature_map="identity", normalize=False),
                               q @ (k.transpose(-2, -1) @ v))
    torch.testing.assert_close(LA.linear_attention(q, k, v, causal=True, feature_map="identity", normalize=False),
                               naive_linear(q, k, v, MAPS["identity"], causal=True, normalize=False))


@settings(max_examples=25)
@given(lead=st.sampled_from([(), (1,), (3,), (2, 3)]), length=st.integers(1, 13), d=st.integers(1, 6),
       dv=st.integers(1, 5), chunk=st.integers(1, 6), name=st.sampled_from(["relu", "elu+1"]))
def test_causal_parallel_equals_recurrent_and_naive(lead, length, d, dv, chunk, name):
    q, k, v = _qkv(lead, length, length, d, dv, seed=length * 7 + d)
    par = LA.linear_attention(q, k, v, causal=True, feature_map=name, chunk_size=chunk)
    rec = LA.linear_attention_recurrent(q, k, v, feature_map=name)
    assert (par - rec).abs().max() <= 1e-10
    torch.testing.assert_close(par, naive_linear(q, k, v, MAPS[name], causal=True), rtol=1e-10, atol=1e-12)


def test_recurrent_streams_from_a_state():
    q, k, v = _qkv((2,), 11, 11, 3, 2, seed=4)
    full, (s, z) = LA.linear_attention_recurrent(q, k, v, return_state=True)
    first, state = LA.linear_attention_recurrent(q[..., :6, :], k[..., :6, :], v[..., :6, :], return_state=True)
    second = LA.linear_attention_recurrent(q[..., 6:, :], k[..., 6:, :], v[..., 6:, :], state=state)
    torch.testing.assert_close(torch.cat([first, second], -2), full)
    fk = torch.nn.functional.elu(k) + 1
    torch.testing.assert_close(s, fk.transpose(-2, -1) @ v)  # the state is the Hebbian memory of all pairs
    torch.testing.assert_close(z, fk.sum(-2))


def test_weights_reproduce_the_output_and_rows_sum_to_one():
    for causal, (lq, lk) in [(False, (5, 7)), (True, (6, 4)), (True, (4, 6))]:
        q, k, v = _qkv((3,), lq, lk, 4, 2, seed=lq + lk)
        w = LA.linear_attention_weights(q, k, causal=causal, feature_map="relu")
        torch.testing.assert_close(w @ v, LA.linear_attention(q, k, v, causal=causal, feature_map="relu"))
        sums = w.sum(-1)
        assert bool((((sums - 1).abs() < 1e-12) | (sums == 0)).all())


def test_softmax_kernel_features_are_unbiased_and_converge():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(40, 4, generator=g, dtype=torch.float64) * 0.5, torch.randn(40, 4, generator=g,
                                                                                    dtype=torch.float64) * 0.5
    exact = torch.exp((x * y).sum(-1))
    errs = []
    ms = [16, 64, 256, 1024, 4096]
    for m in ms:
        e = [((LA.softmax_kernel_features(4, m, seed=s, dtype=torch.float64)(x) *
               LA.softmax_kernel_features(4, m, seed=s, dtype=torch.float64)(y)).sum(-1) - exact).pow(2).mean()
             for s in range(6)]
        errs.append(math.sqrt(sum(e) / len(e)))
    slope = torch.tensor([math.log(e) for e in errs]).diff().sum().item() / (math.log(ms[-1]) - math.log(ms[0]))
    assert -0.65 < slope < -0.35  # root-mean-square error ~ m^(-1/2)
    # As m grows, linear attention with these features approaches softmax attention.
    q, k, v = (t * 0.6 for t in _qkv((2,), 5, 9, 4, 3, seed=6))  # moderate logits: the estimator's variance
    far = (LA.linear_attention(q, k, v, feature_map="softmax_kernel", n_features=16) -
           scaled_dot_product_attention(q, k, v)).abs().max()
    near = (LA.linear_attention(q, k, v, feature_map="softmax_kernel", n_features=4096) -
            scaled_dot_product_attention(q, k, v)).abs().max()
    assert near < 0.1 and near < far


# ---------------------------------------------------------------- properties
def test_homogeneous_maps_neglect_the_query_magnitude():
    q, k, _ = _qkv((2,), 6, 8, 5, 1, seed=7)
    for c in (0.25, 3.0, 8.0):
        for name in ("relu", "identity"):
            torch.testing.assert_close(LA.linear_attention_weights(c * q, k, feature_map=name, normalize=name != "identity"),
                                       LA.linear_attention_weights(q, k, feature_map=name, normalize=name != "identity") *
                                       (c if name == "identity" else 1.0))
        elu_change = (LA.linear_attention_weights(c * q, k, feature_map="elu+1") -
                      LA.linear_attention_weights(q, k, feature_map="elu+1")).abs().max()
        assert elu_change > 1e-3  # elu+1 is not homogeneous
        ma = LA.magnitude_aware_linear_attention
        assert (ma(c * q, k, torch.eye(8, dtype=q.dtype)) - ma(q, k, torch.eye(8, dtype=q.dtype))).abs().max() > 1e-3


def test_magnitude_aware_weights_interpolate_between_uniform_and_linear():
    q, k, _ = _qkv((), 4, 7, 5, 1, seed=8)
    eye = torch.eye(7, dtype=q.dtype)
    tiny = LA.magnitude_aware_linear_attention(1e-9 * q, k, eye, tau=1.0)
    torch.testing.assert_close(tiny, torch.full_like(tiny, 1 / 7))
    huge = LA.magnitude_aware_linear_attention(1e9 * q, k, eye, tau=1.0)
    linear = LA.linear_attention_weights(q, k, feature_map="relu")
    seen = linear.sum(-1) > 0  # rows where relu(q) overlaps some relu(k): there the limit is linear attention
    assert bool(seen.any()) and not bool(seen.all())
    torch.testing.assert_close(huge[seen], linear[seen], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(huge[~seen], torch.full_like(huge[~seen], 1 / 7))  # and uniform where it does not


def test_gated_matches_naive_loop_and_reduces_to_linear():
    q, k, v = _qkv((2, 2), 9, 9, 3, 2, seed=9)
    g = torch.Generator().manual_seed(10)
    decay = torch.rand(2, 2, 9, generator=g, dtype=torch.float64) * 0.6 + 0.4  # per head and step
    for name, normalize in (("identity", False), ("elu+1", True)):
        expected = naive_linear(q, k, v, MAPS[name], causal=True, normalize=normalize, decay=decay)
        for chunk in (1, 4, 64):
            torch.testing.assert_close(LA.gated_linear_attention(q, k, v, decay, feature_map=name, normalize=normalize,
                                                                 chunk_size=chunk), expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(LA.gated_linear_attention(q, k, v, log_decay=decay.log(), feature_map=name,
                                                             normalize=normalize), expected)
    torch.testing.assert_close(LA.gated_linear_attention(q, k, v, 1.0, feature_map="elu+1", normalize=True),
                               LA.linear_attention(q, k, v, causal=True))
    per_head = torch.tensor([[0.5], [0.9]], dtype=torch.float64)  # (H, 1): one constant per head
    torch.testing.assert_close(LA.gated_linear_attention(q, k, v, per_head),
                               naive_linear(q, k, v, MAPS["identity"], causal=True, normalize=False,
                                            decay=per_head.expand(2, 9)))


def test_ema_is_a_convolution_with_the_geometric_kernel():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 13, 3, generator=g, dtype=torch.float64)
    alpha = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    t = torch.arange(13, dtype=torch.float64)
    kernel = alpha * (1 - alpha) ** t[:, None]  # (L, d)
    conv = torch.stack([(kernel[:i + 1].flip(0) * x[:, :i + 1]).sum(1) for i in range(13)], 1)
    torch.testing.assert_close(LA.ema(x, alpha), conv)
    torch.testing.assert_close(LA.ema(x, 1.0), x)
    # EMA is gated linear attention with phi = 1, a constant gate 1 - alpha and v = alpha x.
    ones = torch.ones(2, 13, 1, dtype=torch.float64)
    torch.testing.assert_close(LA.ema(x, 0.3), LA.gated_linear_attention(ones, ones, 0.3 * x, 0.7))


# ---------------------------------------------------------------- memory, gradients, edge cases
def test_causal_form_never_allocates_an_l_by_l_matrix():
    length = 3001
    q, k, v = _qkv((1,), length, length, 4, 4, seed=12, dtype=torch.float32)
    biggest, op, out = LA.largest_cpu_allocation(LA.linear_attention, q, k, v, causal=True)
    assert biggest < length * length * 4 / 16, (biggest, op)
    naive, _, _ = LA.largest_cpu_allocation(lambda: LA.linear_attention_weights(q, k, causal=True) @ v)
    assert naive >= length * length * 4  # the probe does see an (L, L) float32 matrix


@pytest.mark.parametrize("fn", ["parallel", "causal", "recurrent", "gated", "magnitude"])
def test_gradcheck(fn):
    q, k, v = _qkv((1,), 4, 4, 2, 2, seed=13)
    decay = torch.full((4,), 0.7, dtype=torch.float64, requires_grad=True)
    f = {"parallel": lambda q, k, v: LA.linear_attention(q, k, v),
         "causal": lambda q, k, v: LA.linear_attention(q, k, v, causal=True, chunk_size=3),
         "recurrent": lambda q, k, v: LA.linear_attention_recurrent(q, k, v),
         "gated": lambda q, k, v: LA.gated_linear_attention(q, k, v, decay, chunk_size=3),
         "magnitude": lambda q, k, v: LA.magnitude_aware_linear_attention(q, k, v, causal=True)}[fn]
    inputs = tuple(t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(f, inputs)
    if fn == "gated":
        assert torch.autograd.gradcheck(lambda d: LA.gated_linear_attention(*[t.detach() for t in inputs], d), (decay,))


def test_empty_and_fully_masked_inputs_give_zeros():
    q, k, v = _qkv((2,), 4, 0, 3, 2)
    for causal in (False, True):
        out = LA.linear_attention(q, k, v, causal=causal)
        assert out.shape == (2, 4, 2) and bool((out == 0).all())
    q0, k0, v0 = _qkv((2,), 0, 0, 3, 2)
    assert LA.linear_attention_recurrent(q0, k0, v0).shape == (2, 0, 2)
    assert LA.gated_linear_attention(q0, k0, v0, 0.5).shape == (2, 0, 2)
    q, k, v = _qkv((2,), 4, 5, 3, 2)
    out = LA.linear_attention(q, k, v, key_mask=torch.zeros(2, 5, dtype=torch.bool))
    assert bool((out == 0).all()) and not out.isnan().any()
    keep = torch.tensor([True, False, True, True, False])
    torch.testing.assert_close(LA.linear_attention(q, k, v, key_mask=keep),
                               LA.linear_attention(q, k[..., keep, :], v[..., keep, :]))
    out = LA.linear_attention(q, k, v, causal=True, feature_map="relu")  # relu: some rows see only zeros
    assert not out.isnan().any()
    out = LA.linear_attention(*_qkv((1,), 6, 3, 2, 2), causal=True)  # Lq > Lk: the first 3 queries see no key
    assert bool((out[..., :3, :] == 0).all())


def test_bad_input_names_the_argument():
    q, k, v = _qkv((2,), 4, 5, 3, 2)
    with pytest.raises(ValueError, match="k and v"):
        LA.linear_attention(q, k, v[..., :4, :])
    with pytest.raises(ValueError, match="q and k"):
        LA.linear_attention(q, k[..., :2], v)
    with pytest.raises(ValueError, match="feature_map 'identity' returned negative"):
        LA.linear_attention(q, k, v, feature_map="identity")
    with pytest.raises(ValueError, match="feature_map 'neg'"):
        def neg(x):
            return -torch.relu(x) - 1
        LA.linear_attention(q, k, v, feature_map=neg)
    with pytest.raises(ValueError, match="feature_map must be"):
        LA.linear_attention(q, k, v, feature_map="gelu")
    for eps in (0.0, -1e-6):
        with pytest.raises(ValueError, match="eps must be > 0"):
            LA.linear_attention(q, k, v, eps=eps)
    with pytest.raises(ValueError, match="Lq == Lk"):
        LA.linear_attention_recurrent(q, k, v)
    q, k, v = _qkv((2,), 5, 5, 3, 2)
    with pytest.raises(ValueError, match="decay must lie in"):
        LA.gated_linear_attention(q, k, v, 0.0)
    with pytest.raises(ValueError, match="decay must broadcast"):
        LA.gated_linear_attention(q, k, v, torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="exactly one"):
        LA.gated_linear_attention(q, k, v)
    with pytest.raises(ValueError, match="alpha must lie in"):
        LA.ema(v, 1.5)
    with pytest.raises(ValueError, match="tau must be"):
        LA.magnitude_aware_linear_attention(q, k, v, tau=0.0)


def test_attention_maps_plug_into_tiny_transformer():
    from attnlib.models import TinyTransformer, TransformerConfig

    cfg = TransformerConfig(vocab_size=11, d_model=16, n_layers=2, n_heads=2, position="rope")
    tokens = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(14))
    for attention in (LA.LinearAttentionMap(), LA.GatedLinearAttentionMap(2, 8)):
        torch.manual_seed(0)
        model = TinyTransformer(cfg, attention=attention)
        logits = model(tokens)
        assert logits.shape == (3, 9, 11)
        changed = tokens.clone()
        changed[:, 6:] = (changed[:, 6:] + 1) % 11
        torch.testing.assert_close(model(changed)[:, :6], logits[:, :6])  # causal: the future does not leak
    gate_params = sum(p.numel() for n, p in model.named_parameters() if n.endswith(("attention.w", "attention.b")))
    assert gate_params > 0  # the gate's parameters are registered (and shared) by the layers
