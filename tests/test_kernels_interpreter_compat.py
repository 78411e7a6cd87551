"""attnlib.kernels._interpreter_compat: Triton < 3.7's interpreter on NumPy >= 2.4.

CI has a newer Triton, where the patch must do nothing; the patch's own logic is checked
against stand-ins of both interpreter layouts (Triton 3.2-3.5 and 3.6). The same kernel
tests were run by hand with Triton 3.6 and NumPy 2.4, where they fail without the patch.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

from attnlib.kernels import _interpreter_compat  # noqa: E402
from attnlib.kernels._interpreter_compat import patch_interpreter  # noqa: E402

INTERPRET = not torch.cuda.is_available()
patch_interpreter()  # as attnlib's kernel modules and attnlib.kernels.labtools do on import


@triton.jit
def _fill_blocks(X, n, BLOCK: tl.constexpr):
    for start in range(0, n, BLOCK):  # a loop over a run-time length: what broke
        offs = start + tl.arange(0, BLOCK)
        tl.store(X + offs, offs.to(tl.float32), mask=offs < n)


def test_a_loop_over_a_run_time_length_runs():
    x = torch.full((50,), -1.0, device="cpu" if INTERPRET else "cuda")
    _fill_blocks[(1,)](x, 37, BLOCK=16)
    assert torch.equal(x[:37].cpu(), torch.arange(37.0)) and (x[37:] == -1).all()


def test_no_op_without_the_interpreter_or_on_a_fixed_triton(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert patch_interpreter() is False
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton, "__version__", "3.7.0")
    before = interpreter._patch_lang_tensor
    assert patch_interpreter() is False and interpreter._patch_lang_tensor is before


class _Handle:
    def __init__(self, data):
        self.data = data


class _Scope:
    """Stand-in of Triton 3.6's _LangPatchScope."""

    def __init__(self):
        self.changes = []

    def set_attr(self, obj, name, value):
        self.changes.append(name)
        setattr(obj, name, value)


@pytest.mark.parametrize("with_scope", [False, True], ids=["triton<=3.5", "triton3.6"])
def test_patch_wraps_both_interpreter_layouts(monkeypatch, with_scope):
    class FakeTensor:
        def __init__(self, data):
            self.handle = _Handle(np.asarray(data))

    def original(tensor, *scope):  # the old interpreter: int() of a possibly 1-D array
        fn = lambda self: int(self.handle.data)  # noqa: E731
        scope[0].set_attr(tensor, "__index__", fn) if scope else setattr(tensor, "__index__", fn)

    fake = types.SimpleNamespace(_patch_lang_tensor=original)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(triton.runtime, "interpreter", fake)
    monkeypatch.setitem(__import__("sys").modules, "triton.runtime.interpreter", fake)
    assert patch_interpreter() is True
    patched = fake._patch_lang_tensor
    assert patched is not original and patch_interpreter() is True and fake._patch_lang_tensor is patched
    scope = _Scope()
    patched(FakeTensor, *([scope] if with_scope else []))
    assert range(0, FakeTensor([37]), 16) == range(0, 37, 16)  # a shape-(1,) scalar now converts
    assert int(_interpreter_compat._index(FakeTensor(np.int32(5)))) == 5
    if with_scope:
        assert scope.changes == ["__index__", "__index__"]  # recorded, so the interpreter undoes both


@pytest.mark.skipif(not INTERPRET, reason="checks the CPU path")
def test_cpu_tensors_for_a_compiled_kernel_get_a_clear_error(monkeypatch):
    """Without the interpreter, CPU tensors cannot reach a kernel: the error says so and names q."""
    from attnlib.kernels import _interpreter_compat, block_sparse_attention, flash_attention, flash_decode

    monkeypatch.setattr(_interpreter_compat, "interpreting", lambda: False)
    q, kv = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 20, 16)
    with pytest.raises(RuntimeError, match=r"flash_decode runs on CUDA.*got q on cpu.*TRITON_INTERPRET"):
        flash_decode(q, kv, kv)
    q = torch.randn(1, 2, 20, 16)
    with pytest.raises(RuntimeError, match=r"block_sparse_attention runs on CUDA.*got q on cpu"):
        block_sparse_attention(q, q, q, torch.ones(1, 1, dtype=torch.bool), block_size=32)
    with pytest.raises(RuntimeError, match=r"flash_attention runs on CUDA.*got q on cpu"):
        flash_attention(q, q, q)


def test_compiler_check_asserts_under_a_measured_triton_and_reports_under_another(capsys):
    """Figures read from compiled code stop a lab only under the Triton versions they were measured with."""
    from attnlib.kernels.labtools import MEASURED_TRITON, compiler_check, measured_triton

    measured = MEASURED_TRITON[-1] + ".0"
    assert measured_triton(measured) and measured_triton(MEASURED_TRITON[0] + ".1+git") and not measured_triton("3.10.0")
    assert compiler_check(True, "holds", triton_version=measured) is True
    with pytest.raises(AssertionError, match="registers <= 255"):
        compiler_check(False, "registers <= 255", triton_version=measured)
    assert compiler_check(False, "registers <= 255", triton_version="3.4.0") is False
    out = capsys.readouterr().out
    assert "Not checked on Triton 3.4.0" in out and "registers <= 255" in out
    assert compiler_check(True, "holds", triton_version="3.4.0") is True and capsys.readouterr().out == ""
