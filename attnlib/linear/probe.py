"""The largest single allocation a CPU computation makes, measured with ``torch.profiler``.

Used to *verify* that an O(L)-memory algorithm (causal linear attention by prefix sums)
never materialises an ``(L, L)`` matrix: run it at an ``L`` where such a matrix would exceed a
budget, and compare the largest number of bytes any one operator allocated with the budget.
``torch.profiler.profile(profile_memory=True)`` records, for each operator event, the bytes it
allocated net of what it freed (``cpu_memory_usage``, children included); the maximum over the
events bounds the largest tensor created from below and, for a single big allocation, equals it.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["largest_cpu_allocation"]


def largest_cpu_allocation(fn: Callable, *args, **kwargs) -> tuple[int, str, object]:
    """Run ``fn(*args, **kwargs)`` on the CPU under the profiler; return ``(bytes, operator, result)``.

    ``bytes`` is the largest net allocation of one operator event (0 if nothing was allocated),
    ``operator`` its name (e.g. ``"aten::mm"``).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn(*args, **kwargs)
    best, name = 0, ""
    for event in prof.events():
        if event.cpu_memory_usage > best:
            best, name = int(event.cpu_memory_usage), event.name
    return best, name, result
