"""Tests for attnlib.flex: every mod against torch's FlexAttention (eager, on the CPU) and SDPA; block summaries
against a brute-force tiling, torch's create_block_mask and lab 18's block masks; gradcheck; bad input."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib import flex

torch_flex = pytest.importorskip("torch.nn.attention.flex_attention")


def _torch(q, k, v, score_mod=None, mask_mod=None):
    """torch's flex_attention in eager mode (no torch.compile): an unfused but independent implementation."""
    block_mask = None
    if mask_mod is not None:
        b, h, lq, _ = q.shape
        block_mask = torch_flex.create_block_mask(mask_mod, b, h, lq, k.shape[-2], device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
        return torch_flex.flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)


def _qkv(b, h, lq, lk, d, dv, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, lq, d, generator=g, dtype=dtype), torch.randn(b, h, lk, d, generator=g, dtype=dtype),
            torch.randn(b, h, lk, dv, generator=g, dtype=dtype))


def _mods(b, h, lq, lk, seed):
    g = torch.Generator().manual_seed(seed)
    docs = torch.sort(torch.randint(0, 3, (b, max(lq, lk)), generator=g), dim=-1).values
    slopes = torch.rand(h, generator=g) + 0.1
    return {
        "causal": (None, flex.causal()),
        "causal bottom-right": (None, flex.causal(lk - lq)),
        "window 3": (None, flex.sliding_window(3)),
        "window 4 bottom-right": (None, flex.sliding_window(4, lk - lq)),
        "prefix 2": (None, flex.prefix_lm(2)),
        "document": (None, flex.document(docs)),
        "document causal": (None, flex.and_masks(flex.document(docs), flex.causal())),
        "window or prefix": (None, flex.or_masks(flex.sliding_window(2), flex.prefix_lm(1))),
        "alibi": (flex.alibi(slopes), None),
        "alibi causal": (flex.alibi(slopes), flex.causal()),
        "soft cap": (flex.soft_cap(2.0), None),
        "soft cap window": (flex.soft_cap(1.5), flex.sliding_window(5)),
    }


@pytest.mark.parametrize("lq, lk", [(13, 13), (5, 11), pytest.param(1, 1, marks=pytest.mark.slow),
                                    pytest.param(7, 7, marks=pytest.mark.slow),
                                    pytest.param(11, 5, marks=pytest.mark.slow)])
def test_every_mod_matches_torch_flex_attention(lq, lk):
    q, k, v = _qkv(2, 3, lq, lk, 8, 5, seed=lq * 31 + lk)
    q = q * 4  # large logits: the soft cap and the softmax's max-shift matter
    for name, (score_mod, mask_mod) in _mods(2, 3, lq, lk, seed=lq + lk).items():
        ours = flex.flex_attention(q, k, v, score_mod, mask_mod)
        theirs = _torch(q, k, v, score_mod, mask_mod)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_mods_match_sdpa_with_the_same_dense_mask_and_bias():
    q, k, v = _qkv(2, 2, 9, 9, 4, 3, seed=3)
    i, j = torch.arange(9)[:, None], torch.arange(9)[None, :]
    mask = (i - j >= 0) & (i - j < 4)
    ours = flex.flex_attention(q, k, v, mask_mod=flex.sliding_window(4))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    slopes = torch.tensor([0.5, 0.25])
    bias = slopes[:, None, None] * (j - i).float()  # (H, L, L)
    ours = flex.flex_attention(q, k, v, flex.alibi(slopes), flex.causal())
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(j > i, float("-inf")))
    torch.testing.assert_close(ours, ref)
    ours = flex.flex_attention(q, k, v, mask_mod=flex.causal())
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 2), h=st.integers(1, 3), lq=st.integers(1, 10), lk=st.integers(1, 10),
       d=st.integers(1, 6), window=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_window_matches_torch_hypothesis(b, h, lq, lk, d, window, seed):
    q, k, v = _qkv(b, h, lq, lk, d, d, seed)
    mod = flex.sliding_window(window, lk - lq)
    torch.testing.assert_close(flex.flex_attention(q, k, v, mask_mod=mod), _torch(q, k, v, mask_mod=mod),
                               rtol=1e-5, atol=1e-5)


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = _qkv(1, 2, 6, 6, 4, 4, seed=5)
    out = flex.flex_attention(q, k, v, mask_mod=flex.causal(-2))  # the first two queries see no key
    assert torch.isfinite(out).all()
    assert (out[..., :2, :] == 0).all()
    torch.testing.assert_close(out, _torch(q, k, v, mask_mod=flex.causal(-2)), rtol=1e-5, atol=1e-5)


def test_gradcheck_float64():
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 5, 6, 3, 2, seed=7, dtype=torch.float64))
    slopes = torch.tensor([0.3, 0.7], dtype=torch.float64)

    def fn(q, k, v):
        return flex.flex_attention(q, k, v, flex.alibi(slopes), flex.sliding_window(3, 1))

    assert torch.autograd.gradcheck(fn, (q, k, v))


