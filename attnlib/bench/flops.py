r"""FLOP counts for attention, the convention of the FlashAttention papers.

Forward: two matmuls, :math:`QK^\top` and :math:`PV`, each :math:`2 \cdot L_q L_k D`
multiply-adds counted as 2 FLOPs, per batch and head:

.. math:: F_\text{fwd} = 4\,B\,H\,L_q\,L_k\,D,

halved when causal (about half the score matrix is masked; this is the usual
convention, not the exact count). The backward pass does five matmuls of the
same size, :math:`F_\text{bwd} = 2.5\,F_\text{fwd}`, so forward+backward is
:math:`3.5\,F_\text{fwd}`. The softmax's exponentials are not counted.
"""

from __future__ import annotations

from ..validation import check_positive_int

__all__ = ["attention_flops"]

_MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}


def attention_flops(batch, heads, lq, lk, head_dim, *, causal: bool = False, mode: str = "fwd") -> float:
    """FLOPs of attention: ``mode`` is ``"fwd"``, ``"bwd"`` (2.5x fwd) or ``"fwd_bwd"`` (3.5x fwd)."""
    for name, value in (("batch", batch), ("heads", heads), ("lq", lq), ("lk", lk), ("head_dim", head_dim)):
        check_positive_int(value, name)
    if mode not in _MODE_FACTOR:
        raise ValueError(f"mode must be one of {sorted(_MODE_FACTOR)}, got {mode!r}")
    fwd = 4.0 * batch * heads * lq * lk * head_dim
    if causal:
        fwd /= 2.0
    return fwd * _MODE_FACTOR[mode]
