r"""The multi-head family: MHA, grouped-query (GQA), multi-query (MQA) and latent (MLA) attention.

**Multi-head attention** (Vaswani et al., 2017, *background, not a seed*) runs
``H`` attention heads side by side on slices of learned projections and mixes
their outputs with :math:`W_O`:

.. math::

    \operatorname{MHA}(X) = \big[\operatorname{Attn}(X W_Q^{(1)}, X W_K^{(1)}, X W_V^{(1)}); \dots;
    \operatorname{Attn}(X W_Q^{(H)}, X W_K^{(H)}, X W_V^{(H)})\big] W_O .

**Grouped-query / multi-query attention.** During incremental decoding the
keys and values of every past token are re-read at every step. Multi-query
attention shares one key/value head across all query heads (seed *Fast
Transformer Decoding: One Write-Head is All You Need*), which shrinks those
tensors by a factor ``H``; grouped-query attention (Ainslie et al., 2023,
*background, not a seed*) sits in between with ``G`` key/value heads, query
head ``h`` reading key/value head ``h // (H / G)``. Here ``n_kv_heads = G``:
``G = H`` is MHA, ``G = 1`` is MQA.

**Multi-head latent attention** (DeepSeek-AI, 2024, *background*; its arithmetic
intensity is analysed by the seed *The New LLM Bottleneck: A Systems Perspective
on Latent Attention and Mixture-of-Experts*) caches one shared latent
:math:`c_t = W_{DKV} x_t \in \mathbb R^{d_c}` per token and rebuilds every
head's key and value from it: :math:`k^{(h)}_t = W_{UK}^{(h)} c_t`,
:math:`v^{(h)}_t = W_{UV}^{(h)} c_t`. Because
:math:`q^\top W_{UK}^{(h)} c = (W_{UK}^{(h)\top} q)^\top c`, the up-projection can
be *absorbed* into the query, and attention runs directly on the cached latents
(:meth:`MultiHeadLatentAttention.forward_absorbed`). (The decoupled RoPE part of
DeepSeek's MLA is left out: attnlib's heads carry no positions.)

**Head pruning** (seed *Are Sixteen Heads Really Better than One?*): ``head_mask``
in ``forward`` scales each head's output before ``W_O``, so a 0 removes the head;
:func:`greedy_prune` removes heads one at a time, each time the one whose removal
scores best.

KV-cache bytes per token and layer: ``2 * G * d_head * bytes`` for MHA/GQA/MQA,
``d_c * bytes`` for MLA (:func:`kv_cache_bytes_per_token`, :func:`mla_cache_bytes_per_token`).

All modules take ``x`` of shape ``(B, L, d_model)`` and compute the attention
itself with :func:`attnlib.core.scaled_dot_product_attention` on ``(B, H, L, d_head)``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .core import scaled_dot_product_attention
from .validation import check_positive_int, check_tensor

__all__ = [
    "MultiHeadAttention",
    "MultiHeadLatentAttention",
    "kv_cache_bytes_per_token",
    "mla_cache_bytes_per_token",
    "single_head",
    "count_parameters",
    "greedy_prune",
]


def _check_x(x, d_model: int, name: str = "x") -> None:
    check_tensor(x, name, min_dim=3)
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{name} must have shape (B, L, d_model={d_model}), got {tuple(x.shape)}")


def _split(t: torch.Tensor, n: int) -> torch.Tensor:
    """(B, L, n * d) -> (B, n, L, d)."""
    b, l, _ = t.shape
    return t.view(b, l, n, -1).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    """(B, n, L, d) -> (B, L, n * d)."""
    b, n, l, d = t.shape
    return t.transpose(1, 2).reshape(b, l, n * d)


def _apply_head_mask(o: torch.Tensor, head_mask: Optional[torch.Tensor], n_heads: int) -> torch.Tensor:
    """Scale head h's output by head_mask[..., h]; head_mask is (H,) or (B, H)."""
    if head_mask is None:
        return o
    if not isinstance(head_mask, torch.Tensor) or head_mask.shape[-1] != n_heads or head_mask.dim() > 2:
        raise ValueError(f"head_mask must be a tensor of shape (n_heads={n_heads},) or (B, n_heads), "
                         f"got {getattr(head_mask, 'shape', type(head_mask).__name__)}")
    m = head_mask.to(o.dtype)
    return o * (m[:, :, None, None] if m.dim() == 2 else m[None, :, None, None])


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``n_kv_heads`` key/value heads (MHA, GQA or MQA).

    Args:
        d_model: model width.
        n_heads: number of query heads ``H``.
        n_kv_heads: number of key/value heads ``G`` (default ``H``); ``H`` must be a
            multiple of ``G``. ``G < H`` is grouped-query, ``G == 1`` multi-query attention.
        head_dim: width of each head (default ``d_model // n_heads``, which must then divide).
        bias: whether the projections have biases.

    Attributes ``q_proj`` (d_model -> H*d_head), ``k_proj``/``v_proj`` (d_model -> G*d_head),
    ``o_proj`` (H*d_head -> d_model).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: Optional[int] = None, *,
                 head_dim: Optional[int] = None, bias: bool = False):
        super().__init__()
        check_positive_int(d_model, "d_model")
        check_positive_int(n_heads, "n_heads")
        n_kv_heads = n_heads if n_kv_heads is None else check_positive_int(n_kv_heads, "n_kv_heads")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}), or pass head_dim")
            head_dim = d_model // n_heads
        check_positive_int(head_dim, "head_dim")
        self.d_model, self.n_heads, self.n_kv_heads, self.head_dim = d_model, n_heads, n_kv_heads, head_dim
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)

    @property
    def group_size(self) -> int:
        """Query heads per key/value head, ``H // G``."""
        return self.n_heads // self.n_kv_heads

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                *, causal: bool = False, need_weights: bool = False, head_mask: Optional[torch.Tensor] = None):
        """Attend from ``x`` ``(B, Lq, d_model)`` to ``context`` ``(B, Lk, d_model)`` (default: ``x``).

        ``mask``: boolean, True = attend, broadcastable to ``(B, H, Lq, Lk)``.
        ``causal``: bottom-right aligned causal mask. ``head_mask``: ``(H,)`` or
        ``(B, H)`` factors applied to each head's output before ``o_proj`` (0 removes
        a head). Returns ``(B, Lq, d_model)``, and the ``(B, H, Lq, Lk)`` weights if
        ``need_weights``.
        """
        _check_x(x, self.d_model)
        context = x if context is None else context
        _check_x(context, self.d_model, "context")
        q = _split(self.q_proj(x), self.n_heads)  # (B, H, Lq, d_head)
        k = _split(self.k_proj(context), self.n_kv_heads)  # (B, G, Lk, d_head)
        v = _split(self.v_proj(context), self.n_kv_heads)  # (B, G, Lk, d_head)
        k = k.repeat_interleave(self.group_size, dim=1)  # (B, H, Lk, d_head): head h reads kv head h // group
        v = v.repeat_interleave(self.group_size, dim=1)
        o, w = scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)  # (B, H, Lq, d_head)
        o = _apply_head_mask(o, head_mask, self.n_heads)
        out = self.o_proj(_merge(o))  # (B, Lq, d_model)
        return (out, w) if need_weights else out

    def kv_cache_bytes_per_token(self, bytes_per_elem: int = 2) -> int:
        """Bytes this layer caches per token: ``2 * n_kv_heads * head_dim * bytes_per_elem``."""
        return kv_cache_bytes_per_token(self.n_kv_heads, self.head_dim, bytes_per_elem=bytes_per_elem)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}"


