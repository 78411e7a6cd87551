r"""Attention sinks and massive activations: measure them, calibrate them, and build layers without them.

**Sink scores and the sink ratio.** Seed *When Attention Sink Emerges in Language Models:
An Empirical View*: language models put much attention on the first token even when it
means nothing, sinks emerge "after effective optimization on sufficient training data", a
sink "acts more like key biases", and sigmoid attention without normalisation shows none up
to 1B parameters. We measure it as follows. For attention weights :math:`A` of one head
(queries :math:`i`, keys :math:`k`, causal), the **sink score** of key :math:`k` is the mean
weight it receives from the queries that can see it,

.. math::
    \alpha_k = \frac{1}{|\{i : i \ge k\}|} \sum_{i \ge k} A_{ik},

and the **sink ratio** of token :math:`s` at threshold :math:`\varepsilon` is the share of
heads (every layer, head and sequence counts once) with :math:`\alpha_s > \varepsilon`:

.. math::
    \operatorname{ratio}_\varepsilon(s) = \frac{1}{N_{\text{heads}}} \sum_{\text{heads}} \mathbf 1[\alpha_s > \varepsilon].

This is the form of the metric in the seed's body, where we read :math:`\varepsilon = 0.3`;
the abstract does not state it, so treat the default threshold as the course's choice.
``per="query"`` gives the other reading, the share of (head, query) rows whose weight on
:math:`s` exceeds :math:`\varepsilon`.

**Calibration.** Seed *Unveiling and Harnessing Hidden Attention Sinks: Enhancing Large
Language Models without Training through Attention Calibration*: sinks also occur at later
tokens, not all of them help, and its ACT recalibrates attention on the fly. We implement a
simplified version (ours, not the paper's exact procedure): in each head and sequence, every
key other than the first that receives more than ``threshold`` of the weight averaged over
*all* queries, :math:`\bar\alpha_k = \frac{1}{L_q}\sum_i A_{ik}` (``sink_scores(..., causal=False)``:
a late key that only a few queries see is not a sink because one of them looks at it), is a
sink; its weight is multiplied by ``factor`` in every row and each row is renormalised to its
original total,

.. math::
    A'_{ik} = A_{ik}\, \frac{\sum_j A_{ij}}{\sum_j \gamma_j A_{ij}} \gamma_k,\qquad
    \gamma_k = \text{factor if } k \text{ is a non-initial sink, else } 1,

so rows stay on the simplex and the removed mass goes to the other keys in proportion
to their weights. :func:`scale_token_attention` is the general operation (any tokens,
any factor, per head), which also covers the seed *ZeroTuning: Unlocking the Initial
Token's Power to Enhance Large Language Models Without Training* (scale the initial
token's attention, head by head).

**Layers.** Maps with the plug signature of :mod:`attnlib.models`
(``(q, k, v, *, bias, mask, normalizer, scale) -> (out, weights)``):

* :func:`sink_attention` / :class:`SinkAttention`: softmax over the real keys plus one extra
  key :math:`k_\varnothing` with logit :math:`\text{scale}\cdot q^\top k_\varnothing + b` and value
  :math:`v_\varnothing` (zero unless learned). With :math:`v_\varnothing = 0`,
  :math:`\text{out} = (1 - a_\varnothing)\, \text{out}_{\text{softmax}}` exactly, where
  :math:`a_\varnothing` is the sink's weight, and the ratios among the real keys do not change.
  The returned weights are those of the real keys; :math:`a_\varnothing = 1 - \sum_j w_j`.
  The extra key is the seed's "key bias", and an early cousin of the visual sentinel of seed
  *Knowing When to Look: Adaptive Attention via A Visual Sentinel for Image Captioning*.
* :func:`sigmoid_attention`: :math:`w_{ij} = \sigma(\text{scale}\, q_i^\top k_j + b)` on the allowed
  keys, no normalisation (:func:`attnlib.normalizers.sigmoid_weights`, :math:`b = -\log L_k`).
* :class:`CalibratedAttention`: any map whose output is ``weights @ v``, with its weights
  calibrated as above before they meet the values.

**Massive activations.** Seed *Massive Activations in Large Language Models*: very few
activations are far larger than the rest (e.g. 100,000 times), nearly constant across
inputs, and act as bias terms. :func:`massive_activation_report` gives, per layer, the
largest :math:`|h|` relative to the median :math:`|h|`, and where it sits (dimension,
position). :func:`feature_concentration` measures how much of a projection's magnitude sits in a
few dimensions, the concentration that seed *Massive Values in Self-Attention Modules are the
Key to Contextual Knowledge Understanding* reports in queries and keys (not values) and traces
to RoPE. :func:`record_forward` collects hidden states, queries, keys, values and weights
of a :class:`~attnlib.models.TinyTransformer` with forward hooks (no change to the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from .core import compute_dtype
from .normalizers import sigmoid_weights
from .validation import check_mask, check_positive_int, check_qkv, check_tensor, resolve_scale

__all__ = [
    "sink_scores",
    "sink_ratio",
    "scale_token_attention",
    "find_sinks",
    "calibrate_attention",
    "sink_attention",
    "SinkAttention",
    "sigmoid_attention",
    "CalibratedAttention",
    "set_attention",
    "record_forward",
    "MassiveActivations",
    "massive_activation_report",
    "feature_concentration",
    "DEFAULT_THRESHOLD",
]

DEFAULT_THRESHOLD = 0.3  # epsilon of the sink ratio (see the module docstring)


def _check_fraction(value, name: str, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite float, got {value!r}")
    if value < 0 or (low_open and value == 0):
        raise ValueError(f"{name} must be {'> 0' if low_open else '>= 0'}, got {value}")
    return float(value)


def _check_weights(weights, name: str = "weights") -> None:
    check_tensor(weights, name, min_dim=2)


# ----------------------------------------------------------------------------- measuring sinks
def sink_scores(weights: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    r"""Mean weight each key receives from the queries that can see it: ``(..., Lq, Lk) -> (..., Lk)``.

    With ``causal`` (bottom-right aligned, as :func:`attnlib.masks.causal_mask`), query ``i`` sees
    key ``k`` iff ``k <= i + Lk - Lq``, and :math:`\alpha_k` averages over those queries; a key no
    query sees scores 0. Without ``causal`` every query counts.
    """
    _check_weights(weights)
    lq, lk = weights.shape[-2:]
    if not causal:
        return weights.mean(dim=-2)
    i = torch.arange(lq, device=weights.device)[:, None]
    k = torch.arange(lk, device=weights.device)[None, :]
    sees = (k <= i + lk - lq).to(weights.dtype)  # (Lq, Lk)
    count = sees.sum(dim=0)  # (Lk,) queries that see each key
    return (weights * sees).sum(dim=-2) / count.clamp(min=1)


def sink_ratio(weights: Union[torch.Tensor, Sequence[torch.Tensor]], sink: int = 0,
               threshold: float = DEFAULT_THRESHOLD, *, per: str = "head", causal: bool = True) -> float:
    r"""Share of heads (``per="head"``) or of query rows (``per="query"``) that put more than
    ``threshold`` of their weight on key ``sink``.

    ``weights`` is one tensor ``(..., Lq, Lk)`` or a list of them (one per layer, e.g. what
    ``TinyTransformer(..., return_attention=True)`` returns); every leading index (sequence, head)
    of every layer is one head. ``per="head"`` thresholds the head's sink score
    :math:`\alpha_{\text{sink}}` (:func:`sink_scores`); ``per="query"`` thresholds each row that can
    see the sink. Returns a float in ``[0, 1]``.
    """
    layers = [weights] if isinstance(weights, torch.Tensor) else list(weights)
    if not layers:
        raise ValueError("weights must be a tensor or a non-empty list of tensors, got an empty list")
    for n, w in enumerate(layers):
        _check_weights(w, f"weights[{n}]" if len(layers) > 1 else "weights")
    if isinstance(sink, bool) or not isinstance(sink, int):
        raise TypeError(f"sink must be an int (a key index), got {type(sink).__name__}")
    threshold = _check_fraction(threshold, "threshold")
    if per not in ("head", "query"):
        raise ValueError(f"per must be 'head' or 'query', got {per!r}")
    hits, total = 0, 0
    for w in layers:
        lq, lk = w.shape[-2:]
        if not 0 <= sink < lk:
            raise ValueError(f"sink must index a key in [0, {lk}), got {sink}")
        if per == "head":
            score = sink_scores(w, causal=causal)[..., sink]  # (...,)
            hits, total = hits + int((score > threshold).sum()), total + score.numel()
        else:
            rows = w[..., sink]  # (..., Lq)
            if causal:
                rows = rows[..., max(sink - (lk - lq), 0):]  # the queries that see the sink
            hits, total = hits + int((rows > threshold).sum()), total + rows.numel()
    return hits / total if total else 0.0


# ----------------------------------------------------------------------------- calibration
def scale_token_attention(weights: torch.Tensor, tokens: torch.Tensor, factor: Union[float, torch.Tensor]
                          ) -> torch.Tensor:
    r"""Multiply the weight on the chosen keys by ``factor`` and renormalise every row to its old total.

    Args:
        weights: ``(..., Lq, Lk)``, non-negative.
        tokens: boolean, broadcastable to ``weights``, True on the keys to scale (e.g. ``(..., 1, Lk)``
            for "these keys in every row").
        factor: a number >= 0 or a tensor broadcastable to ``weights`` (e.g. one factor per head).

    A row keeps its sum (1 for softmax rows, 0 for fully masked rows); a row whose whole weight sits
    on the scaled keys keeps its weights unchanged (there is nowhere else to move them).
    """
    _check_weights(weights)
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.bool:
        raise TypeError(f"tokens must be a boolean tensor (True = scale this key), got "
                        f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
    try:
        torch.broadcast_shapes(tokens.shape, weights.shape)
    except RuntimeError:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)} does not broadcast to weights "
                         f"{tuple(weights.shape)}") from None
    if isinstance(factor, torch.Tensor):
        if (factor < 0).any():
            raise ValueError("factor must be >= 0 everywhere")
    else:
        factor = _check_fraction(factor, "factor")
    scaled = torch.where(tokens, weights * factor, weights)  # (..., Lq, Lk)
    old, new = weights.sum(-1, keepdim=True), scaled.sum(-1, keepdim=True)
    keep = new > 0
    return torch.where(keep, scaled * (old / torch.where(keep, new, torch.ones_like(new))), weights)


def find_sinks(weights: torch.Tensor, threshold: float = DEFAULT_THRESHOLD, *, causal: bool = False,
               include_first: bool = False) -> torch.Tensor:
    """Keys whose sink score (:func:`sink_scores`) exceeds ``threshold``: boolean ``(..., 1, Lk)``.

    By default the score averages over every query (``causal=False``), so that in causal attention a
    late key seen by a few queries does not count as a sink because one of them attends to it.
    The first key is left out unless ``include_first`` (calibration keeps the initial sink).
    """
    threshold = _check_fraction(threshold, "threshold")
    sinks = sink_scores(weights, causal=causal) > threshold  # (..., Lk)
    if not include_first:
        sinks[..., 0] = False
    return sinks[..., None, :]


def calibrate_attention(weights: torch.Tensor, threshold: float = DEFAULT_THRESHOLD, factor: float = 0.5, *,
                        causal: bool = False) -> torch.Tensor:
    """Simplified attention calibration: scale the non-initial sinks of each head by ``factor``, renormalise.

    ``weights`` ``(..., Lq, Lk)``; sinks are found per leading index (sequence, head) from the weights
    themselves (:func:`find_sinks`), so the operation adapts to the input. Rows keep their sums.
    """
    return scale_token_attention(weights, find_sinks(weights, threshold, causal=causal), factor)


# ----------------------------------------------------------------------------- layers
def _scaled_scores(q, k, mask, bias, scale):
    """``(scale q k^T + bias, scale, compute dtype)`` after checking ``mask``: the logits both layers share."""
    if mask is not None:
        check_mask(mask, q.shape[-2], k.shape[-2])
    scale = resolve_scale(scale, q.shape[-1])
    ct = compute_dtype(q.dtype)
    scores = (q.to(ct) @ k.to(ct).transpose(-2, -1)) * scale  # (..., Lq, Lk)
    return (scores if bias is None else scores + bias), scale, ct


def sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sink_key: torch.Tensor,
                   mask: Optional[torch.Tensor] = None, *, sink_value: Optional[torch.Tensor] = None,
                   sink_bias: Union[float, torch.Tensor] = 0.0, bias: Optional[torch.Tensor] = None,
                   scale: Optional[float] = None, normalizer=None):
    r"""Softmax attention with one extra key that belongs to no token.

    Args:
        q, k, v: ``(..., Lq, d)``, ``(..., Lk, d)``, ``(..., Lk, dv)``.
        sink_key: broadcastable to ``(..., 1, d)`` (e.g. ``(H, 1, d)`` for one per head).
        mask: boolean, broadcastable to ``(..., Lq, Lk)``, True = attend (the sink is always visible).
        sink_value: broadcastable to ``(..., 1, dv)``; ``None`` is a zero value.
        sink_bias: added to the sink's logit (a number, or broadcastable to ``(..., Lq, 1)``).
        bias: added to the real keys' scores (e.g. a position bias), broadcastable to ``(..., Lq, Lk)``.
        scale: default ``1/sqrt(d)``.
        normalizer: must be ``None`` (the sink is a softmax device); accepted for the plug signature.

    Returns:
        ``(out (..., Lq, dv), weights (..., Lq, Lk))``; the sink's weight is ``1 - weights.sum(-1)``.
        A fully masked row puts all its weight on the sink: zero weights, and output ``sink_value``.
    """
    check_qkv(q, k, v)
    check_tensor(sink_key, "sink_key", min_dim=1)
    if sink_key.shape[-1] != q.shape[-1]:
        raise ValueError(f"sink_key must end in the key dimension d={q.shape[-1]}, got shape {tuple(sink_key.shape)}")
    if normalizer is not None:
        raise ValueError("sink_attention is a softmax with an extra key: normalizer must be None")
    scores, scale, ct = _scaled_scores(q, k, mask, bias, scale)  # (..., Lq, Lk)
    if sink_key.dim() == 1:
        sink_key = sink_key[None, :]
    sink = (q.to(ct) * sink_key.to(ct)).sum(-1, keepdim=True) * scale + sink_bias  # (..., Lq, 1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    sink = sink.expand(*scores.shape[:-1], 1)
    p = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)  # (..., Lq, Lk + 1); the sink is never masked
    weights, a_sink = p[..., :-1], p[..., -1:]
    out = weights @ v.to(ct)  # (..., Lq, dv)
    if sink_value is not None:
        out = out + a_sink * sink_value.to(ct)
    return out.to(q.dtype), weights.to(q.dtype)


class SinkAttention(nn.Module):
    """:func:`sink_attention` with a learned sink per head, as an attention map for :mod:`attnlib.models`.

    Parameters: ``key`` ``(H, 1, d_head)`` (zeros at start), ``logit`` ``(H, 1, 1)`` (a learned key bias,
    0 at start) and, with ``learn_value``, ``value`` ``(H, 1, d_head)`` (zeros at start; otherwise the sink's
    value stays zero). Give each layer its own instance (:func:`set_attention`).
    """

    def __init__(self, n_heads: int, head_dim: int, *, learn_value: bool = False):
        super().__init__()
        check_positive_int(n_heads, "n_heads")
        check_positive_int(head_dim, "head_dim")
        self.key = nn.Parameter(torch.zeros(n_heads, 1, head_dim))
        self.logit = nn.Parameter(torch.zeros(n_heads, 1, 1))
        self.value = nn.Parameter(torch.zeros(n_heads, 1, head_dim)) if learn_value else None

    def forward(self, q, k, v, *, bias=None, mask=None, normalizer=None, scale=None):
        if q.shape[-3] != self.key.shape[0]:
            raise ValueError(f"q must have {self.key.shape[0]} heads (dim -3), got shape {tuple(q.shape)}")
        return sink_attention(q, k, v, self.key, mask, sink_value=self.value, sink_bias=self.logit, bias=bias,
                              scale=scale, normalizer=normalizer)


def sigmoid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: Optional[torch.Tensor] = None,
                      mask: Optional[torch.Tensor] = None, normalizer=None, scale: Optional[float] = None,
                      offset: Optional[float] = None):
    r"""Sigmoid attention without normalisation: ``w_ij = sigmoid(scale q_i.k_j + bias_ij + offset)`` on allowed keys.

    ``offset`` defaults to ``-log(Lk)`` (:func:`attnlib.normalizers.sigmoid_weights`); masked keys get 0.
    Each weight depends on its own score only. ``normalizer`` must be ``None`` (plug signature).
    Returns ``(out (..., Lq, dv), weights (..., Lq, Lk))``.
    """
    check_qkv(q, k, v)
    if normalizer is not None:
        raise ValueError("sigmoid_attention has its own weights: normalizer must be None")
    scores, scale, ct = _scaled_scores(q, k, mask, bias, scale)  # (..., Lq, Lk)
    weights = sigmoid_weights(scores, dim=-1, bias=offset)
    if mask is not None:
        weights = weights * mask
    return (weights @ v.to(ct)).to(q.dtype), weights.to(q.dtype)


class CalibratedAttention(nn.Module):
    """Wrap an attention map (default softmax) and calibrate its weights (:func:`calibrate_attention`).

    ``base`` must return ``out = weights @ v`` (true of :func:`attnlib.models.softmax_attention` and
    :func:`sigmoid_attention`); the output is recomputed from the calibrated weights. ``factor=1`` is the
    base map; ``causal`` says how sink scores average over queries (:func:`find_sinks`). No parameters:
    wrap a trained model's maps for inference-time calibration.
    """

    def __init__(self, base: Optional[Callable] = None, *, threshold: float = DEFAULT_THRESHOLD,
                 factor: float = 0.5, causal: bool = False):
        super().__init__()
        self.causal = bool(causal)
        if base is not None and not callable(base):
            raise TypeError(f"base must be an attention map (callable) or None, got {type(base).__name__}")
        self.base = base
        self.threshold = _check_fraction(threshold, "threshold")
        self.factor = _check_fraction(factor, "factor")

    def forward(self, q, k, v, *, bias=None, mask=None, normalizer=None, scale=None):
        if self.base is None:
            from .models import softmax_attention as base
        else:
            base = self.base
        _, weights = base(q, k, v, bias=bias, mask=mask, normalizer=normalizer, scale=scale)
        weights = calibrate_attention(weights, self.threshold, self.factor, causal=self.causal)
        return weights @ v, weights


def set_attention(model: nn.Module, make: Callable[[int], Callable]) -> nn.Module:
    """Give every block of a :class:`~attnlib.models.TinyTransformer` its own attention map ``make(layer)``.

    ``TinyTransformer(attention=...)`` shares one map among all layers; a map with parameters
    (:class:`SinkAttention`) needs one per layer. Assigning a module registers its parameters
    (``model.parameters()`` sees them). Returns ``model``.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(hasattr(getattr(b, "attn", None), "attention") for b in blocks):
        raise TypeError(f"model must have .blocks[i].attn.attention (a TinyTransformer), got {type(model).__name__}")
    if not callable(make):
        raise TypeError(f"make must be a callable layer -> attention map, got {type(make).__name__}")
    for layer, block in enumerate(blocks):
        block.attn.attention = make(layer)
    return model


