r"""Position encodings: how attention, which is blind to order, learns where tokens are.

Attention is permutation-equivariant: without position information, shuffling the
keys shuffles nothing in a query's output. Each scheme below breaks that symmetry
in a different place.

=====================  =========================================================  ==========================
scheme                 where position enters                                      source
=====================  =========================================================  ==========================
sinusoidal             added to the input: ``PE[p, 2i] = sin(p / b^{2i/d})``,     Vaswani et al. 2017
                       ``PE[p, 2i+1] = cos(p / b^{2i/d})``                        (background, not a seed)
learned absolute       added to the input: a trained table ``E[p]``               background, not a seed
Shaw relative          in scores and values: ``e_ij = q_i.(k_j + a^K_{ij})``,     seed *Self-Attention with
                       ``z_i = sum_j a_ij (v_j + a^V_{ij})``, with                Relative Position
                       ``a_{ij} = w_{clip(j - i, K)}``                            Representations*
rotary (RoPE)          rotates q and k: ``<R_m q, R_n k> = <q, R_{n-m} k>``       Su et al. (background,
                                                                                  not a seed)
ALiBi                  a fixed bias on the scores: ``-slope_h * (i - j)``         Press et al. (background,
                                                                                  not a seed)
CoPE                   positions counted by gates the model computes:             seed *Contextual Position
                       ``p_ij = sum_{t=j}^{i} g_it``                              Encoding*
=====================  =========================================================  ==========================

Conventions (attnlib contract): tensors are ``(..., L, d)``; heads are a leading
batch dimension ``(B, H, L, d)``. When ``Lq != Lk``, query ``i`` sits at key
position ``i + Lk - Lq`` (bottom-right alignment, as in :mod:`attnlib.masks`).

The second half of the module wraps each scheme as a :class:`PositionScheme`,
the pluggable object that :mod:`attnlib.models` uses.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .core import combine_masks, masked_softmax
from .masks import causal_mask
from .validation import check_mask, check_positive_int, check_qkv, check_tensor, resolve_scale

__all__ = [
    "sinusoidal_encoding",
    "rotate_half",
    "rope_frequencies",
    "apply_rope",
    "alibi_slopes",
    "alibi_bias",
    "relative_positions",
    "shaw_attention",
    "cope_positions",
    "cope_logits",
    "cope_attention",
    "PositionScheme",
    "NoPosition",
    "SinusoidalPosition",
    "LearnedAbsolutePosition",
    "ShawRelativePosition",
    "RotaryPosition",
    "ALiBiPosition",
    "CoPEPosition",
    "POSITION_SCHEMES",
    "make_position",
]


def _check_base(base) -> float:
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        raise TypeError(f"base must be a float, got {type(base).__name__}")
    if not math.isfinite(base) or base <= 1:
        raise ValueError(f"base must be a finite number > 1, got {base}")
    return float(base)


# --------------------------------------------------------------------------- absolute


def sinusoidal_encoding(length: int, d_model: int, base: float = 10000.0, *, device=None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""The ``(length, d_model)`` sinusoidal table of Vaswani et al. (2017; background, not a seed).

    :math:`PE[p, 2i] = \sin(p\,\omega_i)`, :math:`PE[p, 2i+1] = \cos(p\,\omega_i)`,
    :math:`\omega_i = b^{-2i/d}`. An odd ``d_model`` drops the last cosine column.
    """
    check_positive_int(length, "length")
    check_positive_int(d_model, "d_model")
    base = _check_base(base)
    half = (d_model + 1) // 2
    omega = base ** (-torch.arange(half, dtype=torch.float64, device=device) * 2 / d_model)  # (half,)
    angle = torch.arange(length, dtype=torch.float64, device=device)[:, None] * omega  # (L, half)
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(length, 2 * half)  # interleave sin, cos
    return pe[:, :d_model].to(dtype)


