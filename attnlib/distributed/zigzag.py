r"""Where each rank's tokens sit in the sequence: the contiguous layout and the zig-zag (load-balanced) one.

With a causal mask, query :math:`i` sees keys :math:`j \le i`. Cut a length-:math:`L` sequence into
:math:`P` contiguous shards and rank :math:`r` must attend over :math:`r + 1` shards of keys: the last
rank does :math:`P` blocks of work, the first one, and the ring waits for the slowest. The zig-zag layout
cuts the sequence into :math:`2P` chunks and gives rank :math:`r` chunks :math:`r` and :math:`2P-1-r`
(one early, one late), so every rank sees the same number :math:`2P + 1` of (query chunk, key chunk)
pairs that are not fully masked. Striped and zig-zag layouts are background, not seeds (Brandon et
al., *Striped Attention: Faster Ring Attention for Causal Transformers*).
"""

from __future__ import annotations

import torch

from ..validation import check_positive_int, check_tensor

__all__ = ["LAYOUTS", "chunks", "positions", "shard", "zigzag_shard", "unshard"]

LAYOUTS = ("contiguous", "zigzag")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def chunks(rank: int, world: int, n: int, layout: str = "contiguous") -> list[tuple[int, int]]:
    """The ``(start, length)`` global position ranges held by ``rank``, whose shard has ``n`` tokens."""
    _check_layout(layout)
    if layout == "contiguous":
        return [(rank * n, n)]
    if n % 2:
        raise ValueError(f"the zig-zag layout needs an even shard length (2 chunks per rank), got {n}: "
                         f"the sequence length must be divisible by 2 * world = {2 * world}")
    c = n // 2
    return [(rank * c, c), ((2 * world - 1 - rank) * c, c)]


def positions(rank: int, world: int, n: int, layout: str = "contiguous") -> torch.Tensor:
    """The global positions ``(n,)`` of the tokens of ``rank``'s shard, in shard order."""
    return torch.cat([torch.arange(s, s + m) for s, m in chunks(rank, world, n, layout)])


def _split(x: torch.Tensor, parts: int, dim: int) -> list[torch.Tensor]:
    check_tensor(x, "x", floating=False)
    length = x.shape[dim]
    if length % parts:
        raise ValueError(f"the sequence length (dim {dim}) must be divisible by {parts}, got {length}; "
                         "pad the sequence (and mask the padding) to a multiple of it")
    return list(x.chunk(parts, dim=dim))


def shard(x: torch.Tensor, world: int, *, dim: int = -2, layout: str = "contiguous") -> list[torch.Tensor]:
    """Split the sequence dim of ``x`` into ``world`` shards in ``layout``: a list, one per rank."""
    check_positive_int(world, "world")
    _check_layout(layout)
    if layout == "contiguous":
        return _split(x, world, dim)
    return zigzag_shard(x, world, dim=dim)


def zigzag_shard(x: torch.Tensor, world: int, *, dim: int = -2) -> list[torch.Tensor]:
    """Rank r gets chunks r and 2·world-1-r of the 2·world equal chunks of ``x`` along ``dim``."""
    check_positive_int(world, "world")
    c = _split(x, 2 * world, dim)
    return [torch.cat([c[r], c[2 * world - 1 - r]], dim=dim) for r in range(world)]


def unshard(shards: list[torch.Tensor], *, dim: int = -2, layout: str = "contiguous") -> torch.Tensor:
    """Inverse of :func:`shard`: the full sequence from the per-rank shards."""
    _check_layout(layout)
    if layout == "contiguous":
        return torch.cat(list(shards), dim=dim)
    world = len(shards)
    halves = [s.chunk(2, dim=dim) for s in shards]
    return torch.cat([halves[r][0] for r in range(world)] + [halves[r][1] for r in reversed(range(world))],
                     dim=dim)