# ----------------------------------------------------------------------------- hidden states
@torch.no_grad()
def record_forward(model: nn.Module, tokens: torch.Tensor) -> dict:
    """Run ``model(tokens)`` and collect, per block, with forward hooks (removed afterwards):

    ``hidden``: the block's output ``(B, L, d_model)`` (the residual stream after the block);
    ``q``, ``k``, ``v``: the projections ``(B, H, L, d_head)`` before any rotary embedding;
    ``weights``: the attention weights ``(B, H, L, L)``. Also ``embed``: the input of block 0.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"model must have .blocks (a TinyTransformer), got {type(model).__name__}")
    rec = {"hidden": [], "q": [], "k": [], "v": [], "weights": [], "embed": None}

    def on_block(module, inputs, output):
        rec["hidden"].append(output[0].detach())
        rec["weights"].append(output[1].detach())
        if rec["embed"] is None:
            rec["embed"] = inputs[0].detach()

    def on_qkv(module, inputs, output, heads):
        b, length, _ = output.shape
        q, k, v = output.detach().view(b, length, 3, heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, L, dh)
        rec["q"].append(q)
        rec["k"].append(k)
        rec["v"].append(v)

    handles = []
    try:
        for block in blocks:
            handles.append(block.register_forward_hook(on_block))
            handles.append(block.attn.qkv.register_forward_hook(
                lambda m, i, o, h=block.attn.n_heads: on_qkv(m, i, o, h)))
        was_training = model.training
        model.eval()
        model(tokens)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return rec


@dataclass
class MassiveActivations:
    """Per-layer summary of :func:`massive_activation_report` (``n`` layers, width ``d``)."""

    ratio: torch.Tensor  # (n,) largest |h| / median |h|
    largest: torch.Tensor  # (n,) largest |h|
    median: torch.Tensor  # (n,) median |h|
    dim: torch.Tensor  # (n,) int64, the dimension of the largest |h|
    position: torch.Tensor  # (n,) int64, the token position of the largest |h|
    dim_profile: torch.Tensor  # (n, d) largest |h| in each dimension / median |h|

    def massive_dims(self, factor: float = 20.0) -> list[list[int]]:
        """Per layer, the dimensions whose largest :math:`|h|` exceeds ``factor`` times the median."""
        return [torch.nonzero(row > factor).flatten().tolist() for row in self.dim_profile]


def massive_activation_report(hidden: Union[torch.Tensor, Sequence[torch.Tensor]]) -> MassiveActivations:
    """Largest activation magnitudes relative to the median, by layer and dimension.

    ``hidden`` is one tensor ``(B, L, d)`` or a list of them (one per layer, e.g.
    ``record_forward(model, x)["hidden"]``). For each layer, over all sequences and positions:
    ``ratio = max|h| / median|h|``, where the maximum sits (``dim``, ``position``), and the per-dimension
    profile ``max over (B, L) of |h[..., j]|`` divided by the layer's median.
    """
    layers = [hidden] if isinstance(hidden, torch.Tensor) else list(hidden)
    if not layers:
        raise ValueError("hidden must be a tensor or a non-empty list of tensors, got an empty list")
    out = {f: [] for f in ("ratio", "largest", "median", "dim", "position", "dim_profile")}
    for n, h in enumerate(layers):
        check_tensor(h, f"hidden[{n}]", min_dim=2)
        if h.numel() == 0:
            raise ValueError(f"hidden[{n}] is empty: shape {tuple(h.shape)}")
        a = h.detach().abs().double().reshape(-1, h.shape[-2], h.shape[-1])  # (B, L, d)
        med = a.median().clamp(min=torch.finfo(torch.float64).tiny)
        flat = int(a.argmax())
        _, pos, dim = torch.unravel_index(torch.tensor(flat), a.shape)
        out["largest"].append(a.max())
        out["median"].append(med)
        out["ratio"].append(a.max() / med)
        out["dim"].append(dim)
        out["position"].append(pos)
        out["dim_profile"].append(a.amax(dim=(0, 1)) / med)
    return MassiveActivations(**{f: torch.stack(v) for f, v in out.items()})


def feature_concentration(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How concentrated the magnitude of ``x`` ``(..., L, d)`` is across its ``d`` dimensions.

    The profile is the mean ``|x|`` of each dimension over every leading index and position, ``(d,)``;
    the concentration is its largest entry over its median (1 when every dimension is alike).
    Returns ``(concentration (scalar tensor), profile (d,))``.
    """
    check_tensor(x, "x", min_dim=2)
    if x.numel() == 0:
        raise ValueError(f"x is empty: shape {tuple(x.shape)}")
    profile = x.detach().abs().double().reshape(-1, x.shape[-1]).mean(0)  # (d,)
    return profile.max() / profile.median().clamp(min=torch.finfo(torch.float64).tiny), profile
