r"""Attention variants aimed at length generalization (Lab 05).

Two ideas, each implemented as what its seed abstract states, with the details
that the abstract leaves open filled in by us (and said so):

**Threshold relative attention** (seed *TRA: Better Length Generalisation with
Threshold Relative Attention*). The abstract names two failures (attention cannot
fully remove irrelevant keys; learned positional biases can up-weight irrelevant
keys at unseen distances) and two fixes: *selective sparsity*, "completely removing
irrelevant keys from the attention softmax", and *contextualised relative distance*,
"distance is only considered as between the query and the keys that matter". Ours:

.. math::
    \kappa_{ij} = [\, j \le i \,]\,[\, s_{ij} > \tau \,],\qquad
    \delta_{ij} = \sum_{t=j+1}^{i} \kappa_{it},\qquad
    \alpha_{ij} = \operatorname{softmax}_{j:\,\kappa_{ij}}\big(s_{ij} - m_h\,\delta_{ij}\big),

with :math:`s = q^\top k/\sqrt d`, a fixed threshold :math:`\tau` and ALiBi's slopes
:math:`m_h` as the distance penalty. The paper's exact threshold and distance
function are in its body, which we have not reproduced. With :math:`\tau = -\infty`
every causal key is kept, :math:`\delta_{ij} = i - j`, and this is ALiBi attention.

**Monotonic location attention** (seeds *Location-Relative Attention Mechanisms For
Robust Long-Form Speech Synthesis*, *Monotonic Location Attention for Length
Generalization*). The first abstract addresses alignment failures with
"location-relative attention mechanisms that do away with content-based
query/key comparisons", including GMM-based ones (Graves, 2013, background). Ours
is a single Gaussian whose mean only moves forward:

.. math::
    \mu_i = \sum_{t \le i} \operatorname{softplus}(w_\Delta^\top k_t + b_\Delta) - 1,\quad
    \sigma_i = \operatorname{softplus}(w_\sigma^\top q_i + b_\sigma) + \sigma_{\min},\quad
    \alpha_{ij} \propto \exp\!\Big(-\frac{(j - \mu_i)^2}{2\sigma_i^2}\Big),\ j \le i.

The step sizes come from the tokens (here: from their keys), the weights from
positions only. The second seed's interpolation of forward and reversed encodings
and its new location-attention variants are seq2seq mechanisms we do not build.

Shapes follow attnlib: ``(..., L, d)``, heads as a leading batch dim ``(B, H, L, d)``.
Both attention modules have the signature that :class:`attnlib.models.TinyTransformer`
accepts as ``attention=``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .core import masked_softmax
from .masks import causal_mask
from .position import alibi_slopes
from .validation import check_positive_int, check_qkv, check_tensor, resolve_scale

__all__ = [
    "contextual_distance",
    "threshold_relative_attention",
    "location_weights",
    "monotonic_means",
    "TRAAttention",
    "MonotonicLocationAttention",
]


def contextual_distance(keep: torch.Tensor) -> torch.Tensor:
    r"""``(..., L, L)`` bool -> :math:`\delta_{ij} = \sum_{t=j+1}^{i} \kappa_{it}` (float), the number of kept
    keys strictly after ``j`` up to the query. Entries above the diagonal are 0 when ``keep`` is causal."""
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or keep.dim() < 2:
        raise TypeError(f"keep must be a boolean tensor of shape (..., L, L), got {keep!r:.60}")
    k = keep.to(torch.float32)
    suffix = k.flip(-1).cumsum(-1).flip(-1)  # sum_{t >= j} keep[i, t]
    return suffix - k  # sum_{t > j}


def threshold_relative_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, tau: float,
                                 slopes: torch.Tensor, scale: Optional[float] = None,
                                 return_weights: bool = False):
    """Causal attention over the keys with score ``> tau``, penalised by ``slope * contextual distance``.

    Args:
        q, k, v: ``(..., H, L, d)``, ``(..., H, L, d)``, ``(..., H, L, dv)`` (self-attention, ``Lq == Lk``).
        tau: the threshold on the scaled score; ``float('-inf')`` keeps every causal key.
        slopes: ``(H,)`` distance penalty per head (e.g. :func:`attnlib.position.alibi_slopes`).
        scale: score scale, default ``1/sqrt(d)``.
    Returns:
        ``out`` ``(..., H, L, dv)`` or ``(out, weights)``; a query with no kept key outputs zeros.
    """
    check_qkv(q, k, v)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"threshold_relative_attention is causal self-attention: q {tuple(q.shape)}, k {tuple(k.shape)}")
    check_tensor(slopes, "slopes", min_dim=1)
    if slopes.dim() != 1 or q.dim() < 3 or slopes.shape[0] not in (1, q.shape[-3]):
        raise ValueError(f"slopes must have shape (H,) matching q's head dim -3, got {tuple(slopes.shape)} "
                         f"for q {tuple(q.shape)}")
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or math.isnan(tau):
        raise TypeError(f"tau must be a float (use float('-inf') to keep every key), got {tau!r}")
    scale = resolve_scale(scale, q.shape[-1])
    length = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., H, L, L)
    keep = causal_mask(length, length, device=q.device) & (scores > tau)
    dist = contextual_distance(keep).to(scores.dtype)
    logits = scores - slopes.to(scores.dtype)[:, None, None] * dist
    weights = masked_softmax(logits, keep)
    out = weights @ v
    return (out, weights) if return_weights else out


class TRAAttention(nn.Module):
    """:func:`threshold_relative_attention` as a :class:`~attnlib.models.TinyTransformer` attention map.

    It brings its own position information (the contextual distance), so use it with
    ``position="none"``; a position scheme's ``bias`` is ignored, and so is ``normalizer``.
    """

    def __init__(self, n_heads: int, tau: float = 0.0):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(check_positive_int(n_heads, "n_heads")))
        self.tau = tau

    def forward(self, q, k, v, *, bias=None, mask=None, normalizer=None, scale=None):
        return threshold_relative_attention(q, k, v, tau=self.tau, slopes=self.slopes, scale=scale,
                                            return_weights=True)


def monotonic_means(steps: torch.Tensor) -> torch.Tensor:
    """``(..., L)`` non-negative steps -> ``(..., L)`` means ``mu_i = sum_{t<=i} steps_t - 1`` (non-decreasing)."""
    check_tensor(steps, "steps", min_dim=1)
    return steps.cumsum(-1) - 1.0


def location_weights(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r"""Causal Gaussian location weights ``(..., L, L)``: :math:`\alpha_{ij} \propto e^{-(j-\mu_i)^2 / 2\sigma_i^2}`, ``j <= i``.

    ``mu`` and ``sigma`` are ``(..., L)``; ``sigma > 0``. The weights depend on positions only.
    """
    check_tensor(mu, "mu", min_dim=1)
    check_tensor(sigma, "sigma", min_dim=1)
    if mu.shape != sigma.shape:
        raise ValueError(f"mu and sigma must have one shape, got {tuple(mu.shape)} and {tuple(sigma.shape)}")
    length = mu.shape[-1]
    j = torch.arange(length, device=mu.device, dtype=mu.dtype)  # (L,)
    logits = -((j - mu[..., None]) ** 2) / (2 * sigma[..., None] ** 2)  # (..., L, L)
    return masked_softmax(logits, causal_mask(length, length, device=mu.device))


class MonotonicLocationAttention(nn.Module):
    """Per-head Gaussian location attention with a monotonic mean, as a TinyTransformer attention map.

    ``steps = softplus(k . w_step + b_step)`` (initialised near 1, so ``mu_i`` starts near ``i``),
    ``sigma = softplus(q . w_sigma + b_sigma) + sigma_min``; see the module docstring. There is no
    query-key comparison; ``bias`` and ``normalizer`` are ignored.
    """

    def __init__(self, head_dim: int, sigma_min: float = 0.1):
        super().__init__()
        check_positive_int(head_dim, "head_dim")
        self.w_step = nn.Parameter(torch.zeros(head_dim))
        self.b_step = nn.Parameter(torch.tensor(math.log(math.e - 1)))  # softplus = 1
        self.w_sigma = nn.Parameter(torch.zeros(head_dim))
        self.b_sigma = nn.Parameter(torch.tensor(0.5))
        self.sigma_min = sigma_min

    def forward(self, q, k, v, *, bias=None, mask=None, normalizer=None, scale=None):
        steps = F.softplus(k @ self.w_step + self.b_step)  # (B, H, L) >= 0
        sigma = F.softplus(q @ self.w_sigma + self.b_sigma) + self.sigma_min  # (B, H, L)
        weights = location_weights(monotonic_means(steps), sigma)  # (B, H, L, L)
        return weights @ v, weights
