r"""Ring attention: each rank keeps its queries and passes its keys and values around a ring.

Rank :math:`r` of :math:`P` holds the shard :math:`Q_r, K_r, V_r` of shape ``(B, H, n, d)``,
:math:`n = L / P`. At step :math:`t = 0, \dots, P-1` it holds the keys and values of rank
:math:`(r - t) \bmod P`; it starts sending them to rank :math:`r + 1` (and receiving the next block from
rank :math:`r - 1`) with ``isend``/``irecv``, computes attention of :math:`Q_r` over the block it holds
while the transfer runs, and merges the block's output into its running output by log-sum-exp
(:mod:`attnlib.distributed.merge`). After :math:`P` steps every query has seen every key:

.. math::

    o_r = \sum_{t} e^{\ell_{r,t} - \ell_r}\, o_{r,t}, \qquad \ell_r = \log \sum_t e^{\ell_{r,t}} .

With a causal mask a (query chunk, key chunk) pair whose keys all come after its queries is skipped,
one whose keys all come before is computed without a mask, and only the diagonal pairs are masked
(global positions come from the layout, :mod:`attnlib.distributed.zigzag`).

The backward pass runs the same ring: :math:`dQ_r` stays home, while :math:`dK, dV` of the block a rank
holds travel with it, each rank adding its queries' contribution
(:math:`dV \mathrel{+}= P^\top dO`, :math:`dS = P \odot (dO V^\top - \delta)`, :math:`\delta = \operatorname{rowsum}(dO \odot O)`,
:math:`dQ \mathrel{+}= s\, dS K`, :math:`dK \mathrel{+}= s\, dS^\top Q`, with :math:`P` recomputed from the saved
log-sum-exp); after :math:`P` steps each block's gradient arrives back at its own rank.

Background, not a seed: Liu, Zaharia and Abbeel, *Ring Attention with Blockwise Transformers for
Near-Infinite Context*.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from ..core import compute_dtype
from ..validation import resolve_scale
from .group import check_shards, global_rank, rank_world
from .merge import block_attention, merge_partials
from .zigzag import LAYOUTS, chunks

__all__ = ["ring_attention", "schedule", "work"]


def _pairs(rank: int, src: int, world: int, n: int, causal: bool, layout: str):
    """The (query slice, key slice, mask or None) blocks rank ``rank`` computes against ``src``'s keys."""
    out = []
    qoff = 0
    for qs, qn in chunks(rank, world, n, layout):
        koff = 0
        for ks, kn in chunks(src, world, n, layout):
            qsl, ksl = slice(qoff, qoff + qn), slice(koff, koff + kn)
            if not causal or ks + kn - 1 <= qs:  # every key is at or before every query
                out.append((qsl, ksl, None))
            elif ks <= qs + qn - 1:  # a diagonal block: mask key j > query i
                qpos = torch.arange(qs, qs + qn).unsqueeze(-1)
                kpos = torch.arange(ks, ks + kn)
                out.append((qsl, ksl, kpos <= qpos))
            # else: every key is after every query: skipped
            koff += kn
        qoff += qn
    return out


def schedule(rank: int, world: int, n: int, *, causal: bool = False, layout: str = "contiguous"):
    """What rank ``rank`` computes at each ring step: a list of ``(step, src, [(q rows, k rows, masked)])``."""
    steps = []
    for t in range(world):
        src = (rank - t) % world
        blocks = [((q.start, q.stop), (k.start, k.stop), m is not None) for q, k, m in
                  _pairs(rank, src, world, n, causal, layout)]
        steps.append((t, src, blocks))
    return steps


def work(rank: int, world: int, n: int, *, causal: bool = False, layout: str = "contiguous") -> int:
    """(query, key) score entries rank ``rank`` computes in one forward pass (diagonal blocks in full)."""
    return sum((q[1] - q[0]) * (k[1] - k[0]) for _, _, blocks in
               schedule(rank, world, n, causal=causal, layout=layout) for q, k, _ in blocks)


def _start_rotate(tensors, rank: int, world: int, group, tag: int):
    """Send ``tensors`` to rank + 1 and receive as many from rank - 1; returns (buffers, pending works)."""
    nxt, prv = global_rank(group, (rank + 1) % world), global_rank(group, (rank - 1) % world)
    sends = [t.contiguous() for t in tensors]
    recvs = [torch.empty_like(t) for t in sends]
    works = []
    for i, (s, r) in enumerate(zip(sends, recvs)):
        works.append(dist.isend(s, nxt, group=group, tag=tag + i))
        works.append(dist.irecv(r, prv, group=group, tag=tag + i))
    return recvs, (works, sends)


