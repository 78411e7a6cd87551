"""flash_attention's "auto" falls back only when a kernel cannot compile or run here (issue 32).

The TMA forward is given up for the rest of the process when it raises an error that says "this
kernel cannot compile or run on this Triton/GPU": a compilation error, too little shared memory or
too few registers, ptxas refusing the PTX, a failed MLIR pass. Every other error (out of memory, a bad argument, a misaligned pointer or
another CUDA error) is the caller's and must surface, with the fast path left on. Each kind is
raised here from a stand-in for the kernel (Triton's interpreter runs the portable kernel behind it).
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
from triton.compiler.errors import CompilationError  # noqa: E402
from triton.runtime.errors import OutOfResources, PTXASError  # noqa: E402

from attnlib.kernels import flash  # noqa: E402

CANNOT_RUN_HERE = [
    CompilationError(None, None, "unsupported layout on this target"),
    OutOfResources(262144, 232448, "shared memory"),
    PTXASError("ptxas fatal: Unresolved extern function"),
    RuntimeError("PassManager::run failed"),
]
CALLERS_ERRORS = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB"),
    ValueError("a bad argument"),
    TypeError("a bad type"),
    RuntimeError("CUDA error: misaligned address"),
    ImportError("cannot import name 'x' from 'y'"),  # the production path imports nothing at a launch
]


def _ids(errors):
    return [type(e).__name__ + (":" + str(e)[:20] if type(e) is RuntimeError else "") for e in errors]


def _raising(error):
    def run(*args, **kwargs):
        raise error
    return run


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(1, 2, 16, 16, generator=g) for _ in range(3)]


@pytest.fixture
def as_on_hopper(monkeypatch):
    monkeypatch.setattr(flash, "_tma_available", lambda q: True)
    monkeypatch.setattr(flash, "_TMA_FAILURE", None)


@pytest.mark.parametrize("error", CANNOT_RUN_HERE, ids=_ids(CANNOT_RUN_HERE))
def test_a_tma_kernel_that_cannot_run_here_falls_back_for_good(monkeypatch, as_on_hopper, inputs, error):
    q, k, v = inputs
    monkeypatch.setattr(flash, "_forward_tma", _raising(error))
    with pytest.warns(RuntimeWarning, match="TMA FlashAttention kernel failed"):
        out, _ = flash.flash_attention_forward(q, k, v)
    want, _ = flash.flash_attention_forward(q, k, v, kernel="portable")
    torch.testing.assert_close(out, want)
    assert flash._TMA_FAILURE is not None and flash._TMA_FAILURE.startswith(type(error).__name__)
    with pytest.raises(type(error)):  # an explicit kernel="tma" still raises
        flash.flash_attention_forward(q, k, v, kernel="tma")


@pytest.mark.parametrize("error", CALLERS_ERRORS, ids=_ids(CALLERS_ERRORS))
def test_the_callers_errors_surface_from_the_tma_kernel_and_leave_it_on(monkeypatch, as_on_hopper, inputs, error):
    q, k, v = inputs
    monkeypatch.setattr(flash, "_forward_tma", _raising(error))
    with pytest.raises(type(error), match=str(error)[:12]):
        flash.flash_attention_forward(q, k, v)
    assert flash._TMA_FAILURE is None  # not turned off: the next call tries the TMA kernel again
