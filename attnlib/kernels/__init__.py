"""Triton kernels: FlashAttention forward/backward, split-KV decoding, block-sparse attention.

Importing :mod:`attnlib.kernels` does not import Triton; each kernel module is
loaded on first use, so the rest of attnlib works where Triton is missing.
On a CPU, set ``TRITON_INTERPRET=1`` *before* Triton is first imported to run
the kernels in Triton's interpreter (no bfloat16 there).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "flash_attention": ".flash",
    "flash_decode": ".decode",
    "block_sparse_attention": ".block_sparse",
}

__all__ = ["block_sparse_attention", "flash_attention", "flash_decode"]  # = sorted(_LAZY), spelt out for linters


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
