r"""Sparse attention for long context: fixed patterns, their receptive fields, and content-routed selection.

A sparse attention keeps, for each query ``i``, a set :math:`S_i` of keys and computes
softmax attention over it, :math:`O_i = \sum_{j \in S_i} \operatorname{softmax}_{j \in S_i}(s\,q_i\cdot k_j)\, v_j`,
so its cost is :math:`\sum_i |S_i|` instead of :math:`L^2`. Everything here is a way to choose
:math:`S_i`, returned as a boolean mask (True = attend) and applied by :func:`masked_attention`.
The functions compute the selection densely, for clarity; the work a kernel would save is
lab 18's business (:mod:`attnlib.kernels.block_sparse`).

Fixed patterns (causal, ``(L, L)``; distance :math:`\delta = i - j`):

* :func:`sliding_window`: :math:`0 \le \delta < w`;
* :func:`dilated`: :math:`\delta = m r` for :math:`0 \le m < w` (a window of ``w`` keys spaced by ``r``);
* :func:`power_of_two`: :math:`\delta < w` or :math:`\delta \in \{1, 2, 4, 8, \dots\}`. The seed *PowerAttention:
  Exponentially Scaling of Receptive Fields for Effective Sparse Attention* states that ``d`` layers
  reach :math:`2^d` tokens; its abstract does not fix the pattern, and this is our choice: with
  distances :math:`\{0\} \cup \{2^m\}` every :math:`\delta \le 2^d - 1` is a sum of at most ``d`` of them
  (its binary digits), so ``d`` layers reach the whole causal range of :math:`2^d` tokens;
* :func:`headwise_stride`: head ``h`` of ``H`` reads the keys :math:`j \equiv h \pmod{r}` (Hepos, the
  head-wise positional strides of the seed *Efficient Attentions for Long Document Summarization*).

:func:`receptive_field` composes a mask over ``n`` layers with the residual stream:
:math:`R_n = (M \vee I)^n` in boolean arithmetic; :func:`causal_coverage` is the fraction of causal
pairs it reaches.

Content-based selection (causal self-attention, ``(..., L, d)``):

* :func:`block_topk_attention`: MoBA-style (seed *MoBA: Mixture of Block Attention for Long-Context
  LLMs*, which applies Mixture-of-Experts routing to blocks of keys). Our reading: query ``i`` scores
  every earlier block :math:`J` by :math:`q_i \cdot \bar k_J` (the block's mean key), always keeps its own
  block (causally) and keeps the ``topk - 1`` best earlier blocks; ``topk >= ceil(L / block)`` is full
  causal attention exactly, the "seamless transition between full and sparse attention" of the abstract.
* :func:`kmeans_routing_attention`: the Routing Transformer (seed *Efficient Content-Based Sparse
  Attention with Routing Transformers*): queries and keys are routed to the nearest of ``C`` shared
  centroids (spherical k-means, cosine similarity) and a query attends to the keys of its own
  cluster (and always to its own position). :func:`online_kmeans_update` moves the centroids by an
  exponential moving average of their members, the online k-means of the abstract. Balancing the
  clusters' sizes is left out.
* :func:`landmark_attention`: the seed *Landmark Attention: Random-Access Infinite Context Length for
  Transformers* represents each block by a landmark token and retrieves blocks through attention.
  Here the query's own block is attended token by token; each earlier block ``J`` enters the same
  softmax through one landmark logit :math:`q_i\cdot \ell_J`, and the weight it wins is shared among
  its tokens by a softmax inside the block (grouped softmax); ``topk`` keeps the best landmarks.
  The landmark keys are trained tokens in the paper; the default here, the block's mean key, is an
  untrained stand-in.
* :func:`sea_attention`: the learned selector, after the seed *SEA: Sparse Linear Attention with
  Estimated Attention Mask*: a kernel linear attention :math:`\hat A_{ij} \propto \phi(q_i)\cdot\phi(k_j)`
  estimates the attention, each query keeps its ``topk`` keys by the estimate, and exact softmax
  attention runs over them. The feature map is learnable (a module) and can be distilled from a
  teacher's attention, as the abstract says SEA can; simplified: the estimate is computed densely and
  SEA's compression of the estimate is left out.

:func:`mass_recovered` and :func:`budget` measure a selection: the share of the full attention's
weight it keeps and the share of causal pairs it computes.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .core import scaled_dot_product_attention
from .masks import causal_mask
from .validation import check_mask, check_positive_int, check_qkv, check_tensor

__all__ = ["sliding_window", "dilated", "power_of_two", "headwise_stride", "receptive_field", "causal_coverage",
           "masked_attention", "block_means", "block_topk_mask", "block_topk_attention", "kmeans_assign",
           "online_kmeans_update", "kmeans_fit", "kmeans_routing_mask", "kmeans_routing_attention",
           "landmark_attention", "elu_feature_map", "sea_mask", "sea_attention", "mass_recovered", "budget"]


# ----------------------------------------------------------------------------- fixed patterns


def _distance(length: int, device=None) -> torch.Tensor:
    i = torch.arange(check_positive_int(length, "length"), device=device)
    return i[:, None] - i[None, :]  # (L, L): i - j


def sliding_window(length: int, window: int, *, device=None) -> torch.Tensor:
    """``(L, L)``: ``0 <= i - j < window``."""
    window = check_positive_int(window, "window")
    d = _distance(length, device)
    return (d >= 0) & (d < window)


def dilated(length: int, window: int, dilation: int, *, device=None) -> torch.Tensor:
    """``(L, L)``: ``i - j = m * dilation`` for ``m = 0 .. window - 1``."""
    window, dilation = check_positive_int(window, "window"), check_positive_int(dilation, "dilation")
    d = _distance(length, device)
    return (d >= 0) & (d % dilation == 0) & (d < window * dilation)


def power_of_two(length: int, *, window: int = 1, device=None) -> torch.Tensor:
    """``(L, L)``: ``0 <= i - j < window`` or ``i - j`` a power of two (1, 2, 4, ...)."""
    window = check_positive_int(window, "window")
    d = _distance(length, device)
    is_pow2 = (d > 0) & ((d & (d - 1)) == 0)
    return ((d >= 0) & (d < window)) | is_pow2


def headwise_stride(lq: int, lk: int, n_heads: int, stride: int, *, device=None) -> torch.Tensor:
    """``(H, Lq, Lk)``: head ``h`` reads keys ``j`` with ``j % stride == h % stride`` (non-causal, as Hepos'
    encoder-decoder attention); with ``n_heads >= stride`` the heads together cover every key."""
    check_positive_int(lq, "lq")
    lk, n_heads, stride = (check_positive_int(lk, "lk"), check_positive_int(n_heads, "n_heads"),
                           check_positive_int(stride, "stride"))
    h = torch.arange(n_heads, device=device)[:, None, None]  # (H, 1, 1)
    j = torch.arange(lk, device=device)[None, None, :]  # (1, 1, Lk)
    return ((j % stride) == (h % stride)).expand(n_heads, lq, lk)


def receptive_field(mask: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Which inputs ``j`` reach output ``i`` after ``n_layers`` layers that each attend by ``mask``.

    ``mask``: boolean ``(..., L, L)``. The residual stream keeps each position's own input, so the
    one-layer step is ``M | I`` and the answer is its ``n_layers``-th boolean power, ``(..., L, L)``.
    """
    check_tensor(mask, "mask", min_dim=2, floating=False)
    if mask.dtype != torch.bool or mask.shape[-1] != mask.shape[-2]:
        raise ValueError(f"mask must be a square boolean (..., L, L) tensor, got {mask.dtype} {tuple(mask.shape)}")
    n_layers = check_positive_int(n_layers, "n_layers")
    eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
    step = (mask | eye).float()
    reach = step
    for _ in range(n_layers - 1):
        reach = ((reach @ step) > 0).float()  # reach_n[i, j] = OR_k step[i, k] & reach_{n-1}[k, j]
    return reach > 0


