r"""Ulysses (all-to-all) context parallelism: trade the sequence split for a head split, attend locally.

Each of :math:`P` ranks holds a sequence shard ``(B, H, n, d)`` of Q, K and V, :math:`n = L / P`. An
all-to-all sends head group :math:`g` (heads :math:`gH/P, \dots, (g+1)H/P - 1`) of the shard to rank
:math:`g`, so that rank :math:`g` then holds **all** :math:`L` positions of its :math:`H/P` heads,
``(B, H/P, L, d)``. Heads are independent, so ordinary attention (attnlib's reference, or a flash kernel
on a GPU) runs locally; a second all-to-all takes the output back to the sequence split. Each all-to-all
moves :math:`(P-1)/P` of a shard per rank, whatever :math:`P`; the head count must be divisible by
:math:`P`. The gradient of an all-to-all is the reverse all-to-all.

Background, not a seed: Jacobs et al., *DeepSpeed Ulysses: System Optimizations for Enabling Training of
Extreme Long Sequence Transformer Models*.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist

from ..core import scaled_dot_product_attention
from .group import check_shards, rank_world

__all__ = ["seq_to_head", "head_to_seq", "ulysses_attention"]


def _seq_to_head(x: torch.Tensor, world: int, group) -> torch.Tensor:
    b, h, n, d = x.shape
    send = x.reshape(b, world, h // world, n, d).transpose(0, 1).contiguous()  # (P, B, H/P, n, d): part g to rank g
    recv = torch.empty_like(send)  # (P, B, H/P, n, d): part g is rank g's positions
    dist.all_to_all_single(recv, send, group=group)
    return recv.permute(1, 2, 0, 3, 4).reshape(b, h // world, world * n, d)


def _head_to_seq(y: torch.Tensor, world: int, group) -> torch.Tensor:
    b, hp, length, d = y.shape
    n = length // world
    send = y.reshape(b, hp, world, n, d).permute(2, 0, 1, 3, 4).contiguous()  # (P, B, H/P, n, d): positions of rank g
    recv = torch.empty_like(send)  # (P, B, H/P, n, d): part g is head group g
    dist.all_to_all_single(recv, send, group=group)
    return recv.transpose(0, 1).reshape(b, world * hp, n, d)


class _SeqToHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, world, group):
        ctx.args = (world, group)
        return _seq_to_head(x, world, group)

    @staticmethod
    def backward(ctx, g):
        return _head_to_seq(g.contiguous(), *ctx.args), None, None


class _HeadToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, world, group):
        ctx.args = (world, group)
        return _head_to_seq(y, world, group)

    @staticmethod
    def backward(ctx, g):
        return _seq_to_head(g.contiguous(), *ctx.args), None, None


def seq_to_head(x: torch.Tensor, group=None) -> torch.Tensor:
    """All-to-all ``(B, H, n, d)`` sequence shard -> ``(B, H/P, P n, d)`` head shard (differentiable)."""
    _, world = rank_world(group)
    return _SeqToHead.apply(x, world, group)


def head_to_seq(y: torch.Tensor, group=None) -> torch.Tensor:
    """All-to-all ``(B, H/P, P n, d)`` head shard -> ``(B, H, n, d)`` sequence shard (differentiable)."""
    _, world = rank_world(group)
    return _HeadToSeq.apply(y, world, group)


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, group=None,
                      attention: Optional[Callable] = None) -> torch.Tensor:
    """Attention over the whole (contiguously sharded) sequence by two all-to-alls around local attention.

    q, k ``(B, H, n, d)``, v ``(B, H, n, dv)``: rank r's shard, positions ``[r n, (r+1) n)``; H must be
    divisible by the world size. ``attention(q, k, v, causal=...)`` is the local attention (default
    :func:`attnlib.core.scaled_dot_product_attention`). Returns this rank's ``(B, H, n, dv)``. Differentiable.
    """
    check_shards(q, k, v, group, what="ulysses_attention")
    _, world = rank_world(group)
    if q.shape[1] % world:
        raise ValueError(f"ulysses_attention splits the heads over the ranks: the head count H = {q.shape[1]} "
                         f"must be divisible by the world size {world} (use ring attention otherwise)")
    attention = attention or scaled_dot_product_attention
    qh, kh, vh = (seq_to_head(t, group) for t in (q, k, v))  # (B, H/P, L, d)
    return head_to_seq(attention(qh, kh, vh, causal=causal), group)
