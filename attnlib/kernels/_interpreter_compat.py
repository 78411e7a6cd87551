"""Let Triton's CPU interpreter run loops with run-time bounds on Triton < 3.7 with NumPy >= 2.4.

Inside an interpreted kernel every scalar is a one-element NumPy array, and
``range(0, n, BLOCK)`` turns ``n`` into a Python int with ``int(array)``. NumPy
deprecated that for arrays with ``ndim > 0`` in 1.25 and raises ``TypeError`` from 2.4 on,
so on Triton 3.2-3.6 (3.6 is Colab's) every kernel with a loop over a run-time length
fails under ``TRITON_INTERPRET=1`` with "only 0-dimensional arrays can be converted to
Python scalars". Triton 3.7 fixed it by squeezing the array first; :func:`patch_interpreter`
makes the same one-line change to older interpreters and does nothing on newer ones or
on a GPU (compiled kernels never take this path).

:func:`check_launchable` gives the clear error for the other way to get this wrong: CPU
tensors handed to a compiled (not interpreted) kernel.
"""

from __future__ import annotations

import os
import re

__all__ = ["check_launchable", "interpreting", "patch_interpreter"]


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET`` set, not "0")."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_launchable(tensor, name: str, function: str) -> None:
    """Compiled kernels read CUDA memory; only the interpreter reads CPU tensors. Say which is missing."""
    if tensor.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{function} needs {name} on a CUDA GPU (or the CPU under Triton's interpreter), "
                         f"got {name} on {tensor.device}")
    if tensor.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"{function} runs on CUDA, or on a CPU under Triton's interpreter: got {name} on {tensor.device} "
            "and TRITON_INTERPRET was not '1' (set it before triton is first imported)")


def _version(text: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def _index(self) -> int:
    """``int()`` of a one-element interpreter scalar, whatever its NumPy shape."""
    return int(self.handle.data.squeeze())


def patch_interpreter() -> bool:
    """Apply the fix if interpreting with Triton < 3.7; return whether it is (now) applied.

    Idempotent. Imports Triton only when ``TRITON_INTERPRET`` is set, so calling it never
    decides the interpreter setting for a later ``import triton``.
    """
    if not interpreting():
        return False
    try:
        import triton
    except ImportError:
        return False
    if _version(triton.__version__) >= (3, 7):
        return False
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None:  # an interpreter laid out differently: leave it alone
        return False
    if getattr(original, "attnlib_fixed", False):
        return True

    def _patch_lang_tensor(tensor, *scope):
        original(tensor, *scope)
        if scope:  # Triton 3.6: patches are recorded in a scope and undone after the kernel
            scope[0].set_attr(tensor, "__index__", _index)
        else:  # Triton 3.2-3.5: set directly
            tensor.__index__ = _index

    _patch_lang_tensor.attnlib_fixed = True
    interpreter._patch_lang_tensor = _patch_lang_tensor
    return True