def causal_coverage(reach: torch.Tensor) -> torch.Tensor:
    """Fraction of the causal pairs ``j <= i`` of ``reach (..., L, L)`` that are True, ``(...)``."""
    if not isinstance(reach, torch.Tensor) or reach.dtype != torch.bool or reach.dim() < 2:
        raise ValueError(f"reach must be a boolean (..., L, L) tensor, got {getattr(reach, 'dtype', type(reach))}")
    c = causal_mask(reach.shape[-2], reach.shape[-1], device=reach.device)
    return (reach & c).sum((-2, -1)).double() / c.sum()


def masked_attention(q, k, v, mask, *, scale: Optional[float] = None, return_weights: bool = False):
    """Softmax attention over the keys ``mask`` keeps (``attnlib.core.scaled_dot_product_attention``)."""
    return scaled_dot_product_attention(q, k, v, mask, scale=scale, return_weights=return_weights)


# ----------------------------------------------------------------------------- MoBA-style block top-k


def _self_attention_qk(q, k, v=None) -> int:
    check_qkv(q, k, k if v is None else v)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"this is causal self-attention: q and k need the same length, got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")
    return q.shape[-2]


def block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    """``(..., L, d) -> (..., ceil(L / block), d)``: the mean of each block of rows (the last over its real rows)."""
    block = check_positive_int(block, "block")
    length = x.shape[-2]
    nb = math.ceil(length / block)
    pad = nb * block - length
    sums = torch.nn.functional.pad(x, (0, 0, 0, pad)).unflatten(-2, (nb, block)).sum(-2)  # (..., nB, d)
    counts = torch.full((nb, 1), float(block), dtype=x.dtype, device=x.device)
    counts[-1] = block - pad
    return sums / counts


