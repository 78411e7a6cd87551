r"""Rank agreement between two importance scorings of the same tokens: Spearman's rho and Kendall's tau-b.

Seeds: *Quantifying Attention Flow in Transformers* compares explanation methods by
their Spearman correlation with ablation and gradient importance; *A Song of
(Dis)agreement: Evaluating the Evaluation of Explainable Artificial Intelligence in
Natural Language Processing* and *Order in the Court: Explainable AI Methods Prone to
Disagreement* find that methods rarely agree and argue that rank correlation does not
validate an explanation. The statistics themselves are background, not a seed.

For two score vectors :math:`a, b` over the same :math:`n` positions:

* Spearman: the Pearson correlation of their ranks (ties get their average rank);
* Kendall's tau-b: :math:`(n_c - n_d) / \sqrt{(n_0 - n_a)(n_0 - n_b)}`, with :math:`n_c, n_d`
  the concordant and discordant pairs, :math:`n_0 = n(n-1)/2` and :math:`n_a, n_b` the pairs
  tied in :math:`a` and in :math:`b`.

Both lie in :math:`[-1, 1]`; a constant vector has no ranking, and gives NaN (as in SciPy).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..validation import check_tensor

__all__ = ["average_ranks", "rank_agreement"]


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..n`` along the last dim, ties sharing their average rank (float64)."""
    x = x.double()
    less = (x[..., None, :] < x[..., :, None]).sum(-1).double()  # (..., n): how many are smaller
    equal = (x[..., None, :] == x[..., :, None]).sum(-1).double()  # itself included
    return less + (equal + 1) / 2.0


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / ((ra * ra).sum(-1) * (rb * rb).sum(-1)).sqrt()


def _kendall(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double(), b.double()
    sa = torch.sign(a[..., :, None] - a[..., None, :])  # (..., n, n), each pair counted twice
    sb = torch.sign(b[..., :, None] - b[..., None, :])
    return (sa * sb).sum((-2, -1)) / ((sa * sa).sum((-2, -1)) * (sb * sb).sum((-2, -1))).sqrt()


def rank_agreement(a: torch.Tensor, b: torch.Tensor, method: str = "spearman", *,
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rank correlation of ``a`` and ``b`` along the last dim: ``(..., n), (..., n) -> (...)`` in float64.

    Args:
        a, b: importance scores of the same positions (broadcastable).
        method: ``"spearman"`` or ``"kendall"`` (tau-b).
        mask: optional boolean ``(..., n)``, True = include the position (e.g. leave out padding);
            each row is then ranked over its own included positions.
    """
    check_tensor(a, "a", min_dim=1, floating=False)
    check_tensor(b, "b", min_dim=1, floating=False)
    if method not in ("spearman", "kendall"):
        raise ValueError(f"method must be 'spearman' or 'kendall', got {method!r}")
    try:
        a, b = torch.broadcast_tensors(a, b)
    except RuntimeError:
        raise ValueError(f"a and b must broadcast: got {tuple(a.shape)} and {tuple(b.shape)}") from None
    corr = _spearman if method == "spearman" else _kendall
    if mask is None:
        return corr(a, b)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor (True = include), got {getattr(mask, 'dtype', type(mask))}")
    try:
        mask = torch.broadcast_to(mask, a.shape)
    except RuntimeError:
        raise ValueError(f"mask must broadcast to {tuple(a.shape)}, got {tuple(mask.shape)}") from None
    lead = a.shape[:-1]
    flat_a, flat_b, flat_m = a.reshape(-1, a.shape[-1]), b.reshape(-1, a.shape[-1]), mask.reshape(-1, a.shape[-1])
    out = torch.stack([corr(x[m], y[m]) for x, y, m in zip(flat_a, flat_b, flat_m)]) if flat_a.shape[0] else \
        torch.zeros(0, dtype=torch.float64)
    return out.view(lead)
