r"""A small causal Transformer to train on synthetic tasks, and a seeded training loop.

The model is a standard pre-norm decoder (Vaswani et al., 2017, and GPT-style
decoders; background, not seeds):

.. math::
    h_0 = \operatorname{embed}(x) \;(+\text{absolute positions}),\quad
    h \leftarrow h + \operatorname{Attn}(\operatorname{norm}(h)),\quad
    h \leftarrow h + \operatorname{MLP}(\operatorname{norm}(h)),\quad
    \text{logits} = W \operatorname{norm}(h).

Three parts are pluggable, so later labs can swap one and keep the rest:

* ``position``: a name from :data:`attnlib.position.POSITION_SCHEMES` or a
  :class:`attnlib.position.PositionScheme` (where position enters: input, q/k, scores, values);
* ``normalizer``: turns scores into weights along the last dim, ``normalizer(scores, dim=-1)``
  (default: softmax; e.g. a sparsemax). Masked scores reach it as ``-1e9`` and its
  output is multiplied by the mask;
* ``attention``: the whole map ``(q, k, v, *, bias, mask, normalizer, scale) -> (out, weights)``
  (default :func:`softmax_attention`); ``q, k, v`` are ``(B, H, L, dh)``, ``bias`` is
  ``None`` or broadcastable to ``(B, H, L, L)``, ``mask`` is the ``(L, L)`` causal mask (True = attend).

:func:`train_model` trains any model that maps tokens ``(B, L)`` to logits
``(B, L, V)`` with cross-entropy on the targets that are not ``-100`` (the
convention of :mod:`attnlib.data`), seeded, with a tqdm progress bar, and returns
the loss history. :func:`evaluate` gives token and whole-sequence accuracy.

``n_kv_heads`` (default ``n_heads``) makes the attention grouped-query (GQA) or, with 1,
multi-query (MQA; seed *Fast Transformer Decoding: One Write-Head is All You Need*).
:meth:`TinyTransformer.forward_cached` runs new tokens against one key/value cache per layer
(:mod:`attnlib.kv`); without eviction it reproduces :meth:`TinyTransformer.forward`.

Sizes: ``d_model=32..64``, two layers and sequences of a few dozen tokens train in
seconds on a laptop CPU.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

from .core import masked_softmax
from .masks import causal_mask
from .position import PositionScheme, RotaryPosition, apply_rope, make_position, sinusoidal_encoding
from .validation import check_positive_int

__all__ = [
    "TransformerConfig",
    "softmax_attention",
    "CausalSelfAttention",
    "TinyTransformer",
    "LSTMLanguageModel",
    "train_model",
    "evaluate",
    "IGNORE_INDEX",
]

IGNORE_INDEX = -100  # targets with this value are not scored (as in F.cross_entropy)


@dataclass
class TransformerConfig:
    """Hyper-parameters of :class:`TinyTransformer` (all have small CPU-friendly defaults)."""

    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: Optional[int] = None  # key/value heads (GQA; 1 = MQA); None = n_heads (MHA)
    mlp_ratio: int = 4
    position: str = "rope"  # see attnlib.position.POSITION_SCHEMES
    norm: str = "layer"  # "layer", "rms" or "none"
    max_len: int = 512  # rows of the learned absolute table
    max_distance: int = 16  # Shaw's clipping distance K
    n_positions: int = 16  # CoPE's number of position embeddings
    rope_base: float = 10000.0

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "mlp_ratio", "max_len"):
            check_positive_int(getattr(self, name), name)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.n_kv_heads is not None:
            check_positive_int(self.n_kv_heads, "n_kv_heads")
            if self.n_heads % self.n_kv_heads:
                raise ValueError(f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads}")
        if self.norm not in ("layer", "rms", "none"):
            raise ValueError(f"norm must be 'layer', 'rms' or 'none', got {self.norm!r}")


def softmax_attention(q, k, v, *, bias=None, mask=None, normalizer=None, scale=None):
    """Default attention map: ``weights = normalizer(scale * q k^T + bias)`` over allowed keys; ``out = weights v``.

    ``q, k, v``: ``(B, H, L, dh)``; returns ``(out (B, H, L, dh), weights (B, H, L, L))``.
    With ``normalizer=None`` it is :func:`attnlib.core.masked_softmax` (exact zeros on masked keys).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, L, L)
    if bias is not None:
        scores = scores + bias
    if normalizer is None:
        weights = masked_softmax(scores, mask)
    elif mask is None:
        weights = normalizer(scores, dim=-1)
    else:
        weights = normalizer(scores.masked_fill(~mask, -1e9), dim=-1) * mask
    return weights @ v, weights