def block_topk_mask(q: torch.Tensor, k: torch.Tensor, *, block: int, topk: int) -> torch.Tensor:
    """MoBA-style causal selection, ``(..., L, L)``: query ``i`` keeps its own block (keys ``j <= i``) and the
    ``topk - 1`` earlier blocks ``J`` with the largest gate ``q_i . mean(k_J)``."""
    length = _self_attention_qk(q, k)
    block, topk = check_positive_int(block, "block"), check_positive_int(topk, "topk")
    nb = math.ceil(length / block)
    own = torch.arange(length, device=q.device) // block  # (L,) each query's block
    blocks = torch.arange(nb, device=q.device)
    earlier = blocks[None, :] < own[:, None]  # (L, nB)
    gate = (q @ block_means(k, block).transpose(-2, -1)).masked_fill(~earlier, float("-inf"))  # (..., L, nB)
    chosen = (blocks[None, :] == own[:, None]).expand_as(gate).clone()  # own block always
    n_pick = min(topk - 1, nb - 1)
    if n_pick > 0:
        picked = torch.zeros_like(chosen).scatter_(-1, gate.topk(n_pick, dim=-1).indices, True)
        chosen |= picked & earlier  # rows with fewer earlier blocks picked -inf ones: drop them
    key_block = torch.arange(length, device=q.device) // block  # (L,)
    return chosen[..., key_block] & causal_mask(length, length, device=q.device)


def block_topk_attention(q, k, v, *, block: int, topk: int, causal: bool = True, scale: Optional[float] = None,
                         return_weights: bool = False):
    """MoBA-style attention: softmax over the keys of the blocks :func:`block_topk_mask` selects.

    ``q, k``: ``(..., L, d)``, ``v``: ``(..., L, dv)``; only causal self-attention is defined here.
    """
    if causal is not True:
        raise ValueError("block_topk_attention is causal self-attention (causal=True) in attnlib")
    _self_attention_qk(q, k, v)
    mask = block_topk_mask(q, k, block=block, topk=topk)
    return masked_attention(q, k, v, mask, scale=scale, return_weights=return_weights)


# ----------------------------------------------------------------------------- k-means routing


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def _check_centroids(centroids, d: int) -> None:
    check_tensor(centroids, "centroids", min_dim=2)
    if centroids.shape[-1] != d:
        raise ValueError(f"centroids must be (C, d) with d={d} (the feature dim of q and k), "
                         f"got shape {tuple(centroids.shape)}")


