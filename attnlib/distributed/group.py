"""The process-group plumbing shared by ring and Ulysses attention: ranks, peers, and argument checks.

Every rank calls the same function with its own shard; these helpers make a wrong call fail on every
rank with the same message instead of hanging one of them: a process group that is not initialised,
shards whose shapes or dtypes differ across ranks, a length or head count the world size does not divide.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..validation import check_qkv

__all__ = ["rank_world", "global_rank", "check_shards"]

_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def rank_world(group=None) -> tuple[int, int]:
    """``(rank, world_size)`` in ``group`` (the default group if None); raise if none is initialised."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group "
                           "(or start the ranks with attnlib.distributed.launch.spawn / torchrun) first")
    return dist.get_rank(group), dist.get_world_size(group)


def global_rank(group, rank: int) -> int:
    """The global rank of ``rank`` in ``group`` (point-to-point calls take global ranks)."""
    return rank if group is None else dist.get_global_rank(group, rank)


def check_shards(q, k, v, group=None, *, what: str = "ring_attention") -> None:
    """Raise on every rank unless q, k, v are ``(B, H, n, d)`` shards of one shape and dtype on all ranks."""
    check_qkv(q, k, v)
    if q.dim() != 4 or k.shape[:-1] != q.shape[:-1] or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"{what} expects q, k, v shards of shape (B, H, n, d) with one n on each rank; "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _DTYPES:
        raise TypeError(f"{what} expects q, k, v of one floating dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    mine = torch.tensor([*q.shape, v.shape[-1], _DTYPES.index(q.dtype)], dtype=torch.int64)
    rank, world = rank_world(group)
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine, group=group)
    shapes = {tuple(t.tolist()) for t in everyone}
    if len(shapes) > 1:
        table = "; ".join(f"rank {r}: q {tuple(t[:4].tolist())}, dv {int(t[4])}, {_DTYPES[int(t[5])]}"
                          for r, t in enumerate(everyone))
        raise ValueError(f"{what}: the shards differ across ranks ({table}); every rank must hold a shard "
                         "of one shape and dtype (split the sequence evenly, pad it if needed)")
