r"""Incremental decoding with a key/value cache: prefill once, then one token per step.

A causal Transformer's output at position :math:`t` depends on tokens :math:`\le t` only,
and each layer's keys and values at position :math:`s` do not change once computed. So
decoding can **prefill** the prompt in one forward pass, caching every layer's keys and
values, and then run each new token alone against the cache:

.. math:: o_t = \operatorname{softmax}\!\big(q_t K_{\le t}^\top / \sqrt d\big)\, V_{\le t},
          \qquad K_{\le t} = [K_{< t};\, k_t].

Without eviction this gives exactly the logits of the full causal forward; each step
costs :math:`O(t)` instead of :math:`O(t^2)` and reads the whole cache once (why decoding
is memory-bound; seed *Fast Transformer Decoding: One Write-Head is All You Need*).
A cache policy (:mod:`attnlib.kv.policies`) may evict cached tokens after every step.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..validation import check_positive_int, check_tensor, resolve_scale
from .cache import KVCache

__all__ = ["make_caches", "decode_logits", "incremental_decode", "grouped_decode_attention"]


def grouped_decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                             scale: Optional[float] = None) -> torch.Tensor:
    """New queries ``q (B, H, T, D)`` against a whole grouped cache ``keys, values (B, Hkv, n, D)``: ``(B, H, T, D)``.

    Query head ``h`` reads key/value head ``h // (H / Hkv)``. The ``G = H / Hkv`` query heads of a group
    are stacked as ``G * T`` rows against their one key/value head, so each cached element is read once
    per step (``repeat_interleave`` would copy the cache ``G`` times). No mask: every query sees every
    cached key (one decoding step).
    """
    check_tensor(q, "q", min_dim=4)
    check_tensor(keys, "keys", min_dim=4)
    b, h, t, d = q.shape
    hkv = keys.shape[1]
    if keys.shape[0] != b or keys.shape[-1] != d or h % hkv or values.shape[:3] != keys.shape[:3]:
        raise ValueError(f"need q (B, H, T, D) and keys, values (B, Hkv, n, *) with H divisible by Hkv: got q "
                         f"{tuple(q.shape)}, keys {tuple(keys.shape)}, values {tuple(values.shape)}")
    scale = resolve_scale(scale, d)
    qg = q.reshape(b, hkv, (h // hkv) * t, d)  # (B, Hkv, G*T, D): heads of a group are consecutive
    w = torch.softmax((qg @ keys.transpose(-2, -1)) * scale, dim=-1)  # (B, Hkv, G*T, n)
    return (w @ values).reshape(b, h, t, values.shape[-1])


def make_caches(model, batch: int, max_len: int, *, dtype: Optional[torch.dtype] = None, device=None) -> list:
    """One empty :class:`KVCache` per layer of an :class:`attnlib.models.TinyTransformer`."""
    cfg = model.config
    n_kv = cfg.n_kv_heads or cfg.n_heads
    p = next(model.parameters())
    return [KVCache(batch, n_kv, max_len, cfg.d_model // cfg.n_heads, dtype=dtype or p.dtype,
                    device=device or p.device) for _ in range(cfg.n_layers)]


def _step(model, tokens, caches, start, policy):
    masks = None if policy is None else [policy.attend_mask(i, c) for i, c in enumerate(caches)]
    logits, maps = model.forward_cached(tokens, caches, start, key_masks=masks)
    if policy is not None:
        for i, (cache, weights) in enumerate(zip(caches, maps)):
            policy.update(i, cache, weights)
    return logits


def _check_prompt(model, tokens, name):
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[1] == 0:
        raise ValueError(f"{name} must be an integer tensor (B, L) with L >= 1, got "
                         f"{tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")


@torch.no_grad()
def decode_logits(model, tokens: torch.Tensor, *, prefill: int = 1, cache_policy=None) -> torch.Tensor:
    """Teacher-forced cached decoding: logits ``(B, L, V)`` of ``tokens (B, L)``.

    The first ``prefill`` tokens go in one forward pass; the rest one at a time, each reading the cache
    (after ``cache_policy`` has evicted from it, if one is given). With ``cache_policy=None`` the result
    equals ``model(tokens)`` up to float rounding.
    """
    _check_prompt(model, tokens, "tokens")
    check_positive_int(prefill, "prefill")
    b, length = tokens.shape
    prefill = min(prefill, length)
    if cache_policy is not None:
        cache_policy.reset()
    caches = make_caches(model, b, length)
    out = [_step(model, tokens[:, :prefill], caches, 0, cache_policy)]
    for t in range(prefill, length):
        out.append(_step(model, tokens[:, t:t + 1], caches, t, cache_policy))
    return torch.cat(out, dim=1)


@torch.no_grad()
def incremental_decode(model, prompt: torch.Tensor, steps: int, *, cache_policy=None):
    """Greedy generation: prefill ``prompt (B, P)``, then ``steps`` tokens one at a time from the cache.

    Returns ``(tokens (B, P + steps), logits (B, steps, V))``: the prompt followed by the generated
    tokens, and the logits each generated token was chosen from (the argmax).
    """
    _check_prompt(model, prompt, "prompt")
    check_positive_int(steps, "steps")
    b, p = prompt.shape
    if cache_policy is not None:
        cache_policy.reset()
    caches = make_caches(model, b, p + steps)
    logits = _step(model, prompt, caches, 0, cache_policy)[:, -1:]  # (B, 1, V)
    tokens, out = [prompt], []
    for t in range(steps):
        out.append(logits)
        nxt = logits.argmax(-1)  # (B, 1)
        tokens.append(nxt)
        if t + 1 < steps:
            logits = _step(model, nxt, caches, p + t, cache_policy)
    return torch.cat(tokens, dim=1), torch.cat(out, dim=1)
