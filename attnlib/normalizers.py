r"""Normalizers: the maps that turn a row of attention scores into weights.

Softmax is one choice among many. Every normalizer here maps scores
:math:`z \in \mathbb{R}^n` (along ``dim``) to weights :math:`p`:

* **softmax** :math:`p_i = e^{z_i} / \sum_j e^{z_j}`: dense, every weight > 0.
* **sparsemax** (seed *From Softmax to Sparsemax: A Sparse Model of Attention and
  Multi-Label Classification*): the Euclidean projection onto the simplex,
  :math:`p = \arg\min_{p \in \Delta} \lVert p - z \rVert^2`, i.e.
  :math:`p_i = [z_i - \tau]_+` with :math:`\tau` chosen so that :math:`\sum_i p_i = 1`.
  Sorting :math:`z_{(1)} \ge \dots \ge z_{(n)}`, the support size is
  :math:`k = \max\{k : 1 + k z_{(k)} > \sum_{j \le k} z_{(j)}\}` and
  :math:`\tau = (\sum_{j\le k} z_{(j)} - 1)/k`. Its Jacobian is
  :math:`J = \operatorname{diag}(s) - s s^\top / |S|` with :math:`s` the support
  indicator, so the backward pass is
  :math:`\partial L/\partial z = s \odot (g - \bar g_S)`, where :math:`\bar g_S`
  is the mean of the incoming gradient :math:`g` over the support.
* **α-entmax** (Peters, Niculae & Martins, 2019, *background, not a seed*; used
  with a learned α by the seed *Adaptively Sparse Transformers*):
  :math:`p_i = [(\alpha - 1) z_i - \tau]_+^{1/(\alpha-1)}`, with :math:`\tau` such
  that :math:`\sum_i p_i = 1`. α → 1 gives softmax, α = 2 gives sparsemax;
  α = 1.5 has an exact sort-based solution (:func:`entmax15`), any α > 1 is
  solved by bisection on :math:`\tau` (:func:`entmax_bisect`). The backward pass
  uses :math:`\partial L/\partial z = u \odot g - u\, (u^\top g) / (\mathbf 1^\top u)`
  with :math:`u_i = p_i^{2-\alpha}` on the support and 0 elsewhere.

Attention-weight helpers that are *not* probability distributions:

* **ReLA** (seed *Sparse Attention with Linear Units*): :math:`w = \operatorname{relu}(z)`.
  A row may be all zeros: the query "switches off". (The paper stabilises
  training with a normalisation of the attention output; that detail is in the
  paper body, so attnlib only provides the weights.)
* **sigmoid attention**: :math:`w = \sigma(z + b)` with no normalisation across keys
  (seed *When Attention Sink Emerges in Language Models: An Empirical View* reports
  that it produces no sinks up to 1B parameters). The bias ``b`` is a free choice;
  ``-log n`` keeps the total weight near 1 at initialisation (our default, a heuristic).
* **softmax with a sink**: a softmax over the scores plus one extra logit (0 by
  default) whose weight is thrown away, so the row sums to less than 1 and a
  query can put its mass "nowhere".

:func:`normalize` applies any of them by name with an optional boolean mask
(True = attend): masked entries get weight exactly 0 and a fully masked row gets
zeros. :func:`normalized_attention` is scaled dot-product attention with a
pluggable normalizer.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch

from .core import combine_masks
from .core import compute_dtype as _compute_dtype
from .validation import check_positive_int, check_qkv, check_tensor, resolve_scale

__all__ = [
    "softmax",
    "sparsemax",
    "entmax15",
    "entmax_bisect",
    "relu_weights",
    "sigmoid_weights",
    "softmax_with_sink",
    "normalize",
    "normalized_attention",
    "NORMALIZERS",
    "support_size",
    "entropy",
    "softmax_jacobian",
]


def _check_dim(x: torch.Tensor, dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim must lie in [{-x.dim()}, {x.dim()}) for x of shape {tuple(x.shape)}, got {dim}")
    return dim % x.dim()


def _prepare(x, dim: int, name: str = "x") -> tuple[torch.Tensor, int]:
    check_tensor(x, name, min_dim=1)
    dim = _check_dim(x, dim)
    return x, dim


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax along ``dim`` (for symmetry with the others; computed in float32 for half inputs)."""
    x, dim = _prepare(x, dim)
    return torch.softmax(x.to(_compute_dtype(x.dtype)), dim=dim).to(x.dtype)


