r"""Feature maps :math:`\phi` for kernelized (linear) attention.

Linear attention replaces the softmax kernel :math:`\exp(q \cdot k)` by a kernel
that factorises, :math:`\kappa(q, k) = \phi(q)^\top \phi(k)`, so that the sum over
keys can be taken once, before the queries arrive (see :mod:`attnlib.linear.attention`).

* ``"identity"``: :math:`\phi(x) = x`, the plain Hebbian memory of chapter 03 (it can be
  negative, so it only serves the un-normalised form, ``normalize=False``);
* ``"relu"``: :math:`\phi(x) = \max(x, 0)`;
* ``"elu+1"``: :math:`\phi(x) = \operatorname{elu}(x) + 1`, positive everywhere
  (Katharopoulos et al., 2020, *background, not a seed*);
* ``"softmax_kernel"``: positive random features (Choromanski et al., 2021, Performer,
  *background, not a seed*)

  .. math::
      \phi(x) = \tfrac{1}{\sqrt m}\exp\!\big(\Omega x - \tfrac12\|x\|^2\big),\quad
      \Omega \in \mathbb R^{m \times d},\ \Omega_{ij} \sim \mathcal N(0, 1),

  an unbiased estimate: :math:`\mathbb E_\Omega[\phi(x)^\top\phi(y)] = \exp(x \cdot y)`, whose
  error falls like :math:`1/\sqrt m`.

Identity and ReLU are *positively homogeneous of degree 1*, :math:`\phi(c x) = c\,\phi(x)` for
:math:`c > 0`, so the normalised weights :math:`\phi(q)^\top\phi(k_j) / \sum_j \phi(q)^\top\phi(k_j)`
do not change when a query is scaled: the "magnitude neglect" of the seed *Rectifying Magnitude
Neglect in Linear Attention*. ``elu+1`` is not homogeneous.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch
from torch.nn import functional as F

from ..validation import check_positive_int, check_tensor

__all__ = ["FEATURE_MAPS", "identity", "relu", "elu_plus_one", "softmax_kernel_features", "resolve_feature_map"]

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    """:math:`\\phi(x) = x`, ``(..., d) -> (..., d)``."""
    return x


def relu(x: torch.Tensor) -> torch.Tensor:
    """:math:`\\phi(x) = \\max(x, 0)`, ``(..., d) -> (..., d)``."""
    return torch.relu(x)


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """:math:`\\phi(x) = \\operatorname{elu}(x) + 1 > 0`, ``(..., d) -> (..., d)``."""
    return F.elu(x) + 1


def softmax_kernel_features(d: int, n_features: int = 64, *, seed: int = 0, dtype=torch.float32,
                            device=None) -> FeatureMap:
    """Positive random features ``phi: (..., d) -> (..., n_features)`` with ``E[phi(x) . phi(y)] = exp(x . y)``.

    ``Omega`` (``n_features`` x ``d``, standard normal) is drawn once from ``seed``; the returned
    callable keeps it as ``phi.omega``.
    """
    check_positive_int(d, "d")
    check_positive_int(n_features, "n_features")
    g = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(n_features, d, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)  # (m, d)

    def phi(x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        if x.shape[-1] != d:
            raise ValueError(f"x must have last dimension d={d} (the features were drawn for it), got {tuple(x.shape)}")
        w = omega.to(dtype=x.dtype, device=x.device)
        proj = x @ w.T - 0.5 * (x * x).sum(-1, keepdim=True)  # (..., m)
        return torch.exp(proj) / math.sqrt(n_features)

    phi.omega = omega
    return phi


FEATURE_MAPS = {"identity": identity, "relu": relu, "elu+1": elu_plus_one}


def resolve_feature_map(feature_map: Union[str, FeatureMap], d: int, *, n_features: int = 64, seed: int = 0,
                        dtype=torch.float32, device=None) -> FeatureMap:
    """The callable behind a feature-map name (``identity``, ``relu``, ``elu+1``, ``softmax_kernel``) or callable.

    ``"softmax_kernel"`` scales its input by ``d ** -0.25`` first, so that
    ``phi(q) . phi(k)`` estimates ``exp(q . k / sqrt(d))``, the kernel of scaled dot-product attention.
    """
    if callable(feature_map):
        return feature_map
    if feature_map == "softmax_kernel":
        rf = softmax_kernel_features(d, n_features, seed=seed, dtype=dtype, device=device)
        return lambda x: rf(x * d ** -0.25)
    if isinstance(feature_map, str) and feature_map in FEATURE_MAPS:
        return FEATURE_MAPS[feature_map]
    raise ValueError(f"feature_map must be a callable or one of {sorted(FEATURE_MAPS) + ['softmax_kernel']}, "
                     f"got {feature_map!r}")