def _brute_force_tiles(mask, bs):
    """Active and full tiles by looping over every tile (full: every real entry allowed, no key past Lk)."""
    b, h, lq, lk = mask.shape
    nq, nk = -(-lq // bs), -(-lk // bs)
    active = torch.zeros(b, h, nq, nk, dtype=torch.bool)
    full = torch.zeros_like(active)
    for qi in range(nq):
        for ki in range(nk):
            tile = mask[..., qi * bs:(qi + 1) * bs, ki * bs:(ki + 1) * bs]
            active[..., qi, ki] = tile.flatten(-2).any(-1)
            full[..., qi, ki] = tile.flatten(-2).all(-1) & ((ki + 1) * bs <= lk)
    return active, full


@pytest.mark.parametrize("lq, lk, bs", [(13, 13, 4), (9, 17, 4), (17, 9, 8), (5, 5, 8), (32, 32, 16)])
def test_block_summary_agrees_with_brute_force_tiling(lq, lk, bs):
    n = max(lq, lk)
    docs = torch.stack([torch.arange(n) // 5, (torch.arange(n) >= 12).long()])  # (2, n) packed documents
    for mod in [flex.causal(), flex.causal(lk - lq), flex.sliding_window(5), flex.prefix_lm(3),
                flex.and_masks(flex.document(docs), flex.causal())]:
        s = flex.block_summary(mod, 2, 1, lq, lk, block_size=bs)
        active, full = _brute_force_tiles(flex.dense_mask(mod, 2, 1, lq, lk), bs)
        assert torch.equal(s.active, active) and torch.equal(s.full, full)
        assert torch.equal(s.kv_num_blocks, (active & ~full).sum(-1, dtype=torch.int32))
        for qi in range(active.shape[-2]):  # the index lists name the partial / full tiles, ascending
            n = int(s.kv_num_blocks[0, 0, qi])
            assert s.kv_indices[0, 0, qi, :n].tolist() == (active & ~full)[0, 0, qi].nonzero().flatten().tolist()
            n = int(s.full_kv_num_blocks[0, 0, qi])
            assert s.full_kv_indices[0, 0, qi, :n].tolist() == full[0, 0, qi].nonzero().flatten().tolist()
        dense = s.to_dense()
        assert (dense | ~flex.dense_mask(mod, 2, 1, lq, lk)).all()  # the computed tiles cover every allowed entry


@pytest.mark.parametrize("name", ["causal", "window", "document"])
def test_block_summary_matches_torch_create_block_mask(name):
    length, bs = 256, 128  # torch's default block size; whole blocks
    docs = torch.tensor([[0] * 100 + [1] * 156])
    mod = {"causal": flex.causal(), "window": flex.sliding_window(64),
           "document": flex.and_masks(flex.document(docs), flex.causal())}[name]
    ours = flex.block_summary(mod, 1, 1, length, length, block_size=bs)
    theirs = torch_flex.create_block_mask(mod, 1, 1, length, length, device="cpu", BLOCK_SIZE=bs)
    n_full = theirs.full_kv_num_blocks if theirs.full_kv_num_blocks is not None else torch.zeros_like(
        theirs.kv_num_blocks)
    assert torch.equal(ours.kv_num_blocks, theirs.kv_num_blocks)
    assert torch.equal(ours.full_kv_num_blocks, n_full)
    assert torch.equal(ours.active, theirs.to_dense().bool())


def test_block_summary_is_what_lab18s_kernel_consumes():
    bs_mod = pytest.importorskip("attnlib.kernels.block_sparse")
    for lq, lk, window in [(64, 64, None), (80, 80, 20), (48, 112, None), (100, 100, 33)]:
        mod = flex.causal(lk - lq) if window is None else flex.sliding_window(window, lk - lq)
        s = flex.block_summary(mod, 1, 1, lq, lk, block_size=16)
        assert torch.equal(s.active[0, 0], bs_mod.sliding_window_block_mask(lq, lk, window, 16))
        assert torch.equal(s.full, bs_mod.full_block_mask(lq, lk, 16, causal=True, window=window))
        num, idx = bs_mod.compress_block_mask(s.partial)
        assert torch.equal(num, s.kv_num_blocks) and torch.equal(idx, s.kv_indices)
    q, k, v = _qkv(1, 2, 40, 40, 16, 16, seed=11)
    s = flex.block_summary(flex.sliding_window(9), 1, 2, 40, 40, block_size=16)
    out = bs_mod.block_sparse_attention(q, k, v, s.active, block_size=16, window=9)
    torch.testing.assert_close(out, flex.flex_attention(q, k, v, mask_mod=flex.sliding_window(9)),
                               rtol=1e-4, atol=1e-4)


def test_bad_inputs_name_the_argument():
    q, k, v = _qkv(1, 1, 4, 4, 2, 2, seed=0)
    with pytest.raises(ValueError, match="q must have shape"):
        flex.flex_attention(q[0], k[0], v[0])
    with pytest.raises(TypeError, match="mask_mod must return a boolean"):
        flex.flex_attention(q, k, v, mask_mod=lambda b, h, i, j: (i - j).float())
    with pytest.raises(TypeError, match="score_mod must be callable"):
        flex.flex_attention(q, k, v, score_mod=3)
    with pytest.raises(ValueError, match="window"):
        flex.sliding_window(0)
    with pytest.raises(ValueError, match="slopes"):
        flex.alibi(torch.ones(2, 2))
    with pytest.raises(ValueError, match="cap"):
        flex.soft_cap(-1.0)
    with pytest.raises(ValueError, match="block_size"):
        flex.block_summary(flex.causal(), 1, 1, 4, 4, block_size=0)