# --------------------------------------------------------------------------- rotary


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dim, split in two halves (the "half-split" convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rope_frequencies(head_dim: int, base: float = 10000.0, *, device=None) -> torch.Tensor:
    r"""The ``head_dim // 2`` rotation frequencies :math:`\theta_i = b^{-2i/d}`, fastest first."""
    check_positive_int(head_dim, "head_dim")
    base = _check_base(base)
    return base ** (-torch.arange(head_dim // 2, dtype=torch.float64, device=device) * 2 / head_dim)


def apply_rope(x: torch.Tensor, positions, base: float = 10000.0) -> torch.Tensor:
    r"""Rotary position embedding (RoPE; Su et al., RoFormer; background, not a seed).

    Feature pair :math:`(x_i, x_{i + d/2})` of the token at position :math:`m` is
    rotated by the angle :math:`m\,\theta_i`, :math:`\theta_i = b^{-2i/d}`:

    .. math:: \operatorname{rope}(x, m) = x \cos(m\theta) + \operatorname{rotate\_half}(x) \sin(m\theta).

    Rotations compose, so :math:`\langle \operatorname{rope}(q, m), \operatorname{rope}(k, n)\rangle`
    depends on :math:`m - n` only, and norms are preserved. Seeds that analyse it:
    *On the token distance modeling ability of higher RoPE attention dimension*,
    *Massive Values in Self-Attention Modules are the Key to Contextual Knowledge Understanding*.

    Args:
        x: ``(..., L, d)`` with ``d`` even.
        positions: ``(L,)`` (or broadcastable to ``(..., L)``) integer or float positions,
            or an ``int`` offset meaning ``offset, offset + 1, ...``.
        base: the frequency base ``b`` (> 1).

    Returns:
        The rotated ``x``, same shape and dtype (computed in float32 for half precision).
    """
    check_tensor(x, "x", min_dim=2)
    d, length = x.shape[-1], x.shape[-2]
    if d % 2:
        raise ValueError(f"apply_rope needs an even last dimension, got x of shape {tuple(x.shape)}")
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = torch.arange(positions, positions + length, device=x.device)
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"positions must be a torch.Tensor or an int offset, got {type(positions).__name__}")
    if positions.dim() == 0 or positions.shape[-1] not in (1, length):
        raise ValueError(f"positions must have shape (L,)=({length},) or broadcast to (..., L), "
                         f"got {tuple(positions.shape)} for x of shape {tuple(x.shape)}")
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    theta = rope_frequencies(d, base, device=x.device).to(ct)  # (d/2,)
    angle = positions.to(ct)[..., None] * theta  # (..., L, d/2)
    cos = torch.cat([angle.cos(), angle.cos()], dim=-1)  # (..., L, d)
    sin = torch.cat([angle.sin(), angle.sin()], dim=-1)
    xc = x.to(ct)
    return (xc * cos + rotate_half(xc) * sin).to(x.dtype)


# --------------------------------------------------------------------------- ALiBi


def alibi_slopes(n_heads: int) -> torch.Tensor:
    r"""The ALiBi head slopes (Press, Smith and Lewis, *Train Short, Test Long*; background, not a seed).

    For ``n`` a power of two the slopes are the geometric sequence
    :math:`m_h = 2^{-8h/n}`, ``h = 1..n`` (``1/2, 1/4, ..., 1/256`` for 8 heads).
    Otherwise, with :math:`p = 2^{\lfloor \log_2 n \rfloor}`, take the ``p`` slopes for
    ``p`` heads and add the first ``n - p`` of every other slope of the ``2p``-head
    sequence (the rule in the paper's reference implementation), so the new slopes
    interleave the old ones. Returns a float32 tensor of shape ``(n_heads,)``.
    """
    check_positive_int(n_heads, "n_heads")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    p = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = power_of_two(p) + power_of_two(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(n_heads: int, lq: int, lk: int, *, device=None) -> torch.Tensor:
    r"""ALiBi's additive score bias, shape ``(n_heads, lq, lk)``: ``bias[h, i, j] = -slope_h * (i' - j)``.

    ``i' = i + lk - lq`` is the query's position among the keys (bottom-right
    alignment). The bias is meant for causal attention (``j <= i'``), where it is
    ``<= 0`` and grows linearly with distance; for ``j > i'`` the same formula gives
    a positive value, so mask those keys.
    """
    check_positive_int(lq, "lq")
    check_positive_int(lk, "lk")
    slopes = alibi_slopes(n_heads).to(device)  # (H,)
    i = torch.arange(lq, device=device)[:, None] + (lk - lq)  # (lq, 1)
    j = torch.arange(lk, device=device)[None, :]  # (1, lk)
    return -slopes[:, None, None] * (i - j).to(slopes.dtype)  # (H, lq, lk)


# --------------------------------------------------------------------------- Shaw relative


def relative_positions(lq: int, lk: int, max_distance: int, *, device=None) -> torch.Tensor:
    """Clipped relative positions as table indices, ``(lq, lk)`` long in ``[0, 2K]``.

    ``idx[i, j] = clip(j - i', -K, K) + K`` with ``i' = i + lk - lq`` and ``K = max_distance``.
    """
    check_positive_int(lq, "lq")
    check_positive_int(lk, "lk")
    check_positive_int(max_distance, "max_distance")
    i = torch.arange(lq, device=device)[:, None] + (lk - lq)
    j = torch.arange(lk, device=device)[None, :]
    return (j - i).clamp(-max_distance, max_distance) + max_distance


def shaw_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_k: torch.Tensor,
                   rel_v: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None, *,
                   causal: bool = False, scale: Optional[float] = None, return_weights: bool = False):
    r"""Relative-position self-attention of Shaw, Uszkoreit and Vaswani (seed *Self-Attention with
    Relative Position Representations*), in its efficient form.

    .. math::
        e_{ij} = s\, q_i^\top (k_j + a^K_{ij}), \quad \alpha = \operatorname{softmax}_j(e),
        \quad z_i = \sum_j \alpha_{ij} (v_j + a^V_{ij}), \quad a^X_{ij} = w^X_{\operatorname{clip}(j-i, K)}.

    The naive form builds an ``(Lq, Lk, d)`` tensor of relation vectors. Because
    ``a_{ij}`` takes only ``2K + 1`` values, we instead compute ``q @ w^K.T`` once,
    ``(..., Lq, 2K+1)``, and *gather* the entry each pair needs; for the values we
    *scatter-add* the weights into ``2K + 1`` distance buckets and multiply by ``w^V``.
    Extra memory is ``O(Lq (2K+1))`` instead of ``O(Lq Lk d)``.

    Args:
        q, k, v: ``(..., Lq, d)``, ``(..., Lk, d)``, ``(..., Lk, dv)``.
        rel_k: ``(2K + 1, d)`` key relation table ``w^K_{-K..K}``.
        rel_v: optional ``(2K + 1, dv)`` value relation table.
        mask, causal, scale, return_weights: as in :func:`attnlib.core.scaled_dot_product_attention`.
    """
    check_qkv(q, k, v)
    check_tensor(rel_k, "rel_k", min_dim=2)
    if rel_k.dim() != 2 or rel_k.shape[0] % 2 == 0 or rel_k.shape[1] != q.shape[-1]:
        raise ValueError(f"rel_k must have shape (2K+1, d) with d={q.shape[-1]}, got {tuple(rel_k.shape)}")
    big_k = (rel_k.shape[0] - 1) // 2
    if rel_v is not None:
        check_tensor(rel_v, "rel_v", min_dim=2)
        if rel_v.shape != (rel_k.shape[0], v.shape[-1]):
            raise ValueError(f"rel_v must have shape (2K+1, dv) = ({rel_k.shape[0]}, {v.shape[-1]}), "
                             f"got {tuple(rel_v.shape)}")
    lq, lk = q.shape[-2], k.shape[-2]
    scale = resolve_scale(scale, q.shape[-1])
    mask = combine_masks(mask, causal, lq, lk, q.device)

    scores = q @ k.transpose(-2, -1)  # (..., Lq, Lk) content term
    if big_k == 0:
        idx = torch.zeros(lq, lk, dtype=torch.long, device=q.device)
    else:
        idx = relative_positions(lq, lk, big_k, device=q.device)  # (Lq, Lk) in [0, 2K]
    rel_logits = q @ rel_k.transpose(0, 1)  # (..., Lq, 2K+1)
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    scores = scores + rel_logits.expand(*batch, lq, -1).gather(-1, idx.expand(*batch, lq, lk))
    weights = masked_softmax(scores * scale, mask)  # (..., Lq, Lk)
    out = weights @ v  # (..., Lq, dv)
    if rel_v is not None:
        buckets = torch.zeros(*weights.shape[:-1], rel_v.shape[0], dtype=weights.dtype, device=weights.device)
        buckets = buckets.scatter_add(-1, idx.expand_as(weights), weights)  # (..., Lq, 2K+1)
        out = out + buckets @ rel_v
    return (out, weights) if return_weights else out


# --------------------------------------------------------------------------- CoPE


def cope_positions(gates: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""Contextual positions :math:`p_{ij} = \sum_{t=j}^{i} g_{it}` (seed *Contextual Position Encoding*).

    ``gates`` ``(..., L, L)`` hold :math:`g_{it} \in [0, 1]`, "should key ``t`` count
    as a step, seen from query ``i``". Keys the ``mask`` forbids (default: causal,
    ``t > i``) count 0. With every gate 1, :math:`p_{ij} = i - j + 1`: ordinary
    relative positions (counted inclusively). The abstract states the idea (position
    is incremented only on tokens the model selects); the sum from ``j`` to ``i`` is
    our reading of the paper's body.
    """
    check_tensor(gates, "gates", min_dim=2)
    lq, lk = gates.shape[-2], gates.shape[-1]
    if mask is None:
        mask = causal_mask(lq, lk, device=gates.device)
    else:
        check_mask(mask, lq, lk)
    g = gates * mask
    return g.flip(-1).cumsum(-1).flip(-1)  # suffix sums over keys t >= j


def cope_logits(q: torch.Tensor, pos_emb: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    r"""The CoPE score term :math:`q_i^\top e[p_{ij}]` for fractional positions, ``(..., Lq, Lk)``.

    ``pos_emb`` ``(P, d)`` holds embeddings of the integer positions ``0..P-1``;
    a fractional ``p`` interpolates linearly between ``e[floor p]`` and ``e[ceil p]``
    (positions are clipped to ``P - 1``). As in the paper, we interpolate the
    *logits* :math:`q^\top e[\cdot]`, which is the same thing and needs only ``(..., Lq, P)``.
    """
    check_tensor(q, "q", min_dim=2)
    check_tensor(pos_emb, "pos_emb", min_dim=2)
    if pos_emb.dim() != 2 or pos_emb.shape[1] != q.shape[-1]:
        raise ValueError(f"pos_emb must have shape (P, d) with d={q.shape[-1]}, got {tuple(pos_emb.shape)}")
    pos = positions.clamp(0, pos_emb.shape[0] - 1)
    lo, hi = pos.floor().long(), pos.ceil().long()
    w = pos - lo.to(pos.dtype)  # (..., Lq, Lk) fraction towards the ceiling
    logits_int = q @ pos_emb.transpose(0, 1)  # (..., Lq, P)
    batch = torch.broadcast_shapes(logits_int.shape[:-1], pos.shape[:-1])
    logits_int = logits_int.expand(*batch, -1)
    lo, hi, w = lo.expand(*batch, -1), hi.expand(*batch, -1), w.expand(*batch, -1)
    return logits_int.gather(-1, lo) * (1 - w) + logits_int.gather(-1, hi) * w


def cope_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos_emb: torch.Tensor, *,
                   scale: Optional[float] = None, return_weights: bool = False):
    r"""Causal self-attention with contextual positions (seed *Contextual Position Encoding*).

    ``g_ij = sigmoid(s q_i.k_j)`` decides which keys count, :func:`cope_positions`
    sums them, and the score becomes ``s q_i.k_j + q_i.e[p_ij]`` (:func:`cope_logits`).
    The sigmoid gate and the unscaled position term follow our reading of the
    paper's body (the abstract only says positions increment on tokens the model
    selects). ``q, k, v`` are ``(..., L, d)`` with ``Lq == Lk``.
    """
    check_qkv(q, k, v)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"cope_attention is self-attention: q and k need one length, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}")
    scale = resolve_scale(scale, q.shape[-1])
    mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., L, L)
    pos = cope_positions(torch.sigmoid(scores), mask)
    weights = masked_softmax(scores + cope_logits(q, pos_emb, pos), mask)
    out = weights @ v
    return (out, weights) if return_weights else out


# --------------------------------------------------------------------------- pluggable schemes


class PositionScheme(nn.Module):
    """How a position encoding plugs into a Transformer (:mod:`attnlib.models`).

    A scheme may act at up to four places; the defaults do nothing (no position, "NoPE"):

    * :meth:`embed` ``(B, L, d_model) -> (B, L, d_model)``: absolute encodings add here;
    * :meth:`rotate` ``q, k (B, H, L, dh)``: rotary encodings rotate here;
    * :meth:`score_bias` ``(q, k, scores) -> (B or 1, H or 1, L, L)`` or ``None``: added to the
      scaled scores (``scores`` arrive scaled and causally masked with ``-inf``);
    * :meth:`value_term` ``(weights (B, H, L, L)) -> (B, H, L, dh)`` or ``None``: added to the output.
    """

    name = "none"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor):
        return q, k

    def score_bias(self, q: torch.Tensor, k: torch.Tensor, scores: torch.Tensor) -> Optional[torch.Tensor]:
        return None

    def value_term(self, weights: torch.Tensor) -> Optional[torch.Tensor]:
        return None


class NoPosition(PositionScheme):
    """No position information at all (NoPE); a causal mask still breaks the symmetry a little."""


class SinusoidalPosition(PositionScheme):
    """Adds :func:`sinusoidal_encoding` to the token embeddings (any length works)."""

    name = "sinusoidal"

    def __init__(self, d_model: int, base: float = 10000.0):
        super().__init__()
        self.d_model, self.base = check_positive_int(d_model, "d_model"), _check_base(base)

    def embed(self, x):
        return x + sinusoidal_encoding(x.shape[-2], self.d_model, self.base, device=x.device, dtype=x.dtype)


class LearnedAbsolutePosition(PositionScheme):
    """Adds a trained table ``E[p]`` of ``max_len`` rows; positions never seen in training stay at init."""

    name = "learned"

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len = check_positive_int(max_len, "max_len")
        self.table = nn.Parameter(torch.randn(max_len, check_positive_int(d_model, "d_model")) * 0.02)

    def embed(self, x):
        if x.shape[-2] > self.max_len:
            raise ValueError(f"sequence length {x.shape[-2]} exceeds the learned table's max_len={self.max_len}")
        return x + self.table[: x.shape[-2]]


class ShawRelativePosition(PositionScheme):
    """Shaw et al.'s relation tables ``w^K, w^V`` of ``2K+1`` rows, shared by all heads (as in the paper)."""

    name = "shaw"

    def __init__(self, head_dim: int, max_distance: int = 16):
        super().__init__()
        self.max_distance = check_positive_int(max_distance, "max_distance")
        n = 2 * max_distance + 1
        self.rel_k = nn.Parameter(torch.randn(n, check_positive_int(head_dim, "head_dim")) * 0.02)
        self.rel_v = nn.Parameter(torch.randn(n, head_dim) * 0.02)

    def _index(self, lq, lk, device):
        return relative_positions(lq, lk, self.max_distance, device=device)  # (Lq, Lk)

    def score_bias(self, q, k, scores):
        idx = self._index(q.shape[-2], k.shape[-2], q.device)
        rel = q @ self.rel_k.transpose(0, 1)  # (B, H, Lq, 2K+1)
        return rel.gather(-1, idx.expand(*rel.shape[:-1], -1)) / math.sqrt(q.shape[-1])

    def value_term(self, weights):
        idx = self._index(weights.shape[-2], weights.shape[-1], weights.device).expand_as(weights)
        buckets = torch.zeros(*weights.shape[:-1], self.rel_v.shape[0], dtype=weights.dtype, device=weights.device)
        return buckets.scatter_add(-1, idx, weights) @ self.rel_v  # (B, H, Lq, dh)


class RotaryPosition(PositionScheme):
    """Rotates queries and keys with :func:`apply_rope` (positions ``0..L-1``)."""

    name = "rope"

    def __init__(self, base: float = 10000.0):
        super().__init__()
        self.base = _check_base(base)

    def rotate(self, q, k):
        lq, lk = q.shape[-2], k.shape[-2]
        return apply_rope(q, lk - lq, self.base), apply_rope(k, 0, self.base)


class ALiBiPosition(PositionScheme):
    """Adds :func:`alibi_bias` (fixed, not trained) to each head's scores."""

    name = "alibi"

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = check_positive_int(n_heads, "n_heads")

    def score_bias(self, q, k, scores):
        return alibi_bias(self.n_heads, q.shape[-2], k.shape[-2], device=q.device).to(q.dtype)


class CoPEPosition(PositionScheme):
    """Contextual positions: gates ``sigmoid(scores)``, :func:`cope_positions`, :func:`cope_logits`.

    ``n_positions`` (``P``) bounds the contextual position; larger counts are clipped to ``P - 1``.
    """

    name = "cope"

    def __init__(self, head_dim: int, n_positions: int = 16):
        super().__init__()
        self.pos_emb = nn.Parameter(torch.randn(check_positive_int(n_positions, "n_positions"),
                                                check_positive_int(head_dim, "head_dim")) * 0.02)

    def score_bias(self, q, k, scores):
        lq, lk = scores.shape[-2], scores.shape[-1]
        pos = cope_positions(torch.sigmoid(scores), causal_mask(lq, lk, device=scores.device))
        return cope_logits(q, self.pos_emb, pos)


#: The names that :func:`make_position` (and ``attnlib.models.ModelConfig.position``) accept.
POSITION_SCHEMES = ("none", "sinusoidal", "learned", "shaw", "rope", "alibi", "cope")


def make_position(name: str, *, d_model: int, n_heads: int, max_len: int = 512, max_distance: int = 16,
                  n_positions: int = 16, base: float = 10000.0) -> PositionScheme:
    """Build a :class:`PositionScheme` by name, one of :data:`POSITION_SCHEMES`."""
    if not isinstance(name, str):
        raise TypeError(f"position must be a str, one of {POSITION_SCHEMES}, got {type(name).__name__}")
    check_positive_int(d_model, "d_model")
    check_positive_int(n_heads, "n_heads")
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
    head_dim = d_model // n_heads
    if name == "none":
        return NoPosition()
    if name == "sinusoidal":
        return SinusoidalPosition(d_model, base)
    if name == "learned":
        return LearnedAbsolutePosition(max_len, d_model)
    if name == "shaw":
        return ShawRelativePosition(head_dim, max_distance)
    if name == "rope":
        if head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got d_model/n_heads = {head_dim}")
        return RotaryPosition(base)
    if name == "alibi":
        return ALiBiPosition(n_heads)
    if name == "cope":
        return CoPEPosition(head_dim, n_positions)
    raise ValueError(f"position must be one of {POSITION_SCHEMES}, got {name!r}")
