r"""Score functions: how much should query ``i`` look at key ``j``?

Each module maps queries ``(..., Lq, d_q)`` and keys ``(..., Lk, d_k)`` to
scores ``(..., Lq, Lk)``; a softmax over the last axis turns them into weights.

* dot (Luong et al., 2015): :math:`s_{ij} = q_i^\top k_j` (needs ``d_q == d_k``).
* scaled dot (Vaswani et al., 2017, background): :math:`s_{ij} = q_i^\top k_j / \sqrt{d}`.
* general (Luong et al., 2015): :math:`s_{ij} = q_i^\top W k_j`.
* additive / concat (Bahdanau et al., 2015, background; Luong et al.'s "concat"):
  :math:`s_{ij} = w^\top \tanh(W_q q_i + W_k k_j)`.

Luong et al. are the seed *Effective Approaches to Attention-based Neural
Machine Translation*.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .validation import check_positive_int, check_tensor

__all__ = ["DotScore", "ScaledDotScore", "GeneralScore", "AdditiveScore"]


def _check_qk(q, k, d_q=None, d_k=None) -> None:
    check_tensor(q, "q", min_dim=2)
    check_tensor(k, "k", min_dim=2)
    if d_q is not None and q.shape[-1] != d_q:
        raise ValueError(f"q must have last dimension d_q={d_q}, got shape {tuple(q.shape)}")
    if d_k is not None and k.shape[-1] != d_k:
        raise ValueError(f"k must have last dimension d_k={d_k}, got shape {tuple(k.shape)}")


class DotScore(nn.Module):
    """:math:`s_{ij} = q_i^\\top k_j`."""

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        _check_qk(q, k)
        if q.shape[-1] != k.shape[-1]:
            raise ValueError(f"dot score needs q and k of equal width, got {tuple(q.shape)} and {tuple(k.shape)}")
        return q @ k.transpose(-2, -1)  # (..., Lq, Lk)


class ScaledDotScore(DotScore):
    """:math:`s_{ij} = q_i^\\top k_j / \\sqrt{d}`."""

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return super().forward(q, k) / math.sqrt(q.shape[-1])


class GeneralScore(nn.Module):
    """:math:`s_{ij} = q_i^\\top W k_j` with a learned ``W`` of shape ``(d_q, d_k)``."""

    def __init__(self, d_q: int, d_k: int):
        super().__init__()
        self.d_q, self.d_k = check_positive_int(d_q, "d_q"), check_positive_int(d_k, "d_k")
        self.W = nn.Parameter(torch.randn(d_q, d_k) / math.sqrt(d_q))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        _check_qk(q, k, self.d_q, self.d_k)
        return (q @ self.W) @ k.transpose(-2, -1)  # (..., Lq, Lk)


class AdditiveScore(nn.Module):
    """:math:`s_{ij} = w^\\top \\tanh(W_q q_i + W_k k_j)`: a one-hidden-layer MLP on each pair."""

    def __init__(self, d_q: int, d_k: int, d_hidden: int):
        super().__init__()
        self.d_q, self.d_k = check_positive_int(d_q, "d_q"), check_positive_int(d_k, "d_k")
        check_positive_int(d_hidden, "d_hidden")
        self.W_q = nn.Linear(d_q, d_hidden, bias=False)
        self.W_k = nn.Linear(d_k, d_hidden, bias=False)
        self.w = nn.Linear(d_hidden, 1, bias=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        _check_qk(q, k, self.d_q, self.d_k)
        hidden = torch.tanh(self.W_q(q)[..., :, None, :] + self.W_k(k)[..., None, :, :])  # (..., Lq, Lk, h)
        return self.w(hidden).squeeze(-1)  # (..., Lq, Lk)
