r"""Rank limits of attention: measuring and fitting low-rank logits, rank collapse, variance subspaces.

* One head of width :math:`d_h` has logits :math:`S = Q K^\top` with
  :math:`Q, K \in \mathbb R^{n \times d_h}`, so :math:`\operatorname{rank} S \le d_h`
  (:func:`logit_rank`). When :math:`d_h < n` some attention patterns cannot be
  produced: the *low-rank bottleneck* (seed *Low-Rank Bottleneck in Multi-head
  Attention Models*, which proposes head size = sequence length).
* Eckart–Young (1936, *background, not a seed*): the best rank-:math:`r`
  approximation of :math:`S` in Frobenius norm is its truncated SVD, with error
  :math:`\sqrt{\sum_{i>r}\sigma_i(S)^2}` (:func:`eckart_young_error`). No fitted
  rank-:math:`r` product can do better (:func:`fit_low_rank_logits`).
* Rank collapse (Dong, Cordonnier & Loukas, 2021, *background, not a seed*): in a
  stack of pure attention layers every output row is a convex combination of
  value rows, so the rows drift together (:func:`attention_stack`, with a per-row
  normalisation so that the logits keep their scale); :func:`collapse_residual`
  :math:`= \lVert X - \mathbf 1 \bar x^\top \rVert_F / \lVert X \rVert_F` measures
  how far :math:`X` is from having identical rows.
* :func:`dims_for_variance` counts the principal directions needed for a share of
  the variance (seed *Attention Layers Add Into Low-Dimensional Residual
  Subspaces* reports about 60% of directions for 99% of the variance in LLMs);
  :func:`effective_rank` is the exponential of the entropy of the normalised
  singular values (Roy & Vetterli, 2007, *background*).
"""

from __future__ import annotations

from typing import Optional

import torch

from .validation import check_positive_int, check_tensor

__all__ = [
    "logit_rank",
    "eckart_young_error",
    "best_rank_r",
    "fit_low_rank_logits",
    "fit_attention_pattern",
    "collapse_residual",
    "attention_stack",
    "dims_for_variance",
    "effective_rank",
]


def _check_matrix(x, name: str) -> None:
    check_tensor(x, name, min_dim=2)


def logit_rank(q: torch.Tensor, k: torch.Tensor, tol: Optional[float] = None) -> torch.Tensor:
    """Numerical rank of the logits ``q k^T`` (``q``: (..., n, d), ``k``: (..., m, d)); at most ``d``."""
    _check_matrix(q, "q")
    _check_matrix(k, "k")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dimension, got {tuple(q.shape)} and {tuple(k.shape)}")
    return torch.linalg.matrix_rank(q @ k.transpose(-2, -1), atol=tol)


def eckart_young_error(s: torch.Tensor, r: int) -> torch.Tensor:
    """Smallest Frobenius error of any rank-``r`` approximation of ``s``: ``sqrt(sum_{i>r} sigma_i^2)``."""
    _check_matrix(s, "s")
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"r must be a non-negative int, got {r!r}")
    sigma = torch.linalg.svdvals(s)  # (..., min(n, m)), descending
    return sigma[..., r:].pow(2).sum(-1).sqrt()


def best_rank_r(s: torch.Tensor, r: int) -> torch.Tensor:
    """The truncated SVD of ``s`` keeping ``r`` singular values (the Eckart–Young optimum)."""
    _check_matrix(s, "s")
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"r must be a non-negative int, got {r!r}")
    u, sigma, vh = torch.linalg.svd(s, full_matrices=False)
    return (u[..., :, :r] * sigma[..., None, :r]) @ vh[..., :r, :]


