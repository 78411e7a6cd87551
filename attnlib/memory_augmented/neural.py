r"""The delta-rule write and a Titans-style test-time neural memory (seed: *Titans: Learning to
Memorize at Test Time*).

Delta rule: ``M <- M + eta (v - M k) k^T``; with ``eta = 1/‖k‖²`` the new ``M k`` equals ``v`` exactly.

``NeuralMemory`` is a linear map ``M`` (dv, dk) updated at test time by gradient steps on the
associative loss ``l(M) = ‖M k - v‖²`` (mean over the stored pairs) with momentum and decay:
``S <- momentum S - lr grad``, ``M <- (1 - decay) M + S``. From the abstract: a neural memory that
learns to memorise at test time, with attention as short-term memory. Chosen here (not from the
abstract): a linear memory, full-batch gradient steps, constant lr/momentum/decay.
"""

from __future__ import annotations

import torch

from ..validation import check_tensor

__all__ = ["delta_rule_write", "neural_memory_step", "NeuralMemory"]


def delta_rule_write(m: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eta=None) -> torch.Tensor:
    """One delta-rule write of (k, v): m (..., dv, dk), k (..., dk), v (..., dv); eta default 1/‖k‖²."""
    check_tensor(m, "m", min_dim=2)
    if m.shape[-1] != k.shape[-1] or m.shape[-2] != v.shape[-1]:
        raise ValueError(f"m (..., dv, dk) must match k (..., dk) and v (..., dv): got m {tuple(m.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if eta is None:
        eta = 1.0 / (k * k).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    err = v - (m @ k[..., None])[..., 0]  # (..., dv)
    return m + eta * err[..., :, None] * k[..., None, :]


def _check_rates(lr, momentum, decay) -> None:
    if not 0 <= decay < 1 or not 0 <= momentum < 1 or not lr > 0:
        raise ValueError(f"need lr > 0, 0 <= momentum < 1, 0 <= decay < 1: got lr={lr}, "
                         f"momentum={momentum}, decay={decay}")


def neural_memory_step(m, s, k, v, lr: float, momentum: float = 0.0, decay: float = 0.0):
    """One test-time step of a linear memory on ``l(M) = mean_i ‖M k_i - v_i‖²``: returns ``(M', S')``.

    m, s: (..., dv, dk) memory and momentum; k: (..., N, dk), v: (..., N, dv) the pairs to memorise.
    ``S' = momentum S - lr grad l(M)``, ``M' = (1 - decay) M + S'``, ``grad l = 2/N (M K^T - V^T) K``.
    """
    _check_rates(lr, momentum, decay)
    for name, x in (("m", m), ("s", s), ("k", k), ("v", v)):
        check_tensor(x, name, min_dim=2)
    if (m.shape != s.shape or k.shape[-1] != m.shape[-1] or v.shape[-1] != m.shape[-2]
            or k.shape[-2] != v.shape[-2]):
        raise ValueError(f"expected m, s (..., dv, dk), k (..., N, dk), v (..., N, dv): got m {tuple(m.shape)}, "
                         f"s {tuple(s.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    err = k @ m.transpose(-2, -1) - v  # (..., N, dv)
    grad = 2 * err.transpose(-2, -1) @ k / k.shape[-2]  # (..., dv, dk)
    s = momentum * s - lr * grad
    return (1 - decay) * m + s, s


class NeuralMemory:
    """Linear test-time memory with momentum and decay; ``step(k, v)`` does one update and returns the loss."""

    def __init__(self, dk: int, dv: int, *, lr: float = 0.1, momentum: float = 0.0, decay: float = 0.0,
                 dtype=torch.float32):
        _check_rates(lr, momentum, decay)
        self.m = torch.zeros(dv, dk, dtype=dtype)
        self.s = torch.zeros_like(self.m)
        self.lr, self.momentum, self.decay = lr, momentum, decay

    def loss(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return ((k @ self.m.T - v) ** 2).sum(-1).mean()

    def step(self, k: torch.Tensor, v: torch.Tensor) -> float:
        check_tensor(k, "k", min_dim=2)
        if k.shape[-1] != self.m.shape[1] or v.shape[-1] != self.m.shape[0] or k.shape[:-1] != v.shape[:-1]:
            raise ValueError(f"k (N, {self.m.shape[1]}) and v (N, {self.m.shape[0]}) expected: got "
                             f"k {tuple(k.shape)}, v {tuple(v.shape)}")
        self.m, self.s = neural_memory_step(self.m, self.s, k, v, self.lr, self.momentum, self.decay)
        return float(self.loss(k, v))

    def read(self, q: torch.Tensor) -> torch.Tensor:
        return q @ self.m.T