def kmeans_assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``(..., L, d)``, ``(C, d)`` -> ``(..., L)``: the centroid of largest cosine similarity."""
    check_tensor(x, "x", min_dim=1)
    _check_centroids(centroids, x.shape[-1])
    return (_unit(x) @ _unit(centroids).transpose(-2, -1)).argmax(-1)


@torch.no_grad()
def online_kmeans_update(centroids: torch.Tensor, x: torch.Tensor, *, decay: float = 0.9) -> torch.Tensor:
    """One online (mini-batch) spherical k-means step: ``mu_c <- unit(decay mu_c + (1 - decay) mean of the unit
    vectors assigned to c)``; a centroid with no member keeps its place. ``x``: ``(..., d)`` rows."""
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"decay must lie in [0, 1), got {decay}")
    _check_centroids(centroids, x.shape[-1])
    rows = _unit(x.reshape(-1, x.shape[-1]))  # (N, d)
    assign = kmeans_assign(rows, centroids)  # (N,)
    n_c = centroids.shape[0]
    sums = torch.zeros_like(centroids).index_add_(0, assign, rows.to(centroids.dtype))  # (C, d)
    counts = torch.bincount(assign, minlength=n_c).to(centroids.dtype)[:, None]  # (C, 1)
    mean = sums / counts.clamp(min=1)
    moved = _unit(decay * _unit(centroids) + (1 - decay) * mean)
    return torch.where(counts > 0, moved, _unit(centroids))


@torch.no_grad()
def kmeans_fit(x: torch.Tensor, n_clusters: int, *, n_iters: int = 20, decay: float = 0.5,
               seed: int = 0) -> torch.Tensor:
    """Centroids ``(n_clusters, d)`` of the rows of ``x (..., d)``: start from a random row and add, one at a
    time, the row least similar to the centroids so far (farthest-point seeding), then ``n_iters`` online
    updates on all rows."""
    n_clusters = check_positive_int(n_clusters, "n_clusters")
    rows = _unit(x.reshape(-1, x.shape[-1]))
    if rows.shape[0] < n_clusters:
        raise ValueError(f"need at least n_clusters={n_clusters} rows in x, got {rows.shape[0]}")
    g = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(rows.shape[0], (1,), generator=g))]
    for _ in range(n_clusters - 1):
        closest = (rows @ rows[chosen].T).amax(-1)  # (N,) similarity to the nearest chosen centroid
        chosen.append(int(closest.argmin()))
    centroids = rows[chosen].clone()
    for _ in range(check_positive_int(n_iters, "n_iters")):
        centroids = online_kmeans_update(centroids, rows, decay=decay)
    return centroids


def kmeans_routing_mask(q: torch.Tensor, k: torch.Tensor, centroids: torch.Tensor, *,
                        causal: bool = True) -> torch.Tensor:
    """``(..., L, L)``: ``i`` sees ``j`` iff both are routed to one centroid (or ``j == i``), and ``j <= i``
    when causal."""
    length = _self_attention_qk(q, k)
    cq, ck = kmeans_assign(q, centroids), kmeans_assign(k, centroids)  # (..., L)
    eye = torch.eye(length, dtype=torch.bool, device=q.device)
    mask = (cq[..., :, None] == ck[..., None, :]) | eye
    return mask & causal_mask(length, length, device=q.device) if causal else mask


def kmeans_routing_attention(q, k, v, centroids, *, causal: bool = True, scale: Optional[float] = None,
                             return_weights: bool = False):
    """Routing-Transformer attention: softmax over the keys of the query's cluster (see the module docstring)."""
    _self_attention_qk(q, k, v)
    mask = kmeans_routing_mask(q, k, centroids, causal=causal)
    return masked_attention(q, k, v, mask, scale=scale, return_weights=return_weights)


# ----------------------------------------------------------------------------- landmark attention


