"""attnlib.kv: the cache against plain tensors, cached decoding against the full forward, the eviction
closed form against recomputation (float64), policies' defining properties, Loki against exact top-k."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from attnlib import kv
from attnlib.models import TinyTransformer, TransformerConfig


@given(b=st.integers(1, 3), h=st.integers(1, 3), d=st.integers(1, 5), chunks=st.lists(st.integers(1, 4), min_size=1,
                                                                                      max_size=4))
@settings(max_examples=25, deadline=None)
def test_cache_append_equals_concatenation(b, h, d, chunks):
    cache = kv.KVCache(b, h, sum(chunks), d, dtype=torch.float64)
    ks, vs = [], []
    for t in chunks:
        k, v = torch.randn(b, h, t, d, dtype=torch.float64), torch.randn(b, h, t, d, dtype=torch.float64)
        ks.append(k)
        vs.append(v)
        cache.append(k, v)
    assert torch.equal(cache.keys(), torch.cat(ks, 2)) and torch.equal(cache.values(), torch.cat(vs, 2))
    assert len(cache) == sum(chunks)
    assert cache.nbytes == 2 * b * h * sum(chunks) * d * 8


def test_cache_errors_and_views():
    cache = kv.KVCache(2, 3, 4, 5)
    with pytest.raises(ValueError, match="shape"):
        cache.append(torch.randn(2, 2, 1, 5), torch.randn(2, 2, 1, 5))
    cache.append(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="overflow"):
        cache.append(torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5))
    assert cache.keys().data_ptr() == cache._k.data_ptr()  # a view of the buffer, not a copy
    uneven = torch.zeros(2, 3, 4, dtype=torch.bool)
    uneven[..., 0] = True
    uneven[0, 0, 1] = True
    with pytest.raises(ValueError, match="same number"):
        cache.evict(uneven)
    with pytest.raises(ValueError, match="repeat"):
        cache.evict(torch.tensor([1, 1]))
    assert kv.kv_bytes_per_token(4, 8, 2) == 2 * 4 * 8 * 2 * 4


@pytest.mark.parametrize("per_row", [False, True])
def test_evict_keeps_the_kept_entries_in_order(per_row):
    g = torch.Generator().manual_seed(0)
    cache = kv.KVCache(2, 3, 9, 4)
    k, v = torch.randn(2, 3, 9, 4, generator=g), torch.randn(2, 3, 9, 4, generator=g)
    cache.append(k, v)
    if per_row:
        keep = torch.rand(2, 3, 9, generator=g).argsort(-1)[..., :5]  # unsorted on purpose
        idx = keep.sort(-1).values
    else:
        keep = torch.tensor([7, 0, 3])
        idx = keep.sort().values.expand(2, 3, -1)
    cache.evict(keep)
    gather = idx[..., None].expand(-1, -1, -1, 4)
    assert torch.equal(cache.keys(), k.gather(2, gather)) and torch.equal(cache.values(), v.gather(2, gather))
    cache.append(k[:, :, :2], v[:, :, :2])  # appends after the kept ones
    assert torch.equal(cache.keys()[:, :, -2:], k[:, :, :2])


@pytest.mark.parametrize("position", ["rope", "none", "sinusoidal", "learned"])
@pytest.mark.parametrize("n_kv", [None, 2, 1])
def test_cached_decoding_reproduces_the_full_forward(position, n_kv):
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(vocab_size=11, d_model=32, n_heads=4, n_kv_heads=n_kv,
                                              position=position)).eval()
    x = torch.randint(0, 11, (3, 13))
    full = model(x).detach()
    for prefill in (1, 6, 13):
        torch.testing.assert_close(kv.decode_logits(model, x, prefill=prefill), full, atol=1e-5, rtol=1e-5)
    for policy in (kv.recency_window(13), kv.sink_plus_window(13), kv.accumulated_attention(13),
                   kv.output_error(13), kv.headwise(13, torch.zeros(2, n_kv or 4, dtype=torch.bool))):
        torch.testing.assert_close(kv.decode_logits(model, x, prefill=2, cache_policy=policy), full,
                                   atol=1e-5, rtol=1e-5)
    tokens, logits = kv.incremental_decode(model, x[:, :4], 5)
    torch.testing.assert_close(logits, model(tokens[:, :-1]).detach()[:, 3:], atol=1e-5, rtol=1e-5)
    assert torch.equal(tokens[:, 4:], logits.argmax(-1))


def test_models_without_kv_heads_are_unchanged():
    torch.manual_seed(0)
    a = TinyTransformer(TransformerConfig(vocab_size=7, d_model=16, n_heads=2))
    torch.manual_seed(0)
    b = TinyTransformer(TransformerConfig(vocab_size=7, d_model=16, n_heads=2, n_kv_heads=2))
    assert a.blocks[0].attn.qkv.weight.shape == (48, 16)
    x = torch.randint(0, 7, (2, 5))
    assert torch.equal(a(x), b(x))
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(vocab_size=7, d_model=16, n_heads=4, n_kv_heads=3)


def test_grouped_decode_equals_sdpa_with_repeated_heads():
    g = torch.Generator().manual_seed(1)
    for hkv in (1, 2, 4):
        q = torch.randn(3, 4, 1, 8, generator=g, dtype=torch.float64)
        k, v = (torch.randn(3, hkv, 11, 8, generator=g, dtype=torch.float64) for _ in range(2))
        ref = F.scaled_dot_product_attention(q, k.repeat_interleave(4 // hkv, 1), v.repeat_interleave(4 // hkv, 1))
        torch.testing.assert_close(kv.grouped_decode_attention(q, k, v), ref)


@given(lead=st.sampled_from([(), (2,), (2, 3)]), n=st.integers(1, 9), d=st.integers(1, 5))
@settings(max_examples=30, deadline=None)
def test_eviction_closed_form_matches_recomputation(lead, n, d):
    g = torch.Generator().manual_seed(n * 10 + d)
    a = torch.softmax(torch.randn(*lead, n, generator=g, dtype=torch.float64) * 2, -1)
    v = torch.randn(*lead, n, d, generator=g, dtype=torch.float64)
    change = kv.eviction_output_change(a, v)
    o = (a[..., None] * v).sum(-2)
    for j in range(n):
        keep = torch.arange(n) != j
        rest = a[..., keep]
        total = rest.sum(-1, keepdim=True)
        new = (rest[..., None] * v[..., keep, :]).sum(-2) / total if n > 1 else torch.zeros_like(o)
        torch.testing.assert_close(change[..., j, :], new - o)


def test_policies_keep_budget_sinks_and_newest():
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(vocab_size=11, d_model=32, n_heads=4, n_kv_heads=2)).eval()
    x = torch.randint(0, 11, (2, 20))
    for make in (kv.recency_window, kv.sink_plus_window, kv.accumulated_attention, kv.output_error):
        policy = make(6)
        caches = kv.make_caches(model, 2, 20)
        model.forward_cached(x[:, :1], caches, 0)
        for t in range(1, 20):
            _, maps = model.forward_cached(x[:, t:t + 1], caches, t)
            for i, (c, w) in enumerate(zip(caches, maps)):
                policy.update(i, c, w)
                assert len(c) == min(t + 1, 6)
        assert kv.decode_logits(model, x, cache_policy=make(6)).shape == (2, 20, 11)
    s = torch.tensor([[5.0, 1.0, 3.0, 0.0, 2.0]])
    assert kv.top_budget(s, 3, 1).tolist() == [[0, 2, 4]]


def test_headwise_masks_window_heads_only():
    model = TinyTransformer(TransformerConfig(vocab_size=11, d_model=32, n_heads=4, n_kv_heads=2)).eval()
    policy = kv.headwise(3, torch.tensor([[True, False], [False, False]]))
    cache = kv.KVCache(1, 2, 10, 8)
    cache.append(torch.zeros(1, 2, 6, 8), torch.zeros(1, 2, 6, 8))
    m = policy.attend_mask(0, cache)
    assert m[0, 0].all() and m[0, 1].tolist() == [True] + [False] * 4 + [True, True]
    assert policy.visible_fraction(30) == pytest.approx(0.25 + 0.75 * 3 / 30)
    full = model(torch.randint(0, 11, (1, 9)))
    assert full.shape == (1, 9, 11)


def test_loki_full_rank_is_exact_topk_and_pca_shares():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    k = torch.randn(2, 3, 17, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, 17, 4, generator=g, dtype=torch.float64)
    idx = kv.loki_topk(q, k, 8, 4)
    assert torch.equal(idx, (q @ k.mT).topk(4, -1).indices.sort(-1).values)
    basis, share = kv.pca_basis(k)
    torch.testing.assert_close(basis.mT @ basis, torch.eye(8, dtype=torch.float64).expand(2, 3, 8, 8))
    torch.testing.assert_close(share.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    assert (share[..., :-1] >= share[..., 1:] - 1e-12).all()
    out = kv.loki_attention(q, k, v, 8, 17)  # every key: plain attention
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    with pytest.raises(ValueError, match="rank"):
        kv.loki_topk(q, k, 9, 2)
