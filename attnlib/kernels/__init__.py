"""Triton kernels: FlashAttention forward/backward, split-KV decoding, block-sparse attention.

The production path, in the order the labs build it:

* :mod:`attnlib.kernels.flash`: ``flash_attention``, its argument checks, the dispatch between the
  portable forward (``_flash_fwd``: pointer loads, any GPU and the interpreter) and the Hopper one
  (``_flash_fwd_tma``: tiles moved by tensor descriptors), the backward (``_flash_bwd``: dK/dV per
  key tile, dQ per query tile) and the autograd Function; ``_flash_config`` holds their tiles;
* :mod:`attnlib.kernels.decode`: split-KV decoding over a KV cache (lab 18);
* :mod:`attnlib.kernels.block_sparse`: attention over a block mask (lab 18);
* :mod:`attnlib.kernels.resources`: what the compiler says of a kernel for a GPU, without one;
  :mod:`attnlib.kernels.labtools`: the labs' helpers.

:mod:`attnlib.kernels.experimental` holds kernels that have not yet been shown correct and faster
on a GPU (warp-specialised and Gluon forwards, the one-pass backward); nothing above imports it.

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