def _wait(pending) -> None:
    for w in pending[0]:
        w.wait()


def _forward(q, k, v, scale, causal, layout, group):
    rank, world = rank_world(group)
    n = q.shape[-2]
    o = q.new_zeros(*q.shape[:-1], v.shape[-1])  # (B, H, n, dv)
    lse = q.new_full(q.shape[:-1], float("-inf"))  # (B, H, n)
    kc, vc = k, v
    for t in range(world):
        src = (rank - t) % world
        if t < world - 1:
            nxt, pending = _start_rotate([kc, vc], rank, world, group, tag=0)  # overlaps the compute below
        for qsl, ksl, mask in _pairs(rank, src, world, n, causal, layout):
            ob, lb = block_attention(q[..., qsl, :], kc[..., ksl, :], vc[..., ksl, :], scale=scale, mask=mask)
            o[..., qsl, :], lse[..., qsl] = merge_partials(o[..., qsl, :], lse[..., qsl], ob, lb)
        if t < world - 1:
            _wait(pending)
            kc, vc = nxt
    return o, lse


def _backward(q, k, v, o, lse, do, scale, causal, layout, group):
    rank, world = rank_world(group)
    n = q.shape[-2]
    delta = (do * o).sum(-1)  # (B, H, n)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    kc, vc = k, v
    for t in range(world):
        src = (rank - t) % world
        if t < world - 1:
            nxt, pending = _start_rotate([kc, vc], rank, world, group, tag=10)
        for qsl, ksl, mask in _pairs(rank, src, world, n, causal, layout):
            qb, kb, vb, dob = q[..., qsl, :], kc[..., ksl, :], vc[..., ksl, :], do[..., qsl, :]
            s = (qb @ kb.transpose(-2, -1)) * scale  # (B, H, qn, kn)
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            p = torch.exp(s - lse[..., qsl].unsqueeze(-1))
            dv[..., ksl, :] += p.transpose(-2, -1) @ dob
            ds = p * (dob @ vb.transpose(-2, -1) - delta[..., qsl].unsqueeze(-1))
            dq[..., qsl, :] += (ds @ kb) * scale
            dk[..., ksl, :] += (ds.transpose(-2, -1) @ qb) * scale
        if world > 1:  # the block's gradient follows the block to the next rank
            (dk, dv), grads = _start_rotate([dk, dv], rank, world, group, tag=20)
            _wait(grads)
        if t < world - 1:
            _wait(pending)
            kc, vc = nxt
    return dq, dk, dv  # after world rotations dk, dv are this rank's own block's


class _Ring(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, causal, layout, group):
        dt = compute_dtype(q.dtype)
        qc, kc, vc = q.to(dt), k.to(dt), v.to(dt)
        o, lse = _forward(qc, kc, vc, scale, causal, layout, group)
        ctx.save_for_backward(qc, kc, vc, o, lse)
        ctx.args, ctx.dtype = (scale, causal, layout, group), q.dtype
        return o.to(q.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, o, lse, do.to(q.dtype), *ctx.args)
        dt = ctx.dtype
        return dq.to(dt), dk.to(dt), dv.to(dt), None, None, None, None


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, group=None,
                   layout: str = "contiguous", scale: Optional[float] = None) -> torch.Tensor:
    """Attention over the whole sequence, computed from this rank's shard by passing K/V around the ring.

    q, k ``(B, H, n, d)``, v ``(B, H, n, dv)``: this rank's shard of a length ``n * world`` sequence in
    ``layout`` ("contiguous": rank r holds positions ``[r n, (r+1) n)``; "zigzag": see
    :func:`attnlib.distributed.zigzag.zigzag_shard`). Returns this rank's ``(B, H, n, dv)`` output, equal
    to the matching rows of single-process attention on the gathered sequence (causal: bottom-right
    aligned, which for equal lengths is query i sees key j iff j <= i). Differentiable.
    Every rank of ``group`` (default: the world) must call it with shards of one shape.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    check_shards(q, k, v, group, what="ring_attention")
    rank, world = rank_world(group)
    chunks(rank, world, q.shape[-2], layout)  # raises for a zig-zag shard of odd length
    return _Ring.apply(q, k, v, resolve_scale(scale, q.shape[-1]), bool(causal), layout, group)