def fit_low_rank_logits(s: torch.Tensor, r: int, *, steps: int = 500, lr: float = 0.05, seed: int = 0):
    """Fit ``Q K^T`` (``Q``: (n, r), ``K``: (m, r)) to the matrix ``s`` by Adam on the squared Frobenius error.

    Returns ``(Q, K, error)`` with ``error = ||Q K^T - s||_F``; Eckart–Young says
    ``error >= eckart_young_error(s, r)`` whatever the optimiser does.
    """
    _check_matrix(s, "s")
    check_positive_int(r, "r")
    check_positive_int(steps, "steps")
    g = torch.Generator().manual_seed(seed)
    n, m = s.shape[-2:]
    scale = (s.abs().mean() / r) ** 0.5 + 1e-3
    q = (torch.randn(n, r, generator=g, dtype=s.dtype) * scale).requires_grad_()
    k = (torch.randn(m, r, generator=g, dtype=s.dtype) * scale).requires_grad_()
    opt = torch.optim.Adam([q, k], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (q @ k.T - s).pow(2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return q.detach(), k.detach(), torch.linalg.norm(q @ k.T - s)


def fit_attention_pattern(p_target: torch.Tensor, d_head: int, *, steps: int = 400, lr: float = 0.05,
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit one head's logits ``Q K^T`` (width ``d_head``) so that ``softmax(Q K^T)`` matches ``p_target``.

    ``p_target`` is ``(n, m)`` with rows on the simplex. Minimises the mean row KL
    ``KL(p_target || softmax(Q K^T))`` with Adam. Returns ``(kl, p_fit)``.
    """
    _check_matrix(p_target, "p_target")
    check_positive_int(d_head, "d_head")
    check_positive_int(steps, "steps")
    g = torch.Generator().manual_seed(seed)
    n, m = p_target.shape[-2:]
    q = (torch.randn(n, d_head, generator=g, dtype=p_target.dtype) / d_head**0.25).requires_grad_()
    k = (torch.randn(m, d_head, generator=g, dtype=p_target.dtype) / d_head**0.25).requires_grad_()
    opt = torch.optim.Adam([q, k], lr=lr)
    plogp = torch.where(p_target > 0, p_target * p_target.clamp_min(1e-300).log(), torch.zeros_like(p_target))

    def kl():
        logp = torch.log_softmax(q @ k.T, dim=-1)
        return (plogp - p_target * logp).sum(-1).mean()

    for _ in range(steps):
        opt.zero_grad()
        loss = kl()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return kl(), torch.softmax(q @ k.T, dim=-1)


def collapse_residual(x: torch.Tensor) -> torch.Tensor:
    r"""``||X - 1 xbar^T||_F / ||X||_F`` over the last two dims (0 when all rows of ``X`` are equal)."""
    _check_matrix(x, "x")
    centred = x - x.mean(dim=-2, keepdim=True)
    return torch.linalg.norm(centred, dim=(-2, -1)) / torch.linalg.norm(x, dim=(-2, -1))


def attention_stack(x: torch.Tensor, depth: int, *, skip: bool, seed: int = 0, weight_scale: float = 1.0,
                    norm: str = "rms", return_entropy: bool = False):
    r"""Run ``depth`` random single-head self-attention layers (no MLP) on ``x`` ``(n, d)``.

    Layer: :math:`X \leftarrow \operatorname{softmax}(X W_Q W_K^\top X^\top/\sqrt d)\, X W_V`,
    plus :math:`X` itself when ``skip``, then a normalisation:

    * ``"rms"`` (default): every row rescaled to root-mean-square 1 (RMSNorm without gain), so
      the logits keep their scale from layer to layer, as in a Transformer;
    * ``"layernorm"``: every row centred and rescaled to unit variance (LayerNorm without gain);
    * ``"frobenius"``: the whole of :math:`X` rescaled to unit Frobenius norm. Each row then has
      norm about :math:`1/\sqrt n` instead of :math:`\sqrt d`, the logits (quadratic in :math:`X`) shrink by a
      factor of about :math:`n d` and attention is almost uniform: what collapses is plain averaging, not attention;
    * ``"none"``: nothing.

    Weights are Gaussian with std ``weight_scale / sqrt(d)``, fresh per layer. Returns the
    ``depth + 1`` values of :func:`collapse_residual` (input first) and, with ``return_entropy``,
    also the ``depth`` mean row entropies (nats) of the attention matrices, layer by layer.
    """
    _check_matrix(x, "x")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative int, got {depth!r}")
    if norm not in ("rms", "layernorm", "frobenius", "none"):
        raise ValueError(f"norm must be 'rms', 'layernorm', 'frobenius' or 'none', got {norm!r}")
    g = torch.Generator().manual_seed(seed)
    d = x.shape[-1]
    out, entropies = [collapse_residual(x)], []
    for _ in range(depth):
        wq, wk, wv = (torch.randn(d, d, generator=g, dtype=x.dtype) * weight_scale / d**0.5 for _ in range(3))
        a = torch.softmax((x @ wq) @ (x @ wk).transpose(-2, -1) / d**0.5, dim=-1)  # (..., n, n)
        entropies.append(-(a * a.clamp_min(1e-300).log()).sum(-1).mean(-1))
        y = a @ (x @ wv)
        x = x + y if skip else y
        if norm == "rms":
            x = x / x.pow(2).mean(-1, keepdim=True).sqrt()
        elif norm == "layernorm":
            x = x - x.mean(-1, keepdim=True)
            x = x / x.pow(2).mean(-1, keepdim=True).sqrt()
        elif norm == "frobenius":
            x = x / x.norm(dim=(-2, -1), keepdim=True)
        out.append(collapse_residual(x))
    if return_entropy:
        return torch.stack(out), torch.stack(entropies)
    return torch.stack(out)


def dims_for_variance(x: torch.Tensor, fraction: float = 0.99) -> int:
    """How many principal directions of the rows of ``x`` ``(N, d)`` carry ``fraction`` of the variance."""
    check_tensor(x, "x", min_dim=2)
    if x.dim() != 2:
        raise ValueError(f"x must be a matrix (N, d) of N samples, got shape {tuple(x.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    var = torch.linalg.svdvals(x - x.mean(0)).pow(2)
    share = var.cumsum(0) / var.sum()
    return int((share < fraction - 1e-12).sum()) + 1


def effective_rank(x: torch.Tensor) -> torch.Tensor:
    """``exp(H(sigma / sum sigma))``, the entropy effective rank of the matrix ``x`` (over the last two dims)."""
    _check_matrix(x, "x")
    s = torch.linalg.svdvals(x)
    p = s / s.sum(-1, keepdim=True)
    h = -torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(-1)
    return h.exp()
