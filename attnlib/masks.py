"""Boolean attention masks, with the attnlib convention **True = attend**.

Masks are broadcastable to ``(..., Lq, Lk)``. Two masks combine with ``&``.

Causal alignment
----------------
When ``Lq != Lk`` there are two ways to line queries up with keys. attnlib uses
the *bottom-right* alignment (as FlashAttention 2 and
``torch.nn.attention.bias.causal_lower_right``): the last query sits at the
last key, so query ``i`` may attend to key ``j`` iff ``j <= i + (Lk - Lq)``.
This is what decoding with a KV cache needs: one new query (``Lq = 1``) sees
the whole cache. For ``Lq == Lk`` it is the usual lower-triangular mask.
If ``Lq > Lk`` the first ``Lq - Lk`` queries have no key to attend to; their
rows are fully masked and attention returns zeros there.
"""

from __future__ import annotations

import torch

from .validation import check_positive_int

__all__ = ["causal_mask", "padding_mask", "sliding_window_mask"]


def causal_mask(lq: int, lk: int, *, device=None) -> torch.Tensor:
    """Bottom-right aligned causal mask of shape (lq, lk): ``mask[i, j] = j <= i + lk - lq``."""
    check_positive_int(lq, "lq")
    check_positive_int(lk, "lk")
    i = torch.arange(lq, device=device)[:, None]  # (lq, 1)
    j = torch.arange(lk, device=device)[None, :]  # (1, lk)
    return j <= i + (lk - lq)


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Key-padding mask of shape (B, max_len): ``mask[b, j] = j < lengths[b]``.

    To use it for attention scores of shape (B, H, Lq, Lk), index it as
    ``mask[:, None, None, :]`` (B, 1, 1, Lk).
    """
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1:
        raise ValueError(f"lengths must be a 1-D integer tensor of shape (B,), got {lengths!r}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    check_positive_int(max_len, "max_len")
    if (lengths < 0).any() or (lengths > max_len).any():
        raise ValueError(f"lengths must lie in [0, max_len={max_len}], got {lengths.tolist()}")
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def sliding_window_mask(lq: int, lk: int, window: int, *, device=None) -> torch.Tensor:
    """Causal mask that also forgets keys more than ``window - 1`` positions back.

    ``mask[i, j] = 0 <= (i + lk - lq) - j < window`` (bottom-right aligned, like
    :func:`causal_mask`); ``window >= lk`` gives the plain causal mask.
    """
    check_positive_int(window, "window")
    i = torch.arange(lq, device=device)[:, None] + (lk - lq)  # (lq, 1) aligned query positions
    j = torch.arange(lk, device=device)[None, :]  # (1, lk)
    return causal_mask(lq, lk, device=device) & (i - j < window)
