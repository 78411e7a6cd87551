r"""Attention over a block of keys with its log-sum-exp, and the merge of two such partial results.

Split the keys of one query into two sets :math:`A` and :math:`B`. Attention over each set gives an
output and the log of its softmax normaliser,

.. math::

    o_A = \frac{\sum_{j \in A} e^{s_j} v_j}{\sum_{j \in A} e^{s_j}}, \qquad
    \ell_A = \log \sum_{j \in A} e^{s_j},

and the attention over :math:`A \cup B` is their weighted mean, with weights that sum to one:

.. math::

    \ell = \log\!\big(e^{\ell_A} + e^{\ell_B}\big), \qquad
    o = e^{\ell_A - \ell}\, o_A + e^{\ell_B - \ell}\, o_B .

This is the online softmax of lab 01 and the log-sum-exp of lab 16, one tile at a time; a ring step
of ring attention (Liu, Zaharia and Abbeel, *Ring Attention with Blockwise Transformers for
Near-Infinite Context*, background, not a seed) is one more such merge. A block in which a query sees
no key has :math:`\ell = -\infty` and output zero, and merging it changes nothing.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..validation import check_qkv, check_tensor

__all__ = ["block_attention", "merge_partials"]


def block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
                    mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``q`` over one block of keys: ``(out, lse)``.

    q ``(..., Lq, d)``, k ``(..., Lk, d)``, v ``(..., Lk, dv)``, mask ``(Lq, Lk)`` boolean (True = attend)
    or None. Returns out ``(..., Lq, dv)`` and lse ``(..., Lq)``; a row with no visible key gets out 0
    and lse ``-inf``.
    """
    check_qkv(q, k, v)
    s = (q @ k.transpose(-2, -1)) * scale  # (..., Lq, Lk)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # (..., Lq), -inf where the row sees nothing
    finite = torch.isfinite(lse)
    p = torch.exp(s - torch.where(finite, lse, torch.zeros_like(lse)).unsqueeze(-1))  # exp(-inf) = 0
    return p @ v, lse


def merge_partials(o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor,
                   lse2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial attention results over disjoint key sets: ``(out, lse)``.

    o1, o2 ``(..., L, dv)``; lse1, lse2 ``(..., L)`` (``-inf`` where a part saw no key).
    """
    for name, t in (("o1", o1), ("lse1", lse1), ("o2", o2), ("lse2", lse2)):
        check_tensor(t, name)
    if o1.shape != o2.shape or lse1.shape != lse2.shape or o1.shape[:-1] != lse1.shape:
        raise ValueError(f"merge_partials expects o1, o2 of one shape (..., L, dv) and lse1, lse2 of shape "
                         f"(..., L); got o1 {tuple(o1.shape)}, o2 {tuple(o2.shape)}, lse1 {tuple(lse1.shape)}, "
                         f"lse2 {tuple(lse2.shape)}")
    lse = torch.logaddexp(lse1, lse2)  # (..., L)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    w1 = torch.exp(lse1 - safe).unsqueeze(-1)  # 0 where lse1 = -inf
    w2 = torch.exp(lse2 - safe).unsqueeze(-1)
    return w1 * o1 + w2 * o2, lse
