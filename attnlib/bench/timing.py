"""GPU timing for the benchmarks: ``triton.testing.do_bench`` medians, and TFLOP/s from them.

``do_bench`` times a callable with CUDA events after a warm-up, repeats it for
about ``rep`` milliseconds (flushing the L2 cache between runs) and returns the
median. FLOPs follow :func:`attnlib.bench.attention_flops` (the FlashAttention
papers' convention: forward ``4*B*H*Lq*Lk*D``, halved when causal; forward+backward
3.5x that), so TFLOP/s compare across implementations doing the same work.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

from .flops import attention_flops

__all__ = ["bench_ms", "tflops", "attention_tflops"]


def bench_ms(fn: Callable[[], object], *, warmup: int = 25, rep: int = 100,
             grad_to_none: Optional[Sequence] = None) -> float:
    """Median milliseconds of ``fn()`` on the current CUDA device (``warmup``/``rep`` in ms)."""
    import torch
    from triton.testing import do_bench

    if not torch.cuda.is_available():
        raise RuntimeError("bench_ms times CUDA kernels: no CUDA device is available")
    return float(do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none, return_mode="median"))


def tflops(flops: float, ms: float) -> float:
    """TFLOP/s of ``flops`` floating-point operations done in ``ms`` milliseconds."""
    if ms <= 0:
        raise ValueError(f"ms must be positive, got {ms}")
    return flops / (ms * 1e-3) / 1e12


def attention_tflops(ms: float, batch: int, heads: int, lq: int, lk: int, head_dim: int, *,
                     causal: bool = False, mode: str = "fwd") -> float:
    """TFLOP/s of one attention call of the given shape that took ``ms`` milliseconds."""
    return tflops(attention_flops(batch, heads, lq, lk, head_dim, causal=causal, mode=mode), ms)


T = TypeVar("T")


def progress(items: Iterable[T], label: str, *, describe: Callable[[T], str] = str, stream=None) -> Iterator[T]:
    """Yield ``items``, printing ``[attnlib.bench] label i/n: item (elapsed)`` as each one starts and a final
    ``label: n items in t s`` line, so a long suite shows where it is (one line per item, flushed at once)."""
    items = list(items)
    out = stream or sys.stdout
    start = time.perf_counter()
    for i, item in enumerate(items, 1):
        print(f"[attnlib.bench] {label} {i}/{len(items)}: {describe(item)} ({time.perf_counter() - start:.0f} s)",
              file=out, flush=True)
        yield item
    print(f"[attnlib.bench] {label}: {len(items)} items in {time.perf_counter() - start:.0f} s", file=out, flush=True)
