r"""Loki: pick the keys to attend to by their scores in a low-rank PCA basis of the keys.

Seed *Loki: Low-Rank Keys for Efficient Sparse Attention* observes that key vectors
"lie in a significantly lower-dimensional space" and "ranks and selects tokens in the
KV-cache based on attention scores computed in low-dimensional space". With an
orthonormal basis :math:`U = [u_1, \dots, u_d]` of principal directions of the keys
(eigenvectors of :math:`\frac1N K^\top K`, largest eigenvalue first),

.. math:: q^\top k = \sum_{i=1}^{d} (q^\top u_i)(k^\top u_i) \approx
          \sum_{i=1}^{r} (q^\top u_i)(k^\top u_i) = (q U_r)(k U_r)^\top,

exact at :math:`r = d`. :func:`loki_topk` ranks the keys by the rank-:math:`r` scores
(cost :math:`r/d` of the full scores) and :func:`loki_attention` attends *exactly* (full
dimension) to the top-:math:`k` of them. Here the basis is that of the uncentred second
moment, which minimises the mean squared key reconstruction error :math:`\lVert k - U_rU_r^\top k\rVert^2`
(Loki's choice of PCA details is not reproduced).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..core import scaled_dot_product_attention
from ..validation import check_positive_int, check_tensor

__all__ = ["pca_basis", "loki_topk", "loki_attention"]


def pca_basis(keys: torch.Tensor):
    """Principal directions of keys ``(..., N, d)``: ``(basis (..., d, d) as columns, explained (..., d))``.

    ``explained[..., i]`` is the share of the keys' second moment along column ``i``; columns are sorted
    by it, largest first, and the shares sum to one.
    """
    check_tensor(keys, "keys", min_dim=2)
    moment = keys.transpose(-2, -1) @ keys / keys.shape[-2]  # (..., d, d)
    evals, evecs = torch.linalg.eigh(moment)  # ascending
    evals, evecs = evals.flip(-1).clamp(min=0), evecs.flip(-1)
    total = evals.sum(-1, keepdim=True)
    return evecs, evals / torch.where(total > 0, total, torch.ones_like(total))


def loki_topk(q: torch.Tensor, keys: torch.Tensor, rank: int, k: int, *,
              basis: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Indices ``(..., Lq, k)`` of the ``k`` keys with the largest rank-``rank`` scores ``(q U_r)(K U_r)^T``.

    ``q (..., Lq, d)``, ``keys (..., Lk, d)``; ``basis (..., d, d)`` (columns, as :func:`pca_basis` returns;
    default: the PCA basis of ``keys`` themselves). Indices are sorted ascending (key order).
    """
    check_tensor(q, "q", min_dim=2)
    check_tensor(keys, "keys", min_dim=2)
    d = q.shape[-1]
    if keys.shape[-1] != d:
        raise ValueError(f"q and keys must share the last dimension, got {tuple(q.shape)} and {tuple(keys.shape)}")
    check_positive_int(rank, "rank")
    check_positive_int(k, "k")
    if rank > d:
        raise ValueError(f"rank must be at most the head dimension {d}, got {rank}")
    if k > keys.shape[-2]:
        raise ValueError(f"k must be at most the number of keys {keys.shape[-2]}, got {k}")
    if basis is None:
        basis = pca_basis(keys)[0]
    u = basis[..., :rank].to(q.dtype)  # (..., d, r)
    approx = (q @ u) @ (keys @ u).transpose(-2, -1)  # (..., Lq, Lk)
    return approx.topk(k, dim=-1).indices.sort(-1).values


def loki_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, rank: int, k: int, *,
                   basis: Optional[torch.Tensor] = None, scale: Optional[float] = None) -> torch.Tensor:
    """Exact softmax attention of each query over the ``k`` keys :func:`loki_topk` selects: ``(..., Lq, dv)``."""
    idx = loki_topk(q, keys, rank, k, basis=basis)  # (..., Lq, k)
    lead = torch.broadcast_shapes(q.shape[:-2], keys.shape[:-2])
    mask = torch.zeros(*lead, q.shape[-2], keys.shape[-2], dtype=torch.bool, device=q.device)
    mask.scatter_(-1, idx.expand(*lead, *idx.shape[-2:]), True)
    return scaled_dot_product_attention(q, keys, values, mask, scale=scale)
