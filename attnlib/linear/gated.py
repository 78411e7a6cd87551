r"""Gated (decayed) linear attention, and the exponential moving average of Mega.

**Gated linear attention.** The state of causal linear attention only grows; a gate
:math:`\gamma_t \in (0, 1]` lets it forget:

.. math::
    S_t = \gamma_t S_{t-1} + \phi(k_t) v_t^\top,\qquad
    z_t = \gamma_t z_{t-1} + \phi(k_t),\qquad
    \operatorname{out}_t = \phi(q_t)^\top S_t \;\big(/ \max(\phi(q_t)^\top z_t, \varepsilon)\big),

so key :math:`j` reaches query :math:`t \ge j` with weight
:math:`\big(\prod_{i=j+1}^{t} \gamma_i\big)\, \phi(q_t)^\top \phi(k_j)`. ``decay`` broadcasts to
``(..., L)``: a per-step (data-dependent) gate, or one constant per head (shape ``(H, 1)``).
What we follow: the seed *ReGLA: Refining Gated Linear Attention* names feature maps,
normalisation and the saturation of the gate as the three components that matter; its exact
feature map and refining module need the paper body and are **not** reproduced here. The
recurrence above, with a scalar gate per step and head and the un-normalised read by default, is
the common form of the family (derived here, background). The computation is chunked: inside a
block of ``chunk_size`` steps the decays are a ``C x C`` matrix
:math:`D_{tj} = \exp(\Lambda_t - \Lambda_j)` (:math:`\Lambda` = cumulative log-gate), across
blocks the state carries, so memory stays ``O(L C)``.

**EMA** (a simplified version of the moving average in the seed *Mega: Moving Average
Equipped Gated Attention*: one damping factor per channel, no expansion or damping matrices):

.. math:: y_t = \alpha\, x_t + (1 - \alpha)\, y_{t-1},\quad y_{-1} = 0
          \quad\Longleftrightarrow\quad y_t = \sum_{j \le t} \alpha (1 - \alpha)^{t - j} x_j ,

a causal convolution with the kernel :math:`\alpha (1-\alpha)^t`, and the special case of a gated
linear recurrence with a constant gate :math:`1 - \alpha` and no query.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..validation import check_positive_int, check_qkv, check_tensor
from .attention import FeatureMap, _check_eps, _features, _finish, linear_attention

__all__ = ["gated_linear_attention", "ema", "LinearAttentionMap", "GatedLinearAttentionMap"]


def _log_decay(decay, log_decay, length, like):
    if (decay is None) == (log_decay is None):
        raise ValueError("give exactly one of decay (in (0, 1]) and log_decay (<= 0)")
    if decay is not None:
        d = torch.as_tensor(decay, dtype=like.dtype, device=like.device)
        if not d.is_floating_point() or not bool(((d > 0) & (d <= 1)).all()):
            raise ValueError(f"decay must lie in (0, 1] (a gate that keeps a fraction of the state), got values in "
                             f"[{d.min().item():.3g}, {d.max().item():.3g}]")
        lg = torch.log(d)
    else:
        lg = torch.as_tensor(log_decay, dtype=like.dtype, device=like.device)
        if not bool((lg <= 0).all()) or bool(torch.isnan(lg).any()):
            raise ValueError("log_decay must be <= 0 (decay = exp(log_decay) in (0, 1])")
    if lg.dim() == 0:
        lg = lg.expand(length)
    if lg.shape[-1] not in (1, length):
        raise ValueError(f"decay must broadcast to (..., L) with L={length}, got shape {tuple(lg.shape)}")
    return lg.expand(*lg.shape[:-1], length)


def gated_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay=None, *,
                           log_decay: Optional[torch.Tensor] = None, feature_map: FeatureMap = "identity",
                           normalize: bool = False, eps: float = 1e-6, chunk_size: int = 64) -> torch.Tensor:
    """Causal linear attention whose state decays by ``decay[..., t]`` before step ``t`` writes.

    Args:
        q, k: ``(..., L, d)``; v: ``(..., L, dv)``; one length (self-attention).
        decay: float or tensor broadcastable to ``(..., L)``, values in ``(0, 1]``; or give ``log_decay`` (<= 0).
        feature_map: as in :func:`attnlib.linear.linear_attention` (default identity: un-normalised read).
        normalize: divide by the decayed normaliser ``phi(q_t)^T z_t`` (needs ``phi >= 0``).
        chunk_size: steps per block.

    Returns:
        ``(..., L, dv)``. With ``decay=1`` it equals ``linear_attention(..., causal=True)``.
    """
    check_qkv(q, k, v)
    eps = _check_eps(eps)
    check_positive_int(chunk_size, "chunk_size")
    length = q.shape[-2]
    if k.shape[-2] != length:
        raise ValueError(f"gated linear attention needs Lq == Lk, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    lg = _log_decay(decay, log_decay, length, q)  # (..., L)
    fq, fk = _features(q, k, feature_map, normalize, 64, 0)
    batch = torch.broadcast_shapes(fq.shape[:-2], fk.shape[:-2], v.shape[:-2], lg.shape[:-1])
    fq, fk = fq.expand(*batch, *fq.shape[-2:]), fk.expand(*batch, *fk.shape[-2:])
    v, lg = v.expand(*batch, *v.shape[-2:]), lg.expand(*batch, length)
    s = torch.zeros(*batch, fk.shape[-1], v.shape[-1], dtype=v.dtype, device=v.device)  # (..., F, dv)
    z = torch.zeros(*batch, fk.shape[-1], dtype=v.dtype, device=v.device)  # (..., F)
    out = torch.zeros(*batch, length, v.shape[-1], dtype=v.dtype, device=v.device)
    for start in range(0, length, chunk_size):
        end = min(start + chunk_size, length)
        lam = lg[..., start:end].cumsum(-1)  # (..., C): log prod of the gates start..t
        c = end - start
        later = torch.ones(c, c, dtype=torch.bool, device=q.device).triu(1)  # j > t: not seen
        d = torch.exp((lam[..., :, None] - lam[..., None, :]).masked_fill(later, float("-inf")))  # (..., C, C)
        fq_c, fk_c, v_c = fq[..., start:end, :], fk[..., start:end, :], v[..., start:end, :]
        a = (fq_c @ fk_c.transpose(-2, -1)) * d  # (..., C, C)
        carry = torch.exp(lam)[..., None]  # (..., C, 1): the old state's decay at step t
        num = (fq_c * carry) @ s + a @ v_c
        den = (fq_c * carry * z[..., None, :]).sum(-1, keepdim=True) + a.sum(-1, keepdim=True)
        out[..., start:end, :] = _finish(num, den, normalize, eps)
        w = torch.exp(lam[..., -1:] - lam)[..., None]  # (..., C, 1): decay of key j until the block's end
        s = torch.exp(lam[..., -1])[..., None, None] * s + (fk_c * w).transpose(-2, -1) @ v_c
        z = torch.exp(lam[..., -1])[..., None] * z + (fk_c * w).sum(-2)
    return out


def ema(x: torch.Tensor, alpha) -> torch.Tensor:
    """Exponential moving average along the sequence: ``y_t = alpha x_t + (1 - alpha) y_{t-1}``, ``y_{-1} = 0``.

    Args:
        x: ``(..., L, d)``.
        alpha: float or tensor broadcastable to ``(d,)`` (one damping per channel, as in Mega), in ``(0, 1]``.

    Returns:
        ``(..., L, d)``.
    """
    check_tensor(x, "x", min_dim=2)
    a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    if a.dim() > 1 or (a.dim() == 1 and a.shape[0] not in (1, x.shape[-1])):
        raise ValueError(f"alpha must be a float or a ({x.shape[-1]},) tensor (one per channel), got {tuple(a.shape)}")
    if not bool(((a > 0) & (a <= 1)).all()):
        raise ValueError(f"alpha must lie in (0, 1], got values in [{a.min().item():.3g}, {a.max().item():.3g}]")
    y = torch.zeros_like(x[..., 0, :])
    outs = []
    for t in range(x.shape[-2]):
        y = a * x[..., t, :] + (1 - a) * y
        outs.append(y)
    return torch.stack(outs, -2) if outs else torch.zeros_like(x)


# ------------------------------------------------------ adapters for attnlib.models.TinyTransformer


class LinearAttentionMap:
    """``attention=`` map for :class:`attnlib.models.TinyTransformer`: causal :func:`linear_attention`.

    The model's causal mask is implied (``causal=True``), its score bias and normalizer do not apply
    (use a position scheme without score bias, e.g. ``"rope"`` or ``"none"``), and there are no weights
    to return (``None``): linear attention never forms them.
    """

    def __init__(self, feature_map: FeatureMap = "elu+1"):
        self.feature_map = feature_map

    def __call__(self, q, k, v, *, bias=None, mask=None, normalizer=None, scale=None):
        if bias is not None:
            raise ValueError("linear attention cannot add a score bias: use position='rope' or 'none'")
        return linear_attention(q, k, v, causal=True, feature_map=self.feature_map), None


class GatedLinearAttentionMap(nn.Module):
    """``attention=`` map with a learned, data-dependent gate per head: ``gamma_t = sigmoid(w_h . k_t + b_h)``.

    ``b`` starts at ``logit(0.9)`` (a memory of about ten steps). Passed as ``attention=`` it is
    registered by every layer, so all layers share its gate parameters (``n_heads * (head_dim + 1)``).
    Read: ``phi(q_t)^T S_t / max(phi(q_t)^T z_t, eps)`` with ``phi = elu+1`` (normalised).
    """

    def __init__(self, n_heads: int, head_dim: int, feature_map: FeatureMap = "elu+1", init_decay: float = 0.9):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n_heads, head_dim))
        self.b = nn.Parameter(torch.full((n_heads,), math.log(init_decay / (1 - init_decay))))
        self.feature_map = feature_map

    def forward(self, q, k, v, *, bias=None, mask=None, normalizer=None, scale=None):
        if bias is not None:
            raise ValueError("gated linear attention cannot add a score bias: use position='rope' or 'none'")
        logits = (k * self.w[:, None, :]).sum(-1) + self.b[:, None]  # (B, H, L)
        return gated_linear_attention(q, k, v, log_decay=F.logsigmoid(logits), feature_map=self.feature_map,
                                      normalize=True), None
