"""Argument checks shared by attnlib's public functions.

Every public function in attnlib validates its inputs here so that a wrong
shape or dtype fails *at the call*, with a message that names the argument,
what was expected and what arrived, instead of deep inside a matmul.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

__all__ = ["check_tensor", "check_qkv", "check_mask", "resolve_scale", "check_positive_int"]


def check_tensor(x, name: str, *, min_dim: int = 1, floating: bool = True) -> None:
    """Raise if ``x`` is not a tensor with at least ``min_dim`` dims (and floating, if asked)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimensions (..., L, d), got shape {tuple(x.shape)}"
        )
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_qkv(q, k, v) -> None:
    """Validate the (..., Lq, d), (..., Lk, d), (..., Lk, dv) convention of attnlib.

    Leading (batch / head) dimensions must broadcast against each other.
    """
    check_tensor(q, "q", min_dim=2)
    check_tensor(k, "k", min_dim=2)
    check_tensor(v, "v", min_dim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share the last (feature) dimension: q has shape {tuple(q.shape)}, "
            f"k has shape {tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same sequence length (dimension -2): k has shape "
            f"{tuple(k.shape)}, v has shape {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            "the leading (batch, head) dimensions of q, k and v must broadcast: got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        ) from None


def check_mask(mask, lq: int, lk: int, name: str = "mask") -> None:
    """A mask is boolean (True = attend) and broadcastable to (..., Lq, Lk)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a boolean torch.Tensor (True = attend), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool (True = attend), got {mask.dtype}")
    if mask.dim() < 2:
        raise ValueError(
            f"{name} must be broadcastable to (..., Lq, Lk) = (..., {lq}, {lk}) and have at least "
            f"2 dimensions, got shape {tuple(mask.shape)}"
        )
    if mask.shape[-2] not in (1, lq) or mask.shape[-1] not in (1, lk):
        raise ValueError(
            f"{name} must be broadcastable to (..., Lq, Lk) = (..., {lq}, {lk}), "
            f"got shape {tuple(mask.shape)}"
        )


def resolve_scale(scale: Optional[float], head_dim: int) -> float:
    """Return ``scale`` or the default 1/sqrt(head_dim); reject non-finite or non-positive values.

    Any real number is accepted (Python or NumPy), as a float; bools and tensors are not."""
    if head_dim <= 0:
        raise ValueError(f"the head dimension (last dim of q) must be positive, got {head_dim}")
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    try:
        value = float(scale)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"scale must be a finite positive number, got {str(scale)[:40]}")
    return value


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int; raise unless it is a positive integer (Python or NumPy; bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)
