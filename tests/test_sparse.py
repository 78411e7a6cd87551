"""Tests for attnlib.sparse: masks against naive loops, receptive fields against a BFS, MoBA / routing / landmark /
SEA against naive per-query references and their defining limits, gradcheck, bad input; and the passkey data."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib import sparse
from attnlib.data.passkey import passkey_task, passkey_vocab


def _loop_mask(length, rule):
    return torch.tensor([[bool(rule(i, j)) for j in range(length)] for i in range(length)])


@settings(max_examples=20, deadline=None)
@given(length=st.integers(1, 23), window=st.integers(1, 6), dilation=st.integers(1, 4))
def test_patterns_equal_naive_loops(length, window, dilation):
    assert torch.equal(sparse.sliding_window(length, window), _loop_mask(length, lambda i, j: 0 <= i - j < window))
    assert torch.equal(sparse.dilated(length, window, dilation), _loop_mask(
        length, lambda i, j: any(i - j == m * dilation for m in range(window))))
    powers = {2 ** m for m in range(8)}
    assert torch.equal(sparse.power_of_two(length, window=window), _loop_mask(
        length, lambda i, j: 0 <= i - j < window or i - j in powers))


def test_headwise_stride_partitions_the_keys():
    m = sparse.headwise_stride(5, 11, 6, 3)  # (H, Lq, Lk)
    assert m.shape == (6, 5, 11)
    assert torch.equal(m[0], m[3]) and not (m[0] & m[1]).any()
    assert m[:3].sum(0).eq(1).all()  # heads 0..2 together read every key exactly once
    assert m[1, 0].nonzero().flatten().tolist() == [1, 4, 7, 10]


def _bfs_reach(mask, n_layers):
    """Reachability by explicit breadth-first expansion, one layer (plus the residual) at a time."""
    length = mask.shape[-1]
    out = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        frontier = {i}
        for _ in range(n_layers):
            frontier = frontier | {j for k in frontier for j in range(length) if mask[k, j]}
        out[i, list(frontier)] = True
    return out


@pytest.mark.parametrize("pattern", ["window", "dilated", "power"])
def test_receptive_field_equals_bfs(pattern):
    length = 19
    mask = {"window": sparse.sliding_window(length, 3), "dilated": sparse.dilated(length, 3, 2),
            "power": sparse.power_of_two(length)}[pattern]
    for n in (1, 2, 3):
        assert torch.equal(sparse.receptive_field(mask, n), _bfs_reach(mask, n))


def test_power_of_two_reaches_every_distance_below_2_to_the_depth():
    length = 70
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    distance = torch.arange(length)[:, None] - torch.arange(length)[None, :]
    for depth in range(1, 7):
        reach = sparse.receptive_field(sparse.power_of_two(length), depth)
        assert reach[causal & (distance <= 2 ** depth - 1)].all()
        assert not reach[~causal].any()
    assert sparse.causal_coverage(sparse.receptive_field(sparse.power_of_two(length), 7)).item() == 1.0
    # a window of 2 grows by one position per layer only
    w = sparse.receptive_field(sparse.sliding_window(length, 2), 6)
    assert not w[causal & (distance > 6)].any()


def _naive_moba(q, k, v, block, topk):
    """Per query: rank the earlier blocks by q . mean(k_J), keep the best topk - 1 and the own block."""
    length = q.shape[-2]
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in q.shape[:-2]]).reshape(-1, q.dim() - 2):
        qi, ki, vi = q[tuple(idx)], k[tuple(idx)], v[tuple(idx)]
        for i in range(length):
            own = i // block
            gates = [(float(qi[i] @ ki[j * block:(j + 1) * block].mean(0)), j) for j in range(own)]
            kept = {j for _, j in sorted(gates, reverse=True)[:topk - 1]} | {own}
            keys = [j for j in range(i + 1) if j // block in kept]
            w = torch.softmax(qi[i] @ ki[keys].T / math.sqrt(q.shape[-1]), -1)
            out[tuple(idx) + (i,)] = w @ vi[keys]
    return out


@settings(max_examples=12, deadline=None)
@given(length=st.integers(1, 17), block=st.integers(1, 5), topk=st.integers(1, 4), seed=st.integers(0, 9999))
def test_block_topk_equals_naive_hypothesis(length, block, topk, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, length, 3, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(sparse.block_topk_attention(q, k, v, block=block, topk=topk),
                               _naive_moba(q, k, v, block, topk))


def test_block_topk_with_every_block_is_full_causal_attention():
    q, k, v = (torch.randn(2, 3, 29, 8) for _ in range(3))
    for block in (1, 4, 7, 29, 40):
        n_blocks = math.ceil(29 / block)
        mask = sparse.block_topk_mask(q, k, block=block, topk=n_blocks)
        assert torch.equal(mask, torch.ones(29, 29, dtype=torch.bool).tril().expand_as(mask))
        torch.testing.assert_close(sparse.block_topk_attention(q, k, v, block=block, topk=n_blocks),
                                   F.scaled_dot_product_attention(q, k, v, is_causal=True))
    one = sparse.block_topk_mask(q, k, block=4, topk=1)  # own block only: block-diagonal causal
    i, j = torch.arange(29)[:, None], torch.arange(29)[None, :]
    assert torch.equal(one, ((i // 4 == j // 4) & (j <= i)).expand_as(one))


def test_kmeans_routing_matches_the_cluster_rule_and_reduces_to_causal_with_one_cluster():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 15, 4, generator=g) for _ in range(3))
    one = torch.randn(1, 4, generator=g)
    torch.testing.assert_close(sparse.kmeans_routing_attention(q, k, v, one),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True))
    cents = sparse.kmeans_fit(torch.cat([q, k], -2), 3, seed=1)
    cq = (F.normalize(q, dim=-1) @ F.normalize(cents, dim=-1).T).argmax(-1)
    ck = (F.normalize(k, dim=-1) @ F.normalize(cents, dim=-1).T).argmax(-1)
    mask = sparse.kmeans_routing_mask(q, k, cents)
    i, j = torch.arange(15)[:, None], torch.arange(15)[None, :]
    assert torch.equal(mask, ((cq[..., :, None] == ck[..., None, :]) | (i == j)) & (j <= i))
    torch.testing.assert_close(sparse.kmeans_routing_attention(q, k, v, cents),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_online_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(3)
    centers = F.normalize(torch.randn(4, 8, generator=g), dim=-1) * 5
    x = (centers[torch.arange(400) % 4] + 0.3 * torch.randn(400, 8, generator=g))
    fitted = sparse.kmeans_fit(x, 4, n_iters=30, seed=2)
    cos = F.normalize(centers, dim=-1) @ fitted.T  # (4 true, 4 fitted)
    assert (cos.max(1).values > 0.95).all()
    assert torch.allclose(fitted.norm(dim=-1), torch.ones(4))
    same = sparse.online_kmeans_update(fitted, x, decay=0.0)  # a fixed point moves little
    assert ((same * fitted).sum(-1) > 0.99).all()


def _naive_landmark(q, k, v, block, topk):
    length, d = q.shape[-2], q.shape[-1]
    out = torch.zeros(length, v.shape[-1], dtype=q.dtype)
    for i in range(length):
        own = i // block
        local = list(range(own * block, i + 1))
        land = [(float(q[i] @ k[j * block:(j + 1) * block].mean(0)) / math.sqrt(d), j) for j in range(own)]
        land = sorted(land, reverse=True)[:topk] if topk else land
        logits = torch.tensor([float(q[i] @ k[j]) / math.sqrt(d) for j in local] + [g for g, _ in land],
                              dtype=q.dtype)
        p = torch.softmax(logits, 0)
        out[i] = p[:len(local)] @ v[local]
        for w, (_, jb) in zip(p[len(local):], land):
            keys = list(range(jb * block, min((jb + 1) * block, length)))
            out[i] += w * (torch.softmax(q[i] @ k[keys].T / math.sqrt(d), 0) @ v[keys])
    return out


@pytest.mark.parametrize("length, block, topk", [(13, 4, None), (13, 4, 1), (17, 3, 2), (5, 8, None)])
def test_landmark_attention_equals_naive_grouped_softmax(length, block, topk):
    g = torch.Generator().manual_seed(length + block)
    q, k, v = (torch.randn(length, 3, generator=g, dtype=torch.float64) for _ in range(3))
    out, w = sparse.landmark_attention(q, k, v, block=block, topk=topk, return_weights=True)
    torch.testing.assert_close(out, _naive_landmark(q, k, v, block, topk))
    torch.testing.assert_close(w.sum(-1), torch.ones(length, dtype=torch.float64))
    assert not w.triu(1).any()  # causal
    if block >= length:
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_sea_keeps_the_topk_of_the_estimate_and_is_exact_with_every_key():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 11, 4, generator=g) for _ in range(3))
    est = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)
    mask = sparse.sea_mask(q, k, topk=3)
    causal = torch.ones(11, 11, dtype=torch.bool).tril()
    assert torch.equal(mask.sum(-1), torch.arange(1, 12).clamp(max=3).expand(2, 11))
    for b in range(2):
        for i in range(11):
            kept = est[b, i, :i + 1].topk(min(3, i + 1)).indices.sort().values
            assert mask[b, i].nonzero().flatten().tolist() == kept.tolist()
    assert not (mask & ~causal).any()
    torch.testing.assert_close(sparse.sea_attention(q, k, v, topk=11),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True))
    proj = torch.nn.Linear(4, 6)  # a learnable feature map: gradients reach the values, not the selection
    out = sparse.sea_attention(q, k, v.requires_grad_(), topk=2, feature_map=lambda x: F.softplus(proj(x)))
    out.sum().backward()
    assert v.grad is not None and proj.weight.grad is None


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(1, 7, 2, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: sparse.block_topk_attention(q, k, v, block=3, topk=2), (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: sparse.landmark_attention(q, k, v, block=3, topk=1), (q, k, v))


def test_mass_and_budget():
    w = torch.softmax(torch.randn(3, 10, 10).masked_fill(~torch.ones(10, 10, dtype=torch.bool).tril(), -1e9), -1)
    full = torch.ones(10, 10, dtype=torch.bool).tril()
    assert sparse.mass_recovered(w, full).item() == pytest.approx(1.0)
    assert sparse.budget(full) == 1.0
    assert sparse.budget(torch.eye(10, dtype=torch.bool)) == pytest.approx(10 / 55)
    diag = sparse.mass_recovered(w, torch.eye(10, dtype=torch.bool))
    assert diag.item() == pytest.approx(w.diagonal(dim1=-2, dim2=-1).mean().item())


def test_bad_inputs_name_the_argument():
    q = torch.randn(5, 2)
    with pytest.raises(ValueError, match="window"):
        sparse.sliding_window(5, 0)
    with pytest.raises(ValueError, match="same length"):
        sparse.block_topk_attention(q, torch.randn(6, 2), torch.randn(6, 2), block=2, topk=1)
    with pytest.raises(ValueError, match="topk"):
        sparse.block_topk_mask(q, q, block=2, topk=0)
    with pytest.raises(ValueError, match="causal=True"):
        sparse.block_topk_attention(q, q, q, block=2, topk=1, causal=False)
    with pytest.raises(ValueError, match="centroids"):
        sparse.kmeans_routing_attention(q, q, q, torch.randn(3, 5))
    with pytest.raises(ValueError, match="square boolean"):
        sparse.receptive_field(torch.ones(3, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="decay"):
        sparse.online_kmeans_update(torch.randn(2, 2), q, decay=1.0)


def test_passkey_task():
    ids = passkey_vocab()
    batch = passkey_task(50, 37, seed=4)
    x, y = batch
    assert x.shape == y.shape == (50, 37) and batch.vocab_size == ids["vocab_size"]
    rows = torch.arange(50)
    assert (x[rows, batch.position] == ids["KEY"]).all() and (x[:, -1] == ids["QUERY"]).all()
    assert torch.equal(y[:, -1], x[rows, batch.position + 1])
    assert (y[:, :-1] == -100).all() and (x == ids["KEY"]).sum() == 50
    assert int(batch.position.min()) >= 0 and int(batch.position.max()) <= 34
    assert torch.equal(passkey_task(50, 37, seed=4).inputs, x)  # seeded
    assert (passkey_task(4, 37, depth=0.0).position == 0).all()
    assert (passkey_task(4, 37, depth=1.0).position == 34).all()
    with pytest.raises(ValueError, match="depth"):
        passkey_task(4, 37, depth=1.5)
    with pytest.raises(ValueError, match="length"):
        passkey_task(4, 3)
