r"""An external (key, value) memory read by exact top-k inner-product search, merged with local
attention by one joint softmax (Memorizing Transformers: background, not a seed; the distraction
issue of such memories is the subject of the seed *Focused Transformer: Contrastive Training for
Context Scaling*).

For a query ``q`` with local keys ``K_c`` and the ``k`` retrieved memory keys ``K_m``, the read is

.. math::

    \text{out} = \operatorname{softmax}\big(s\,[q K_m^\top,\; q K_c^\top]\big)\,[V_m; V_c],

one softmax over memory and context together. With ``k = capacity`` (every stored pair retrieved)
this is full attention over memory ∪ context; with an empty memory it is local attention.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..core import scaled_dot_product_attention
from ..validation import check_positive_int, check_tensor

__all__ = ["KNNMemory", "joint_softmax_read", "knn_read"]


def joint_softmax_read(q, mem_k, mem_v, k, v, mask=None, *, scale=None):
    """One softmax over memory keys and local keys.

    q: (..., Lq, d); mem_k: (..., Lq, M, d) per-query retrieved keys or (..., M, d) shared ones;
    mem_v likewise with dv; k: (..., Lk, d), v: (..., Lk, dv); mask: boolean (..., Lq, Lk) on the
    local keys (True = attend; memory is always visible). Returns (..., Lq, dv).
    """
    for name, x in (("q", q), ("mem_k", mem_k), ("mem_v", mem_v), ("k", k), ("v", v)):
        check_tensor(x, name, min_dim=2)
    d = q.shape[-1]
    if mem_k.shape[-1] != d or k.shape[-1] != d:
        raise ValueError(f"q, mem_k and k must share the key dim d = {d}: got q {tuple(q.shape)}, "
                         f"mem_k {tuple(mem_k.shape)}, k {tuple(k.shape)}")
    if mem_k.dim() not in (q.dim(), q.dim() + 1) or mem_v.dim() != mem_k.dim() or mem_v.shape[-2] != mem_k.shape[-2]:
        raise ValueError(f"mem_k (..., [Lq,] M, d) and mem_v (..., [Lq,] M, dv) must match each other and q: "
                         f"got q {tuple(q.shape)}, mem_k {tuple(mem_k.shape)}, mem_v {tuple(mem_v.shape)}")
    if k.shape[-2] != v.shape[-2] or mem_v.shape[-1] != v.shape[-1]:
        raise ValueError(f"k/v must have equal Lk and mem_v/v equal dv: got k {tuple(k.shape)}, v {tuple(v.shape)}, "
                         f"mem_v {tuple(mem_v.shape)}")
    scale = d ** -0.5 if scale is None else scale
    if mem_k.dim() == q.dim():  # shared memory: (..., M, d)
        mem_s = q @ mem_k.transpose(-2, -1)  # (..., Lq, M)
    else:
        mem_s = (q[..., :, None, :] * mem_k).sum(-1)  # (..., Lq, M)
    loc_s = q @ k.transpose(-2, -1)  # (..., Lq, Lk)
    if mask is not None:
        loc_s = loc_s.masked_fill(~mask, float("-inf"))
    s = torch.cat([mem_s.expand(*loc_s.shape[:-1], mem_s.shape[-1]), loc_s], -1) * scale
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    tot = e.sum(-1, keepdim=True)
    w = e / torch.where(tot > 0, tot, torch.ones_like(tot))
    n = mem_s.shape[-1]
    w_m, w_c = w[..., :n], w[..., n:]
    if mem_v.dim() == q.dim():
        out_m = w_m @ mem_v
    else:
        out_m = (w_m[..., None] * mem_v).sum(-2)
    return out_m + w_c @ v


def knn_read(q, mem_k, mem_v, k, v, top_k: int, mask=None, *, scale=None):
    """Exact top-``top_k`` retrieval from a memory, then the joint-softmax read.

    q: (..., Lq, d); mem_k: (..., M, d) and mem_v: (..., M, dv), leading dims broadcasting with q's (one
    memory per batch element, or one shared (M, d) memory); k, v, mask: the local keys, values and mask as in
    :func:`joint_softmax_read`. Each query retrieves its ``min(top_k, M)`` memory keys of largest inner
    product. With ``top_k >= M`` this is full attention over memory ∪ context; with ``M = 0`` it is local
    attention. Returns (..., Lq, dv).
    """
    check_positive_int(top_k, "top_k")
    for name, x in (("q", q), ("mem_k", mem_k), ("mem_v", mem_v)):
        check_tensor(x, name, min_dim=2)
    if mem_k.shape[-1] != q.shape[-1] or mem_k.shape[-2] != mem_v.shape[-2]:
        raise ValueError(f"mem_k (..., M, d) must match q's d and mem_v's M: got q {tuple(q.shape)}, "
                         f"mem_k {tuple(mem_k.shape)}, mem_v {tuple(mem_v.shape)}")
    top = min(top_k, mem_k.shape[-2])
    idx = (q @ mem_k.transpose(-2, -1)).topk(top, dim=-1).indices  # (..., Lq, top)

    def gather(mem):  # (..., M, e) -> (..., Lq, top, e)
        full = mem[..., None, :, :].expand(*idx.shape[:-1], *mem.shape[-2:])
        return full.gather(-2, idx[..., None].expand(*idx.shape, mem.shape[-1]))

    return joint_softmax_read(q, gather(mem_k), gather(mem_v), k, v, mask, scale=scale)


class KNNMemory:
    """A FIFO store of at most ``capacity`` (key, value) pairs, read by exact top-``k`` inner product.

    ``add(keys, values)`` appends ``(N, d)``/``(N, dv)`` rows (oldest dropped past capacity);
    ``retrieve(q)`` returns the top-k keys and values per query, ``(Lq, k', d)`` with
    ``k' = min(k, len)``; ``attend(q, k, v, mask)`` is the joint-softmax read.
    """

    def __init__(self, capacity: int, k: int):
        check_positive_int(capacity, "capacity")
        check_positive_int(k, "k")
        if k > capacity:
            raise ValueError(f"k must be <= capacity: got k={k}, capacity={capacity}")
        self.capacity, self.k = capacity, k
        self.keys: Optional[torch.Tensor] = None
        self.values: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[0]

    def add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        check_tensor(keys, "keys", min_dim=2)
        check_tensor(values, "values", min_dim=2)
        if keys.dim() != 2 or values.dim() != 2 or keys.shape[0] != values.shape[0]:
            raise ValueError(f"keys (N, d) and values (N, dv) must be 2-D with equal N: got keys "
                             f"{tuple(keys.shape)}, values {tuple(values.shape)}")
        if self.keys is not None and (keys.shape[1] != self.keys.shape[1] or values.shape[1] != self.values.shape[1]):
            raise ValueError(f"keys/values dims must match the stored ones {tuple(self.keys.shape[1:])}/"
                             f"{tuple(self.values.shape[1:])}: got {tuple(keys.shape)}, {tuple(values.shape)}")
        ks = keys if self.keys is None else torch.cat([self.keys, keys])
        vs = values if self.values is None else torch.cat([self.values, values])
        self.keys, self.values = ks[-self.capacity:], vs[-self.capacity:]

    def retrieve(self, q: torch.Tensor):
        check_tensor(q, "q", min_dim=2)
        if self.keys is None:
            z = q.new_zeros(*q.shape[:-1], 0, q.shape[-1])
            return z, q.new_zeros(*q.shape[:-1], 0, 1)
        if q.shape[-1] != self.keys.shape[-1]:
            raise ValueError(f"q's last dim must be the key dim {self.keys.shape[-1]}, got q {tuple(q.shape)}")
        top = min(self.k, len(self))
        idx = (q @ self.keys.T).topk(top, dim=-1).indices  # (..., Lq, k')
        return self.keys[idx], self.values[idx]

    def attend(self, q, k, v, mask=None, *, scale=None):
        if self.keys is None:
            return scaled_dot_product_attention(q, k, v, mask, scale=scale)
        mk, mv = self.retrieve(q)
        return joint_softmax_read(q, mk, mv, k, v, mask, scale=scale)
