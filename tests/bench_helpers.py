"""Helpers for the benchmark harness's CPU tests (no imports beyond the standard library: the Triton 3.6
compatibility run imports this too)."""

from __future__ import annotations

import time


def cpu_timer(fn, *, warmup, rep, grad_to_none=None):
    """Stands in for do_bench on a CPU: one timed call (the harness logic, not the number, is tested)."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3
