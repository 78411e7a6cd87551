"""Window memories (seed: *The Goldilocks Principle: Reading Children's Books with Explicit Memory
Representations*): each memory is a window of ``b`` consecutive tokens.

``window_memories(tokens, b)``: tokens (..., L, d) -> (..., L - b + 1, b * d), window ``i`` the
concatenation of tokens ``i .. i + b - 1``.
"""

import torch

from ..validation import check_positive_int, check_tensor

__all__ = ["window_memories"]


def window_memories(tokens: torch.Tensor, b: int) -> torch.Tensor:
    check_tensor(tokens, "tokens", min_dim=2)
    check_positive_int(b, "b")
    if b > tokens.shape[-2]:
        raise ValueError(f"b must be <= the sequence length {tokens.shape[-2]}, got b={b}")
    w = tokens.unfold(-2, b, 1)  # (..., L - b + 1, d, b)
    return w.transpose(-2, -1).flatten(-2)
