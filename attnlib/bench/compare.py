"""How the benchmark suites and the canary compare a kernel's output with a reference.

:func:`rel_error` is the relative error in norm, ‖a − b‖ / ‖b‖ (elementwise bfloat16 comparisons
are too brittle with 8 mantissa bits), and :data:`CHECK_TOL` the most it may be for a bfloat16
output against a float32 reference. A module of its own so that the flash suite
(:mod:`attnlib.bench.flash`) and the canary (:mod:`attnlib.bench.canary`) share it without
importing each other.
"""

from __future__ import annotations

import torch

__all__ = ["CHECK_TOL", "rel_error"]

CHECK_TOL = 2e-2  # relative error (in norm) allowed for bfloat16 against a float32 reference


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float32 (``b`` the reference; a zero reference counts as norm 1e-12)."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))