# ----------------------------------------------------------------------------- sparsemax
def _sparsemax_forward(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax along the last dim (sort-based, O(n log n))."""
    n = z.shape[-1]
    z = z - z.amax(dim=-1, keepdim=True)  # shift-invariant; keeps the cumsum small
    z_sorted, _ = torch.sort(z, dim=-1, descending=True)  # (..., n)
    k = torch.arange(1, n + 1, dtype=z.dtype, device=z.device)  # (n,)
    cumsum = z_sorted.cumsum(dim=-1)  # (..., n)
    in_support = 1 + k * z_sorted > cumsum  # True on a prefix of the sorted order
    k_z = in_support.sum(dim=-1, keepdim=True)  # (..., 1), >= 1
    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z.to(z.dtype)  # (..., 1)
    return torch.clamp(z - tau, min=0)


class _Sparsemax(torch.autograd.Function):
    """Sparsemax with the closed-form backward of Martins & Astudillo (2016)."""

    @staticmethod
    def forward(ctx, z):
        p = _sparsemax_forward(z)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        s = (p > 0).to(g.dtype)  # support indicator
        g_mean = (g * s).sum(dim=-1, keepdim=True) / s.sum(dim=-1, keepdim=True)  # mean of g over S
        return s * (g - g_mean)


def sparsemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Sparsemax along ``dim``: the Euclidean projection of ``x`` onto the probability simplex.

    ``sparsemax(x) = [x - tau]_+`` with ``tau`` chosen so the result sums to 1;
    low scores get weight *exactly* 0. Differentiable with the closed-form
    Jacobian ``diag(s) - s s^T/|S|`` (seed *From Softmax to Sparsemax*).
    Half-precision inputs are computed in float32 and cast back.
    """
    x, dim = _prepare(x, dim)
    ct = _compute_dtype(x.dtype)
    z = x.to(ct).movedim(dim, -1)
    return _Sparsemax.apply(z).movedim(-1, dim).to(x.dtype)


# ----------------------------------------------------------------------------- 1.5-entmax
def _entmax15_forward(z: torch.Tensor) -> torch.Tensor:
    """Exact 1.5-entmax along the last dim (Peters et al., 2019, Algorithm 2)."""
    n = z.shape[-1]
    z = (z - z.amax(dim=-1, keepdim=True)) / 2  # p_i = [z_i/2 - tau]_+^2 with max(z/2) = 0
    z_sorted, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, n + 1, dtype=z.dtype, device=z.device)
    mean = z_sorted.cumsum(dim=-1) / k  # mean of the top k
    mean_sq = (z_sorted**2).cumsum(dim=-1) / k
    ss = k * (mean_sq - mean**2)  # k * variance of the top k
    delta = torch.clamp((1 - ss) / k, min=0)
    tau = mean - torch.sqrt(delta)  # threshold if the support were the top k
    k_z = (tau <= z_sorted).sum(dim=-1, keepdim=True)  # support size
    tau_star = tau.gather(-1, k_z - 1)
    return torch.clamp(z - tau_star, min=0) ** 2


