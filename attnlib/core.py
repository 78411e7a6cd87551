r"""Reference scaled dot-product attention, and its chunked online-softmax form.

Scaled dot-product attention (Vaswani et al., 2017, *background, not a seed*;
the multiplicative "dot" score is Luong et al.'s, seed *Effective Approaches to
Attention-based Neural Machine Translation*):

.. math::

    \operatorname{Attn}(Q, K, V) = \operatorname{softmax}\!\Big(s\, Q K^\top + B\Big) V,
    \qquad s = 1/\sqrt{d} \text{ by default},

where :math:`B_{ij} = 0` where the mask allows query ``i`` to attend to key ``j``
and :math:`-\infty` elsewhere. A row whose every key is masked has no
distribution to normalise; attnlib defines its output (and its weights) as
zeros rather than the NaN that ``0/0`` would give.

Shapes follow the attnlib contract: ``q`` is ``(..., Lq, d)``, ``k`` is
``(..., Lk, d)``, ``v`` is ``(..., Lk, dv)``; leading dims broadcast.
Half-precision inputs are computed in float32 and cast back, so large logits
stay finite.
"""

from __future__ import annotations

from typing import Optional

import torch

from .masks import causal_mask
from .validation import check_mask, check_positive_int, check_qkv, resolve_scale

__all__ = ["compute_dtype", "combine_masks", "masked_softmax", "scaled_dot_product_attention", "chunked_attention"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores and softmax are computed in: float16/bfloat16 are upcast to float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def masked_softmax(scores: torch.Tensor, mask: Optional[torch.Tensor] = None, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` that ignores masked entries (mask True = keep).

    Masked entries get weight exactly 0. A slice in which *every* entry is
    masked gets all-zero weights (not NaN), and its gradient is zero too: we
    softmax a harmless row of zeros there and multiply the result by 0.
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    scores = scores.masked_fill(~mask, float("-inf"))
    any_allowed = mask.any(dim=dim, keepdim=True)  # False for fully masked rows
    scores = torch.where(any_allowed, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    return torch.softmax(scores, dim=dim) * any_allowed


def combine_masks(mask, causal: bool, lq: int, lk: int, device) -> Optional[torch.Tensor]:
    """Validate ``mask`` (or None) and AND it with the bottom-right causal mask when ``causal``."""
    if mask is not None:
        check_mask(mask, lq, lk)
    if causal:
        c = causal_mask(lq, lk, device=device)  # (Lq, Lk)
        mask = c if mask is None else (mask & c)
    return mask


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    causal: bool = False,
    scale: Optional[float] = None,
    return_weights: bool = False,
):
    """Reference attention ``softmax(scale * q k^T, masked) v``.

    Args:
        q: ``(..., Lq, d)`` queries.
        k: ``(..., Lk, d)`` keys.
        v: ``(..., Lk, dv)`` values.
        mask: optional boolean mask broadcastable to ``(..., Lq, Lk)``, True = attend.
        causal: also apply the bottom-right aligned causal mask (see :mod:`attnlib.masks`).
        scale: score scale, default ``1/sqrt(d)``.
        return_weights: if True also return the ``(..., Lq, Lk)`` attention weights.

    Returns:
        ``out`` of shape ``(..., Lq, dv)`` in the dtype of ``q``, or ``(out, weights)``.
    """
    check_qkv(q, k, v)
    lq, lk = q.shape[-2], k.shape[-2]
    scale = resolve_scale(scale, q.shape[-1])
    mask = combine_masks(mask, causal, lq, lk, q.device)

    ct = compute_dtype(q.dtype)
    scores = (q.to(ct) @ k.to(ct).transpose(-2, -1)) * scale  # (..., Lq, Lk)
    weights = masked_softmax(scores, mask, dim=-1)  # (..., Lq, Lk), rows sum to 1 (or 0)
    out = (weights @ v.to(ct)).to(q.dtype)  # (..., Lq, dv)
    if return_weights:
        return out, weights.to(q.dtype)
    return out


def chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: Optional[float] = None,
    chunk_size: int = 128,
) -> torch.Tensor:
    r"""Attention that visits the keys ``chunk_size`` at a time with an *online softmax*.

    It never materialises the ``(Lq, Lk)`` score matrix: per query row it keeps a
    running maximum :math:`m`, a running normaliser :math:`\ell = \sum_j e^{s_j - m}`
    and a running (unnormalised) output :math:`a = \sum_j e^{s_j - m} v_j`. When a new
    chunk raises the maximum to :math:`m'`, the old sums are rescaled by
    :math:`e^{m - m'}` (Milakov & Gimelshein, 2018; FlashAttention, Dao et al., 2022;
    *background, not seeds*). At the end :math:`\text{out} = a / \ell`.
    Extra memory is ``O(Lq * chunk_size)`` instead of ``O(Lq * Lk)``.
    The result equals :func:`scaled_dot_product_attention` up to rounding.
    """
    check_qkv(q, k, v)
    check_positive_int(chunk_size, "chunk_size")
    lq, lk = q.shape[-2], k.shape[-2]
    scale = resolve_scale(scale, q.shape[-1])
    ct = compute_dtype(q.dtype)
    q_, k_, v_ = q.to(ct), k.to(ct), v.to(ct)

    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    m = torch.full((*batch, lq, 1), float("-inf"), dtype=ct, device=q.device)  # running max
    ell = torch.zeros((*batch, lq, 1), dtype=ct, device=q.device)  # running normaliser
    acc = torch.zeros((*batch, lq, v.shape[-1]), dtype=ct, device=q.device)  # running output
    rows = torch.arange(lq, device=q.device)[:, None] + (lk - lq)  # (Lq, 1) aligned positions

    for start in range(0, lk, chunk_size):
        end = min(start + chunk_size, lk)
        s = (q_ @ k_[..., start:end, :].transpose(-2, -1)) * scale  # (..., Lq, C)
        if causal:
            cols = torch.arange(start, end, device=q.device)[None, :]  # (1, C)
            s = s.masked_fill(cols > rows, float("-inf"))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))  # (..., Lq, 1)
        # Rows that have seen only masked keys keep m_new = -inf; shift them by 0 instead.
        shift = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(s - shift)  # (..., Lq, C), exactly 0 at masked keys
        correction = torch.exp(m - shift)  # rescales the old sums; 0 when m = -inf
        ell = ell * correction + p.sum(dim=-1, keepdim=True)
        acc = acc * correction + p @ v_[..., start:end, :]
        m = m_new

    out = torch.where(ell > 0, acc / torch.where(ell > 0, ell, torch.ones_like(ell)), torch.zeros_like(acc))
    return out.to(q.dtype)