def landmark_attention(q, k, v, *, block: int, topk: Optional[int] = None,
                       landmark_keys: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                       return_weights: bool = False):
    """Causal landmark attention with a grouped softmax (see the module docstring).

    Args:
        q, k: ``(..., L, d)``; v: ``(..., L, dv)``.
        block: tokens per block; topk: earlier blocks kept per query by landmark logit (None: all).
        landmark_keys: ``(..., ceil(L / block), d)``, default the blocks' mean keys.

    Returns ``out (..., L, dv)`` (and the ``(..., L, L)`` token weights, each row summing to 1).
    """
    length = _self_attention_qk(q, k, v)
    block = check_positive_int(block, "block")
    if topk is not None:
        topk = check_positive_int(topk, "topk")
    nb = math.ceil(length / block)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if landmark_keys is None:
        landmark_keys = block_means(k, block)
    elif landmark_keys.shape[-2:] != (nb, q.shape[-1]):
        raise ValueError(f"landmark_keys must end in (nB, d) = ({nb}, {q.shape[-1]}), got {tuple(landmark_keys.shape)}")
    pos = torch.arange(length, device=q.device)
    own, key_block = pos // block, pos // block  # (L,)
    s = (q @ k.transpose(-2, -1)) * scale  # (..., L, L) token logits
    g = (q @ landmark_keys.transpose(-2, -1)) * scale  # (..., L, nB) landmark logits
    earlier = torch.arange(nb, device=q.device)[None, :] < own[:, None]  # (L, nB)
    keep = earlier.expand_as(g)
    if topk is not None and nb > 1:
        picked = torch.zeros_like(g, dtype=torch.bool).scatter_(
            -1, g.masked_fill(~earlier, float("-inf")).topk(min(topk, nb), dim=-1).indices, True)
        keep = keep & picked
    local = (key_block[None, :] == own[:, None]) & (pos[None, :] <= pos[:, None])  # (L, L) own block, causal
    s_local = s.masked_fill(~local, float("-inf"))
    g_kept = g.masked_fill(~keep, float("-inf"))
    # One softmax over the own block's tokens and the kept landmarks (the row max is finite: j == i is local).
    top = torch.maximum(s_local.amax(-1, keepdim=True), g_kept.amax(-1, keepdim=True))
    e_local, e_land = torch.exp(s_local - top), torch.exp(g_kept - top)  # (..., L, L), (..., L, nB)
    total = e_local.sum(-1, keepdim=True) + e_land.sum(-1, keepdim=True)
    # Inside each earlier block, the landmark's share goes to its tokens by a softmax over the block.
    in_block = key_block[None, :, None] == torch.arange(nb, device=q.device)[None, None, :]  # (1, L, nB)
    s_in = s[..., :, :, None].masked_fill(~in_block, float("-inf"))  # (..., L, L, nB)
    p_in = torch.softmax(s_in, dim=-2)  # (..., L, L, nB): column J is a distribution over J's keys
    share = (p_in * (e_land / total)[..., None, :]).sum(-1)  # (..., L, L)
    weights = e_local / total + share
    out = weights @ v
    return (out, weights) if return_weights else out


# ----------------------------------------------------------------------------- SEA: estimate, then top-k


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """``elu(x) + 1 > 0``, the feature map of kernel linear attention (background, not a seed)."""
    return torch.nn.functional.elu(x) + 1


def sea_mask(q: torch.Tensor, k: torch.Tensor, *, topk: int, feature_map: Optional[Callable] = None,
             causal: bool = True) -> torch.Tensor:
    """``(..., L, L)``: each query's ``topk`` keys by the linear-attention estimate
    ``phi(q_i) . phi(k_j)`` (over ``j <= i`` when causal); ``phi`` defaults to :func:`elu_feature_map`."""
    length = _self_attention_qk(q, k)
    topk = check_positive_int(topk, "topk")
    phi = elu_feature_map if feature_map is None else feature_map
    with torch.no_grad():
        estimate = phi(q) @ phi(k).transpose(-2, -1)  # (..., L, L), >= 0 for a positive feature map
        allowed = causal_mask(length, length, device=q.device) if causal else torch.ones(
            length, length, dtype=torch.bool, device=q.device)
        estimate = estimate.masked_fill(~allowed, float("-inf"))
        top = estimate.topk(min(topk, length), dim=-1).indices
        return torch.zeros(estimate.shape, dtype=torch.bool, device=q.device).scatter_(-1, top, True) & allowed


def sea_attention(q, k, v, *, topk: int, feature_map: Optional[Callable] = None, causal: bool = True,
                  scale: Optional[float] = None, return_weights: bool = False):
    """Exact softmax attention over the keys :func:`sea_mask` selects."""
    _self_attention_qk(q, k, v)
    mask = sea_mask(q, k, topk=topk, feature_map=feature_map, causal=causal)
    return masked_attention(q, k, v, mask, scale=scale, return_weights=return_weights)


# ----------------------------------------------------------------------------- measuring a selection


def mass_recovered(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the full attention's weight inside ``mask``: ``mean_i sum_{j in S_i} A_ij``.

    ``weights``: ``(..., L, L)`` rows summing to 1; ``mask`` broadcastable to it. Returns a 0-dim tensor."""
    check_tensor(weights, "weights", min_dim=2)
    check_mask(mask, weights.shape[-2], weights.shape[-1])
    return (weights * mask).sum(-1).mean()


def budget(mask: torch.Tensor) -> float:
    """Fraction of the causal pairs ``j <= i`` that ``mask (..., L, L)`` keeps (its share of causal work)."""
    check_mask(mask, mask.shape[-2], mask.shape[-1])
    c = causal_mask(mask.shape[-2], mask.shape[-1], device=mask.device)
    return float((mask & c).float().sum() / (c.sum() * (mask.numel() // mask.shape[-1] // mask.shape[-2])))