class _Entmax15(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        p = _entmax15_forward(z)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        u = p.sqrt()  # p^{2 - alpha} with alpha = 1.5; 0 off the support
        gu = g * u
        return gu - u * gu.sum(dim=-1, keepdim=True) / u.sum(dim=-1, keepdim=True)


def entmax15(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""1.5-entmax along ``dim``: ``p_i = [x_i/2 - tau]_+^2``, summing to 1 (exact, sort-based).

    Between softmax (dense) and sparsemax (sparser): low scores get exactly 0.
    Half-precision inputs are computed in float32 and cast back.
    """
    x, dim = _prepare(x, dim)
    ct = _compute_dtype(x.dtype)
    z = x.to(ct).movedim(dim, -1)
    return _Entmax15.apply(z).movedim(-1, dim).to(x.dtype)


# ----------------------------------------------------------------------------- alpha-entmax
def _entmax_bisect_forward(z: torch.Tensor, alpha: float, n_iter: int) -> torch.Tensor:
    """alpha-entmax along the last dim by bisection on the threshold tau."""
    n = z.shape[-1]
    a1 = alpha - 1
    x = z * a1  # p_i = [x_i - tau]_+^{1/(alpha-1)}
    x_max = x.amax(dim=-1, keepdim=True)
    # At tau = x_max - 1 the largest entry alone has p = 1 (sum >= 1); at
    # tau = x_max - n^{1-alpha} every entry is <= 1/n (sum <= 1). The root lies between.
    lo = x_max - 1
    hi = x_max - (1.0 / n) ** a1
    for _ in range(n_iter):
        tau = (lo + hi) / 2
        total = torch.clamp(x - tau, min=0).pow(1 / a1).sum(dim=-1, keepdim=True)
        too_big = total >= 1  # tau too small
        lo = torch.where(too_big, tau, lo)
        hi = torch.where(too_big, hi, tau)
    p = torch.clamp(x - lo, min=0).pow(1 / a1)
    return p / p.sum(dim=-1, keepdim=True)  # remove the last bisection error


class _EntmaxBisect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, alpha, n_iter):
        p = _entmax_bisect_forward(z, alpha, n_iter)
        ctx.alpha = alpha
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        u = torch.where(p > 0, p.pow(2 - ctx.alpha), torch.zeros_like(p))
        gu = g * u
        return gu - u * gu.sum(dim=-1, keepdim=True) / u.sum(dim=-1, keepdim=True), None, None


def entmax_bisect(x: torch.Tensor, alpha: float, dim: int = -1, n_iter: int = 60) -> torch.Tensor:
    r"""α-entmax along ``dim`` by bisection: ``p_i = [(alpha-1) x_i - tau]_+^{1/(alpha-1)}``.

    ``alpha`` is a number >= 1: ``alpha == 1`` returns softmax, ``alpha == 2``
    equals :func:`sparsemax`, ``alpha == 1.5`` equals :func:`entmax15`.
    Differentiable in ``x`` (not in ``alpha``). ``n_iter`` halvings of the
    bracket are done in the input's precision (float32 for half inputs), and
    the result is renormalised to sum to 1.
    """
    x, dim = _prepare(x, dim)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number >= 1, got {type(alpha).__name__}")
    if not math.isfinite(alpha) or alpha < 1:
        raise ValueError(f"alpha must be a finite number >= 1, got {alpha}")
    check_positive_int(n_iter, "n_iter")
    if alpha == 1:
        return softmax(x, dim=dim)
    ct = _compute_dtype(x.dtype)
    z = x.to(ct).movedim(dim, -1)
    return _EntmaxBisect.apply(z, float(alpha), n_iter).movedim(-1, dim).to(x.dtype)


# ----------------------------------------------------------------------------- unnormalized
def relu_weights(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """ReLA weights ``relu(x)`` (seed *Sparse Attention with Linear Units*); rows need not sum to 1.

    ``dim`` is accepted for a uniform signature; ReLU acts elementwise.
    """
    x, dim = _prepare(x, dim)
    return torch.relu(x)


def sigmoid_weights(x: torch.Tensor, dim: int = -1, bias: Optional[float] = None) -> torch.Tensor:
    """Sigmoid attention weights ``sigmoid(x + bias)``, no normalisation across keys.

    ``bias`` defaults to ``-log(n)`` with ``n = x.shape[dim]`` (a heuristic: with
    scores near 0 the total weight starts near 1).
    """
    x, dim = _prepare(x, dim)
    if bias is None:
        bias = -math.log(x.shape[dim]) if x.shape[dim] > 0 else 0.0
    elif isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
        raise TypeError(f"bias must be a finite float or None, got {bias!r}")
    return torch.sigmoid(x + bias)


def softmax_with_sink(x: torch.Tensor, dim: int = -1, sink_logit: float = 0.0) -> torch.Tensor:
    """Softmax over ``x`` plus one extra logit ``sink_logit``, whose weight is dropped.

    ``p_i = e^{x_i} / (e^{sink} + sum_j e^{x_j})``: every row sums to less than 1;
    the missing mass is what the query gives to "no token".
    """
    x, dim = _prepare(x, dim)
    if isinstance(sink_logit, bool) or not isinstance(sink_logit, (int, float)) or not math.isfinite(sink_logit):
        raise TypeError(f"sink_logit must be a finite float, got {sink_logit!r}")
    ct = _compute_dtype(x.dtype)
    z = x.to(ct).movedim(dim, -1)
    sink = torch.full((*z.shape[:-1], 1), float(sink_logit), dtype=ct, device=z.device)
    p = torch.softmax(torch.cat([z, sink], dim=-1), dim=-1)[..., :-1]
    return p.movedim(-1, dim).to(x.dtype)


NORMALIZERS: dict[str, Callable[..., torch.Tensor]] = {
    "softmax": softmax,
    "sparsemax": sparsemax,
    "entmax15": entmax15,
    "entmax": entmax_bisect,  # needs alpha=
    "relu": relu_weights,
    "sigmoid": sigmoid_weights,
    "sink": softmax_with_sink,
}


def _mask_gap(name: Optional[str], kwargs: dict) -> Optional[float]:
    """How far below the row's largest allowed score a masked score must sit to get weight 0.

    An entry is outside the alpha-entmax support once ``z_i < z_max - 1/(alpha - 1)``
    (alpha = 2 for sparsemax, 1.5 for entmax15). ``None`` means: fill with -inf.
    """
    if name in ("softmax", "sink"):
        return None
    alpha = {"sparsemax": 2.0, "entmax15": 1.5}.get(name, kwargs.get("alpha"))
    if name in ("sparsemax", "entmax15", "entmax") and isinstance(alpha, (int, float)):
        return None if alpha <= 1 else 1.0 / (alpha - 1.0) + 1.0
    return 1e4  # relu, sigmoid, a callable: the masked entries are zeroed afterwards anyway


def normalize(scores: torch.Tensor, normalizer: Union[str, Callable] = "softmax", *,
              mask: Optional[torch.Tensor] = None, dim: int = -1, **kwargs) -> torch.Tensor:
    """Turn ``scores`` into weights with the named ``normalizer`` (see :data:`NORMALIZERS`).

    ``mask`` (boolean, True = attend, broadcastable to ``scores``) gives masked
    entries weight exactly 0, and a fully masked row all zeros (never NaN).
    ``kwargs`` go to the normalizer (``alpha=`` for ``"entmax"``, ``bias=`` for
    ``"sigmoid"``, ``sink_logit=`` for ``"sink"``).
    """
    check_tensor(scores, "scores", min_dim=1)
    if callable(normalizer):
        fn, name = normalizer, None
    elif isinstance(normalizer, str):
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {sorted(NORMALIZERS)} or a callable, got {normalizer!r}")
        fn, name = NORMALIZERS[normalizer], normalizer
    else:
        raise TypeError(f"normalizer must be a str or a callable, got {type(normalizer).__name__}")
    if mask is None:
        return fn(scores, dim=dim, **kwargs)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor (True = attend), got {getattr(mask, 'dtype', type(mask))}")
    try:
        mask = mask.expand_as(scores) if mask.shape != scores.shape else mask
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to scores {tuple(scores.shape)}") from None
    dim = _check_dim(scores, dim)
    gap = _mask_gap(name, kwargs)
    if gap is None:
        fill = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    else:  # a finite fill far enough below the largest allowed score to be outside the support
        row_max = scores.masked_fill(~mask, float("-inf")).amax(dim=dim, keepdim=True)
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        fill = row_max - gap
    any_allowed = mask.any(dim=dim, keepdim=True)
    z = torch.where(mask, scores, fill)
    z = torch.where(any_allowed, z, torch.zeros_like(z))  # fully masked rows: harmless zeros
    return fn(z, dim=dim, **kwargs) * mask  # masked entries (and empty rows) exactly 0


def normalized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                         normalizer: Union[str, Callable] = "softmax", causal: bool = False,
                         scale: Optional[float] = None, return_weights: bool = False, **kwargs):
    """``normalize(scale * q k^T) v``: scaled dot-product attention with any normalizer.

    Shapes as :func:`attnlib.core.scaled_dot_product_attention`: ``q`` ``(..., Lq, d)``,
    ``k`` ``(..., Lk, d)``, ``v`` ``(..., Lk, dv)``; ``mask`` broadcastable to
    ``(..., Lq, Lk)`` (True = attend); ``causal`` is bottom-right aligned.
    With ``normalizer="softmax"`` it equals the reference attention.
    """
    check_qkv(q, k, v)
    lq, lk = q.shape[-2], k.shape[-2]
    scale = resolve_scale(scale, q.shape[-1])
    mask = combine_masks(mask, causal, lq, lk, q.device)
    ct = _compute_dtype(q.dtype)
    scores = (q.to(ct) @ k.to(ct).transpose(-2, -1)) * scale  # (..., Lq, Lk)
    if mask is not None:
        mask = mask.expand(scores.shape) if mask.shape != scores.shape else mask
    weights = normalize(scores, normalizer, mask=mask, dim=-1, **kwargs)
    out = (weights @ v.to(ct)).to(q.dtype)  # (..., Lq, dv)
    return (out, weights.to(q.dtype)) if return_weights else out


# ----------------------------------------------------------------------------- diagnostics
def support_size(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Number of exactly non-zero weights along ``dim``."""
    p, dim = _prepare(p, dim, "p")
    return (p != 0).sum(dim=dim)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy ``-sum p log p`` (nats) along ``dim``, with ``0 log 0 = 0``."""
    p, dim = _prepare(p, dim, "p")
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    return -plogp.sum(dim=dim)


def softmax_jacobian(s: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""Jacobian of ``p = softmax(s / T)`` with respect to ``s``: ``(diag(p) - p p^T) / T``.

    ``s`` is ``(..., n)``; the result is ``(..., n, n)``.
    """
    check_tensor(s, "s", min_dim=1)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    p = torch.softmax(s / temperature, dim=-1)
    return (torch.diag_embed(p) - p[..., :, None] * p[..., None, :]) / temperature
