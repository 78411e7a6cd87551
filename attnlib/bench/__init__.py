"""Benchmarking helpers: FLOP counts here; GPU timing harnesses live in submodules.

``python -m attnlib.bench`` is the benchmark entry point (see ``__main__.py``).
"""

from .flops import attention_flops

__all__ = ["attention_flops"]
