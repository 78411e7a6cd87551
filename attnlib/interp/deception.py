r"""The impermissible-token penalty that trains attention to look away (deceptive attention).

Seed: *Learning to Deceive with Attention-Based Explanations*: adding this penalty to
the task loss "diminishes the total weight assigned to designated impermissible
tokens, even when the models can be shown to nevertheless rely on these features".

For attention weights :math:`\alpha` over keys (rows sum to 1) and a boolean mask
:math:`m` of the impermissible keys, the mass on them is :math:`\mu = \sum_j \alpha_j m_j`
and the penalty, averaged over every row (queries, heads, batch), is

.. math::
    \mathcal R = -\operatorname{mean}\, \log(1 - \mu) \;\ge 0,

which is zero exactly when every row puts zero mass on the impermissible tokens and
grows without bound as :math:`\mu \to 1` (clipped at :math:`\mu = 1 - 10^{-6}`, where it
is about 13.8). The training loss is :math:`\mathcal L_{\text{task}} + \lambda \mathcal R`.
"""

from __future__ import annotations

import torch

from ..validation import check_tensor

__all__ = ["impermissible_mass", "impermissible_penalty"]

_EPS = 1e-6


def impermissible_mass(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention mass on the impermissible keys, ``(..., Lk) -> (...)``; ``mask`` True = impermissible."""
    check_tensor(weights, "weights", min_dim=1)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor (True = impermissible), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    try:
        shape = torch.broadcast_shapes(weights.shape, mask.shape)
    except RuntimeError:
        raise ValueError(f"mask must broadcast against weights {tuple(weights.shape)}, "
                         f"got {tuple(mask.shape)}") from None
    if shape != weights.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must broadcast to weights {tuple(weights.shape)}, not beyond them")
    return (weights * mask).sum(-1)


def impermissible_penalty(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``-mean(log(1 - mass))`` over all rows of ``weights`` (a scalar, differentiable)."""
    mass = impermissible_mass(weights, mask)
    return -torch.log1p(-mass.clamp(max=1.0 - _EPS)).mean()