def _norm(kind: str, d: int) -> nn.Module:
    return {"layer": lambda: nn.LayerNorm(d), "rms": lambda: nn.RMSNorm(d), "none": nn.Identity}[kind]()


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention whose position scheme, normalizer and attention map are pluggable.

    ``n_kv_heads`` (default ``n_heads``) key/value heads are shared by groups of query heads (GQA; 1 is MQA):
    query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``. :meth:`forward_cached`
    runs new tokens against a key/value cache (:class:`attnlib.kv.KVCache`).
    """

    def __init__(self, d_model: int, n_heads: int, position: PositionScheme,
                 attention: Optional[Callable] = None, normalizer: Optional[Callable] = None,
                 n_kv_heads: Optional[int] = None):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        self.qkv = nn.Linear(d_model, d_model + 2 * self.n_kv_heads * self.head_dim)  # [q | k | v]
        self.proj = nn.Linear(d_model, d_model)
        self.position = position  # shared by all layers (one set of position parameters per model)
        self.attention = attention or softmax_attention
        self.normalizer = normalizer

    def _project(self, x: torch.Tensor):
        """(B, L, d) -> q (B, H, L, dh), k and v (B, Hkv, L, dh)."""
        b, length, d = x.shape
        qkv = self.qkv(x)
        kv = self.n_kv_heads * self.head_dim
        q = qkv[..., :d].view(b, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = qkv[..., d:d + kv].view(b, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = qkv[..., d + kv:].view(b, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        """(B, Hkv, L, dh) -> (B, H, L, dh): each key/value head serves its group of query heads."""
        group = self.n_heads // self.n_kv_heads
        return t if group == 1 else t.repeat_interleave(group, dim=1)

    def forward(self, x: torch.Tensor):
        b, length, d = x.shape
        q, k, v = self._project(x)
        k, v = self._expand(k), self._expand(v)  # (B, H, L, dh)
        q, k = self.position.rotate(q, k)
        mask = causal_mask(length, length, device=x.device)  # (L, L)
        scale = 1.0 / math.sqrt(self.head_dim)
        scores = ((q @ k.transpose(-2, -1)) * scale).masked_fill(~mask, float("-inf"))  # for score_bias only
        bias = self.position.score_bias(q, k, scores)
        out, weights = self.attention(q, k, v, bias=bias, mask=mask, normalizer=self.normalizer, scale=scale)
        extra = self.position.value_term(weights)
        if extra is not None:
            out = out + extra
        return self.proj(out.transpose(1, 2).reshape(b, length, d)), weights

    def forward_cached(self, x: torch.Tensor, cache, start: int, key_mask: Optional[torch.Tensor] = None):
        """Attend ``T`` new tokens ``x (B, T, d)`` at positions ``start..start+T-1`` to the cache and themselves.

        The new keys and values (rotated at their own positions with RoPE) are appended to ``cache`` (any object
        with ``append(k, v) -> (keys, values)`` on ``(B, Hkv, T, dh)``); new token ``i`` sees cached key ``j`` iff
        ``j <= i + len - T`` (bottom-right causal). ``key_mask (B, Hkv, len)`` (True = attend) hides cached
        tokens from some heads. Returns ``(out (B, T, d), weights (B, H, T, len))``.
        """
        b, t, d = x.shape
        q, k, v = self._project(x)
        if isinstance(self.position, RotaryPosition):
            q, k = apply_rope(q, start, self.position.base), apply_rope(k, start, self.position.base)
        keys, values = cache.append(k, v)  # (B, Hkv, len, dh)
        n = keys.shape[2]
        mask = causal_mask(t, n, device=x.device)  # (T, len)
        if key_mask is not None:
            mask = mask & self._expand(key_mask[:, :, None, :])  # (B, H, T, len)
        scale = 1.0 / math.sqrt(self.head_dim)
        out, weights = self.attention(q, self._expand(keys), self._expand(values), bias=None, mask=mask,
                                      normalizer=self.normalizer, scale=scale)
        return self.proj(out.transpose(1, 2).reshape(b, t, d)), weights


class _Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, position, attention, normalizer):
        super().__init__()
        self.norm1, self.norm2 = _norm(cfg.norm, cfg.d_model), _norm(cfg.norm, cfg.d_model)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, position, attention, normalizer, cfg.n_kv_heads)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model))

    def forward(self, x):
        a, weights = self.attn(self.norm1(x))
        x = x + a
        return x + self.mlp(self.norm2(x)), weights

    def forward_cached(self, x, cache, start, key_mask=None):
        a, weights = self.attn.forward_cached(self.norm1(x), cache, start, key_mask)
        x = x + a
        return x + self.mlp(self.norm2(x)), weights


class TinyTransformer(nn.Module):
    """A small causal (decoder-only) Transformer: tokens ``(B, L)`` -> logits ``(B, L, vocab_size)``.

    Args:
        config: a :class:`TransformerConfig`.
        position: override ``config.position`` with a ready :class:`~attnlib.position.PositionScheme`.
        attention: the attention map (see the module docstring); one callable shared by all layers.
        normalizer: scores -> weights along ``dim=-1`` (default softmax).

    ``model(tokens, return_attention=True)`` also returns the list of per-layer
    attention weights, each ``(B, H, L, L)``. Initialise under
    :func:`attnlib.utils.seed_everything` for reproducible weights.
    """

    def __init__(self, config: TransformerConfig, *, position: Union[PositionScheme, None] = None,
                 attention: Optional[Callable] = None, normalizer: Optional[Callable] = None):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        if position is not None and not isinstance(position, PositionScheme):
            raise TypeError(f"position must be a PositionScheme or None, got {type(position).__name__}")
        self.config = config
        self.position = position or make_position(
            config.position, d_model=config.d_model, n_heads=config.n_heads, max_len=config.max_len,
            max_distance=config.max_distance, n_positions=config.n_positions, base=config.rope_base)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(_Block(config, self.position, attention, normalizer)
                                    for _ in range(config.n_layers))
        self.norm = _norm(config.norm, config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, tokens: torch.Tensor, *, return_attention: bool = False):
        _check_tokens(tokens, self.config.vocab_size)
        h = self.position.embed(self.embed(tokens))  # (B, L, d)
        maps = []
        for block in self.blocks:
            h, weights = block(h)
            maps.append(weights)
        logits = self.head(self.norm(h))  # (B, L, V)
        return (logits, maps) if return_attention else logits

    #: position schemes :meth:`forward_cached` supports (the others need the full score matrix)
    CACHED_POSITIONS = ("none", "rope", "sinusoidal", "learned")

    def forward_cached(self, tokens: torch.Tensor, caches, start: int, *, key_masks=None):
        """Logits of ``T`` new tokens ``(B, T)`` at positions ``start..start+T-1``, reading and extending ``caches``.

        ``caches``: one key/value cache per layer (:class:`attnlib.kv.KVCache` with ``n_kv_heads`` heads of
        ``d_model // n_heads`` features); ``key_masks``: ``None`` or one ``(B, Hkv, len)`` mask (or ``None``) per
        layer. Without eviction, feeding a sequence in pieces gives the logits of :meth:`forward`.
        Returns ``(logits (B, T, V), [weights (B, H, T, len) per layer])``.
        """
        _check_tokens(tokens, self.config.vocab_size)
        name = getattr(self.position, "name", "?")
        if name not in self.CACHED_POSITIONS:
            raise NotImplementedError(f"forward_cached supports positions {self.CACHED_POSITIONS}, got {name!r}")
        if len(caches) != len(self.blocks):
            raise ValueError(f"caches must hold one cache per layer ({len(self.blocks)}), got {len(caches)}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a non-negative int (the position of the first new token), got {start!r}")
        t = tokens.shape[1]
        x = self.embed(tokens)  # (B, T, d)
        if name == "sinusoidal":
            x = x + sinusoidal_encoding(start + t, self.config.d_model, self.position.base, device=x.device,
                                        dtype=x.dtype)[start:]
        elif name == "learned":
            if start + t > self.position.max_len:
                raise ValueError(f"position {start + t - 1} exceeds the learned table's max_len={self.position.max_len}")
            x = x + self.position.table[start:start + t]
        masks = key_masks if key_masks is not None else [None] * len(self.blocks)
        maps = []
        for block, cache, km in zip(self.blocks, caches, masks):
            x, weights = block.forward_cached(x, cache, start, km)
            maps.append(weights)
        return self.head(self.norm(x)), maps


class LSTMLanguageModel(nn.Module):
    """A recurrent baseline with the same interface: tokens ``(B, L)`` -> logits ``(B, L, V)``."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 1):
        super().__init__()
        self.vocab_size = check_positive_int(vocab_size, "vocab_size")
        self.embed = nn.Embedding(vocab_size, check_positive_int(d_model, "d_model"))
        self.lstm = nn.LSTM(d_model, d_model, num_layers=check_positive_int(n_layers, "n_layers"), batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_tokens(tokens, self.vocab_size)
        return self.head(self.lstm(self.embed(tokens))[0])


def _check_tokens(tokens, vocab_size: int) -> None:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor of shape (B, L), got {type(tokens).__name__}")
    if tokens.dim() != 2 or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be an integer tensor of shape (B, L), got {tokens.dtype} {tuple(tokens.shape)}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"tokens must lie in [0, vocab_size={vocab_size}), got range "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)  # (B, L, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE_INDEX)


def train_model(model: nn.Module, batch_fn: Callable[[torch.Generator], tuple], *, steps: int,
                lr: float = 3e-3, weight_decay: float = 0.0, seed: int = 0, grad_clip: float = 1.0,
                progress: Optional[bool] = None, desc: str = "train") -> dict:
    """Train ``model`` with AdamW and a cosine learning-rate decay; return the history.

    Args:
        model: maps tokens ``(B, L)`` to logits ``(B, L, V)``.
        batch_fn: ``batch_fn(generator) -> (x, y)``, tokens and targets ``(B, L)`` (``-100`` = not scored);
            it draws from the generator, which is seeded with ``seed``, so a run is reproducible.
        steps: number of optimizer steps.
        lr, weight_decay, grad_clip: AdamW's learning rate and weight decay; gradient-norm clip.
        seed: seeds the data generator and torch's global RNG (dropout), not the initial weights.
        progress: show a tqdm bar; ``None`` shows it only when stderr is a terminal.
        desc: the bar's label.

    Returns:
        ``{"loss": [float per step], "steps": steps, "seconds": wall time}``.
    """
    from tqdm import tqdm

    check_positive_int(steps, "steps")
    if not callable(batch_fn):
        raise TypeError(f"batch_fn must be callable, got {type(batch_fn).__name__}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    disable = (not sys.stderr.isatty()) if progress is None else (not progress)
    history, start = [], time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=disable, leave=False)
    for _ in bar:
        x, y = batch_fn(gen)
        loss = _loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        history.append(loss.item())
        if not disable:
            bar.set_postfix(loss=f"{history[-1]:.3f}", refresh=False)
    model.eval()
    return {"loss": history, "steps": steps, "seconds": time.perf_counter() - start}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy of greedy predictions on the scored targets (``y != -100``).

    Returns ``{"token": fraction of scored targets right, "sequence": fraction of rows with every
    scored target right, "loss": mean cross-entropy}``. Rows without scored targets count as right.
    """
    was_training = model.training
    model.eval()
    logits = model(x)
    scored = y != IGNORE_INDEX  # (B, L)
    right = (logits.argmax(-1) == y) | ~scored
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE_INDEX)
    model.train(was_training)
    n = int(scored.sum())
    return {"token": float((right & scored).sum()) / max(n, 1), "sequence": float(right.all(-1).float().mean()),
            "loss": float(loss)}