class MultiHeadLatentAttention(nn.Module):
    """Multi-head latent attention: keys and values rebuilt from a cached ``d_latent``-wide latent.

    ``c = W_dkv x`` (B, L, d_latent) is what a decoder caches; ``k = W_uk c`` and
    ``v = W_uv c`` give ``n_heads`` heads of width ``head_dim``. Interface as
    :class:`MultiHeadAttention`.
    """

    def __init__(self, d_model: int, n_heads: int, d_latent: int, *, head_dim: Optional[int] = None,
                 bias: bool = False):
        super().__init__()
        check_positive_int(d_model, "d_model")
        check_positive_int(n_heads, "n_heads")
        check_positive_int(d_latent, "d_latent")
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}), or pass head_dim")
            head_dim = d_model // n_heads
        check_positive_int(head_dim, "head_dim")
        self.d_model, self.n_heads, self.d_latent, self.head_dim = d_model, n_heads, d_latent, head_dim
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.kv_down = nn.Linear(d_model, d_latent, bias=bias)  # W_dkv: the only thing cached
        self.k_up = nn.Linear(d_latent, n_heads * head_dim, bias=False)  # W_uk
        self.v_up = nn.Linear(d_latent, n_heads * head_dim, bias=False)  # W_uv
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The per-token cache ``c = W_dkv x``, shape ``(B, L, d_latent)``."""
        _check_x(x, self.d_model)
        return self.kv_down(x)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                *, causal: bool = False, need_weights: bool = False, head_mask: Optional[torch.Tensor] = None):
        """As :meth:`MultiHeadAttention.forward`, with keys/values expanded from the latent."""
        _check_x(x, self.d_model)
        c = self.latent(x if context is None else context)  # (B, Lk, d_latent)
        q = _split(self.q_proj(x), self.n_heads)  # (B, H, Lq, d_head)
        k = _split(self.k_up(c), self.n_heads)  # (B, H, Lk, d_head)
        v = _split(self.v_up(c), self.n_heads)
        o, w = scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
        out = self.o_proj(_merge(_apply_head_mask(o, head_mask, self.n_heads)))
        return (out, w) if need_weights else out

    def forward_absorbed(self, x: torch.Tensor, c: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                         *, causal: bool = False) -> torch.Tensor:
        """The same output computed on the latents: ``W_uk`` absorbed into the queries, ``W_uv`` applied last.

        ``c`` ``(B, Lk, d_latent)`` is the cache (default: ``self.latent(x)``). Keys
        and values are never expanded to ``(B, H, Lk, d_head)``.
        """
        _check_x(x, self.d_model)
        c = self.latent(x) if c is None else c
        check_tensor(c, "c", min_dim=3)
        if c.dim() != 3 or c.shape[-1] != self.d_latent or c.shape[0] != x.shape[0]:
            raise ValueError(f"c must have shape (B={x.shape[0]}, Lk, d_latent={self.d_latent}), got {tuple(c.shape)}")
        q = _split(self.q_proj(x), self.n_heads)  # (B, H, Lq, d_head)
        w_uk = self.k_up.weight.view(self.n_heads, self.head_dim, self.d_latent)  # (H, d_head, d_latent)
        w_uv = self.v_up.weight.view(self.n_heads, self.head_dim, self.d_latent)
        q_lat = q @ w_uk  # (B, H, Lq, d_latent): q^T W_uk
        c_h = c[:, None]  # (B, 1, Lk, d_latent), shared by all heads
        o_lat = scaled_dot_product_attention(q_lat, c_h, c_h, mask, causal=causal,
                                             scale=self.head_dim ** -0.5)  # (B, H, Lq, d_latent)
        o = o_lat @ w_uv.transpose(-2, -1)  # (B, H, Lq, d_head)
        return self.o_proj(_merge(o))

    def kv_cache_bytes_per_token(self, bytes_per_elem: int = 2) -> int:
        """Bytes this layer caches per token: ``d_latent * bytes_per_elem``."""
        return mla_cache_bytes_per_token(self.d_latent, bytes_per_elem=bytes_per_elem)


def kv_cache_bytes_per_token(n_kv_heads: int, head_dim: int, *, n_layers: int = 1, bytes_per_elem: int = 2) -> int:
    """KV-cache bytes per token for MHA/GQA/MQA: ``2 (K and V) * n_layers * n_kv_heads * head_dim * bytes``."""
    for name, v in (("n_kv_heads", n_kv_heads), ("head_dim", head_dim), ("n_layers", n_layers),
                    ("bytes_per_elem", bytes_per_elem)):
        check_positive_int(v, name)
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_elem


def mla_cache_bytes_per_token(d_latent: int, *, d_rope: int = 0, n_layers: int = 1, bytes_per_elem: int = 2) -> int:
    """MLA cache bytes per token: ``n_layers * (d_latent + d_rope) * bytes`` (``d_rope``: a decoupled RoPE key)."""
    for name, v in (("d_latent", d_latent), ("n_layers", n_layers), ("bytes_per_elem", bytes_per_elem)):
        check_positive_int(v, name)
    if isinstance(d_rope, bool) or not isinstance(d_rope, int) or d_rope < 0:
        raise ValueError(f"d_rope must be a non-negative int, got {d_rope!r}")
    return n_layers * (d_latent + d_rope) * bytes_per_elem


@torch.no_grad()
def single_head(mha: MultiHeadAttention, h: int) -> MultiHeadAttention:
    """A one-head :class:`MultiHeadAttention` built from head ``h``'s slices of ``mha``.

    Its output equals ``mha`` with every head but ``h`` removed (``head_mask`` one-hot at
    ``h``), up to the output bias.
    """
    if not isinstance(mha, MultiHeadAttention):
        raise TypeError(f"mha must be a MultiHeadAttention, got {type(mha).__name__}")
    if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < mha.n_heads:
        raise ValueError(f"h must be a head index in [0, {mha.n_heads}), got {h!r}")
    d, g = mha.head_dim, h // mha.group_size
    bias = mha.q_proj.bias is not None
    one = MultiHeadAttention(mha.d_model, 1, head_dim=d, bias=bias).to(mha.q_proj.weight)
    rows_q, rows_kv = slice(h * d, (h + 1) * d), slice(g * d, (g + 1) * d)
    one.q_proj.weight.copy_(mha.q_proj.weight[rows_q])
    one.k_proj.weight.copy_(mha.k_proj.weight[rows_kv])
    one.v_proj.weight.copy_(mha.v_proj.weight[rows_kv])
    one.o_proj.weight.copy_(mha.o_proj.weight[:, rows_q])
    if bias:
        one.q_proj.bias.copy_(mha.q_proj.bias[rows_q])
        one.k_proj.bias.copy_(mha.k_proj.bias[rows_kv])
        one.v_proj.bias.copy_(mha.v_proj.bias[rows_kv])
        one.o_proj.bias.copy_(mha.o_proj.bias)
    return one


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def greedy_prune(evaluate, n_layers: int, n_heads: int) -> tuple[list[tuple[int, int]], list[float]]:
    """Remove every head one at a time, each time the one whose removal leaves the best score.

    ``evaluate`` maps a ``(n_layers, n_heads)`` float mask (1 = keep, 0 = removed) to a
    number (higher is better). Returns ``(order, scores)``: the removed ``(layer, head)``
    pairs in removal order, and ``scores[i]`` = the score after the first ``i + 1``
    removals. Ties go to the first head in row-major order. Costs
    ``n (n + 1) / 2`` evaluations for ``n = n_layers * n_heads`` heads.
    """
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    check_positive_int(n_layers, "n_layers")
    check_positive_int(n_heads, "n_heads")
    mask = torch.ones(n_layers, n_heads)
    order, scores = [], []
    for _ in range(n_layers * n_heads):
        best = None
        for layer, head in mask.nonzero().tolist():  # remaining heads, row-major
            trial = mask.clone()
            trial[layer, head] = 0
            score = float(evaluate(trial))
            if best is None or score > best[0]:
                best = (score, layer, head)
        score, layer, head = best
        mask[layer, head] = 0
        order.append((layer, head))
        scores.append(score)
    return order, scores
