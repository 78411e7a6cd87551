"""attnlib.distributed on real gloo process groups (forked ranks, file rendezvous, timeouts everywhere).

Every spawned group runs several checks (a process start costs time): ring attention in the contiguous
layout with odd shard lengths and in the zig-zag layout, Ulysses, causal and not, float32 and float64,
outputs and gradients against single-process ``attnlib.core.scaled_dot_product_attention``; the errors
every rank raises for a wrong call; a rank that dies mid-ring ends the run with an error, not a hang.
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.core import scaled_dot_product_attention
from attnlib.distributed import merge_partials, ring_attention, shard, ulysses_attention, unshard, zigzag_shard
from attnlib.distributed import model as M
from attnlib.distributed.launch import spawn
from attnlib.distributed.merge import block_attention
from attnlib.distributed.ring import schedule, work

CASES = [  # (scheme, layout, n per rank, causal, dtype)
    ("ring", "contiguous", 5, False, torch.float64), ("ring", "contiguous", 5, True, torch.float64),
    ("ring", "contiguous", 3, True, torch.float32), ("ring", "zigzag", 4, True, torch.float64),
    ("ring", "zigzag", 6, False, torch.float32), ("ulysses", "contiguous", 5, True, torch.float64),
    ("ulysses", "contiguous", 3, False, torch.float32),
]


def _inputs(world, n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2 * world, n * world, 6, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]


def _run_cases(rank, world):
    out = []
    for i, (scheme, layout, n, causal, dtype) in enumerate(CASES):
        q, k, v = _inputs(world, n, dtype, seed=i)
        mine = [s[rank].clone().requires_grad_() for s in (shard(t, world, layout=layout) for t in (q, k, v))]
        if scheme == "ring":
            o = ring_attention(*mine, causal=causal, layout=layout)
        else:
            o = ulysses_attention(*mine, causal=causal)
        do = shard(torch.linspace(-1, 1, o.numel() * world).reshape(2, 2 * world, n * world, 6).to(dtype),
                   world, layout=layout)[rank]
        o.backward(do)
        out.append((o.detach(), *(t.grad for t in mine)))
    return out


@pytest.mark.parametrize("world", [2, 3])
def test_ring_and_ulysses_match_single_process_attention_and_gradients(world):
    results = spawn(_run_cases, world, timeout=120)
    for i, (scheme, layout, n, causal, dtype) in enumerate(CASES):
        q, k, v = (t.requires_grad_() for t in _inputs(world, n, dtype, seed=i))
        o = scaled_dot_product_attention(q, k, v, causal=causal)
        do = torch.linspace(-1, 1, o.numel()).reshape(o.shape).to(dtype)
        o.backward(do)
        case = f"{scheme} {layout} world={world} n={n} causal={causal} {dtype}"
        for j, (name, expected) in enumerate([("output", o), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)]):
            got = unshard([r[i][j] for r in results], layout=layout)
            assert got.dtype == dtype, case
            torch.testing.assert_close(got, expected.detach(), msg=lambda m, c=case, n=name: f"{c}: {n}: {m}")


def _wrong_calls(rank, world):
    def message(fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except (ValueError, TypeError) as e:
            return f"{type(e).__name__}: {e}"
        return "no error"

    x = torch.randn(1, 2, 4 + rank, 4)  # rank 1's shard is longer
    y = torch.randn(1, 3, 3, 4)  # 3 heads, odd length
    return [message(ring_attention, x, x, x), message(ulysses_attention, y, y, y),
            message(ring_attention, y, y, y, layout="zigzag"), message(ring_attention, y, y, y.int())]


def test_wrong_calls_raise_on_every_rank_with_a_message():
    for got in spawn(_wrong_calls, 2, timeout=60):
        assert "differ across ranks" in got[0] and "rank 1: q (1, 2, 5, 4)" in got[0], got[0]
        assert "must be divisible by the world size 2" in got[1], got[1]
        assert "even shard length" in got[2], got[2]
        assert got[3].startswith("TypeError"), got[3]


def test_not_initialised_says_so():
    x = torch.randn(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="not initialised"):
        ring_attention(x, x, x)
    with pytest.raises(RuntimeError, match="not initialised"):
        ulysses_attention(x, x, x)


def _die_mid_ring(rank, world):
    x = torch.randn(1, 2, 3, 4)
    ring_attention(x, x, x)  # one full ring works
    if rank == 1:
        os._exit(7)  # then rank 1 dies while the others start the next ring
    return ring_attention(x, x, x, causal=True)


def test_a_rank_dying_mid_ring_ends_with_an_error_not_a_hang():
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank \d of 3 failed"):
        spawn(_die_mid_ring, 3, timeout=20)
    assert time.monotonic() - t0 < 30


def _sleep(rank, world):
    time.sleep(60)


def test_a_rank_that_hangs_times_out():
    with pytest.raises(TimeoutError, match="did not finish within 2"):
        spawn(_sleep, 2, timeout=2)


@settings(max_examples=30, deadline=None)
@given(lq=st.integers(1, 6), lk=st.integers(2, 9), cut=st.integers(1, 8), causal=st.booleans())
def test_merging_two_key_blocks_is_attention_over_both(lq, lk, cut, causal):
    cut = min(cut, lk - 1)
    g = torch.Generator().manual_seed(lq * 100 + lk * 10 + cut)
    q, k, v = (torch.randn(2, lq if i == 0 else lk, 5, generator=g, dtype=torch.float64) for i in range(3))
    mask = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq) if causal else None
    parts = [block_attention(q, k[:, s], v[:, s], scale=0.4, mask=None if mask is None else mask[:, s])
             for s in (slice(0, cut), slice(cut, lk))]
    o, lse = merge_partials(*parts[0], *parts[1])
    torch.testing.assert_close(o, scaled_dot_product_attention(q, k, v, mask=mask, scale=0.4))
    s = (q @ k.transpose(-2, -1)) * 0.4
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf)
    torch.testing.assert_close(lse, torch.logsumexp(s, -1))


def test_merge_with_an_empty_block_changes_nothing_and_never_gives_nan():
    o, lse = torch.randn(2, 3, 4), torch.randn(2, 3)
    empty_o, empty_lse = torch.zeros(2, 3, 4), torch.full((2, 3), -math.inf)
    got, got_lse = merge_partials(o, lse, empty_o, empty_lse)
    torch.testing.assert_close(got, o)
    torch.testing.assert_close(got_lse, lse)
    both, both_lse = merge_partials(empty_o, empty_lse, empty_o, empty_lse)
    assert not both.isnan().any() and (both == 0).all() and (both_lse == -math.inf).all()
    with pytest.raises(ValueError, match="o1"):
        merge_partials(o, lse, o[:, :2], lse)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_zigzag_layout_round_trips_and_balances_the_causal_work(world):
    x = torch.arange(2 * world * 3 * 5.0).reshape(2 * world * 3, 5)
    assert torch.equal(unshard(zigzag_shard(x, world, dim=0), dim=0, layout="zigzag"), x)
    assert torch.equal(unshard(shard(x, world, dim=0), dim=0), x)
    n = 6
    contiguous = [work(r, world, n, causal=True) for r in range(world)]
    zigzag = [work(r, world, n, causal=True, layout="zigzag") for r in range(world)]
    assert contiguous == [(r + 1) * n * n for r in range(world)]  # rank r sees r + 1 shards of keys
    assert len(set(zigzag)) == 1 and zigzag[0] == (2 * world + 1) * (n // 2) ** 2
    # the causal skip: contiguous rank r computes only the blocks of ranks <= r, and only the diagonal is masked
    for r in range(world):
        steps = schedule(r, world, n, causal=True)
        computed = [(src, blocks[0][2]) for _, src, blocks in steps if blocks]
        assert sorted(computed) == [(s, s == r) for s in range(r + 1)]
    assert all(len(b) == 1 for _, _, b in schedule(0, world, n, causal=False))
    with pytest.raises(ValueError, match="divisible by 4"):
        zigzag_shard(torch.zeros(6, 2), 2, dim=0)


def test_scaling_model_on_the_stated_h100_figures():
    hw = M.H100_NDR
    assert M.single_device_time(4096, 8, 128) == pytest.approx(4 * 4096 ** 2 * 8 * 128 / 989e12)
    # the ring is communication-bound exactly when the shard is shorter than F / bandwidth
    for world in (8, 64):
        n_star = M.ring_comm_bound_shard(world)
        assert n_star == pytest.approx(hw.flops / (hw.intra_bw if world <= 8 else hw.inter_bw))
        for n, bound in ((n_star / 2, True), (n_star * 2, False)):
            t = M.ring_time(n * world, world, 8, 128)
            assert (t["comm"] / (world - 1) > t["compute"] / world) == bound
            assert t["total"] == pytest.approx(t["compute"] / world + (world - 1) * max(t["compute"] / world,
                                                                                         t["comm"] / (world - 1)))
    t = M.ring_time(2 ** 20, 64, 8, 128)
    no_overlap = M.ring_time(2 ** 20, 64, 8, 128, overlap=False)
    assert max(t["compute"], t["comm"]) <= t["total"] <= no_overlap["total"] == t["compute"] + t["comm"]
    assert M.ring_time(2 ** 20, 64, 8, 128)["compute"] == pytest.approx(M.single_device_time(2 ** 20, 8, 128) / 64)
    assert math.isnan(M.ulysses_time(2 ** 20, 16, 8, 128)["total"])  # 8 heads cannot go on 16 ranks
    u8, u16 = M.ulysses_time(2 ** 20, 8, 16, 128), M.ulysses_time(2 ** 20, 16, 16, 128)
    assert u8["comm"] == pytest.approx(4 * 16 * 2 ** 17 * 128 * 2 * 7 / 8 / hw.intra_bw)
    assert u16["comm"] > u8["comm"]  # half of the all-to-all leaves the node at 16 ranks
