"""Timing ring and Ulysses attention on the ranks of a process group, and this machine's model inputs.

:func:`time_schemes` runs inside each rank (``launch.spawn(time_schemes, world, ...)`` or torchrun): the
same seeded sequence everywhere, each scheme checked against single-process attention once, then timed
(median of ``repeats``, between barriers). :func:`rank_compute_time` times only the blocks one rank computes
in the ring (its schedule, no communication): the per-rank load that the zig-zag layout balances.
:func:`measure_link` and :func:`measure_flops` give the bandwidth and the matmul rate that turn
:mod:`attnlib.distributed.model` into a prediction for this machine.
"""

from __future__ import annotations

import functools
import statistics
import time

import torch
import torch.distributed as dist

from ..core import scaled_dot_product_attention
from .merge import block_attention
from .ring import _pairs, ring_attention
from .ulysses import ulysses_attention
from .zigzag import shard

__all__ = ["time_schemes", "rank_compute_time", "measure_link", "measure_flops"]


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_schemes(rank: int, world: int, length: int, heads: int, dim: int, causal: bool = False,
                 repeats: int = 3, device: str = "cpu") -> dict:
    """Seconds per forward of ring (contiguous and zig-zag) and Ulysses attention on this group."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, length, dim, generator=g).to(device) for _ in range(3))
    full = scaled_dot_product_attention(q, k, v, causal=causal)
    out = {}
    schemes = {"ring": ("contiguous", ring_attention), "ring zigzag": ("zigzag", ring_attention),
               "ulysses": ("contiguous", ulysses_attention)}
    for name, (layout, fn) in schemes.items():
        if name == "ulysses" and heads % world:
            continue
        mine = [shard(t, world, layout=layout)[rank] for t in (q, k, v)]
        kwargs = {"layout": layout} if fn is ring_attention else {}
        got = fn(*mine, causal=causal, **kwargs)
        torch.testing.assert_close(got, shard(full, world, layout=layout)[rank], atol=1e-4, rtol=1e-4)
        out[name] = _median_time(functools.partial(fn, *mine, causal=causal, **kwargs), repeats)
    return out


def rank_compute_time(rank: int, world: int, n: int, heads: int, dim: int, *, causal: bool = True,
                      layout: str = "contiguous", repeats: int = 3) -> float:
    """Seconds of the block computations ``rank`` does in one ring forward (no communication)."""
    g = torch.Generator().manual_seed(rank)
    q, k, v = (torch.randn(1, heads, n, dim, generator=g) for _ in range(3))
    blocks = [b for t in range(world) for b in _pairs(rank, (rank - t) % world, world, n, causal, layout)]
    scale = dim ** -0.5

    def run():
        for qsl, ksl, mask in blocks:
            block_attention(q[..., qsl, :], k[..., ksl, :], v[..., ksl, :], scale=scale, mask=mask)

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_link(rank: int, world: int, numel: int = 1 << 20, repeats: int = 5) -> float:
    """Bytes/s of one ring hop (every rank sends ``numel`` float32 to rank + 1 at once)."""
    x, y = torch.randn(numel), torch.empty(numel)
    nxt, prv = (rank + 1) % world, (rank - 1) % world

    def hop():
        works = [dist.isend(x, nxt), dist.irecv(y, prv)]
        for w in works:
            w.wait()

    hop()
    return numel * 4 / _median_time(hop, repeats)


def measure_flops(n: int = 256, dim: int = 64, heads: int = 4, repeats: int = 5) -> float:
    """FLOP/s of this process's attention block (the 4 n^2 d matmul FLOPs per head of ``block_attention``)."""
    q, k, v = (torch.randn(1, heads, n, dim) for _ in range(3))
    block_attention(q, k, v, scale=dim ** -0.5)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block_attention(q, k, v, scale=dim ** -0.5)
        times.append(time.perf_counter() - t0)
    return 4.0 * heads * n * n * dim / statistics.median(times)
