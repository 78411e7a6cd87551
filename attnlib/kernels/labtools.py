"""Helpers for the kernel labs: where kernels run, and unfinished exercise kernels.

In a student's lab, an unfinished ``@triton.jit`` kernel body is
``raise NotImplementedError("Exercise N.M: ...")``. Triton does not pass that
exception through: its interpreter wraps it in an ``InterpreterError`` and its GPU
compiler rejects the ``raise`` statement with a ``CompilationError``.
:func:`exercise_launcher` turns both back into ``NotImplementedError``, so that
:func:`attnlib.checks.yours_or_reference` can fall back on the reference and a
check cell says which exercise is unfinished.

Importing this module under ``TRITON_INTERPRET=1`` also lets the interpreter of Triton < 3.7
run the labs' loops on NumPy >= 2.4 (see :mod:`attnlib.kernels._interpreter_compat`).

:func:`compiler_check` asserts a figure read from compiled code (registers, shared memory,
instruction counts) only under the Triton versions it was measured with (:data:`MEASURED_TRITON`,
the versions the course's CI runs the labs with); under any other Triton, a figure that differs
is printed, not raised, so that "Run all" on another runtime (Colab's) carries on.
"""

from __future__ import annotations

import functools
import re

import torch

from ._interpreter_compat import interpreting, patch_interpreter

patch_interpreter()

__all__ = ["MEASURED_TRITON", "compiler_check", "exercise_launcher", "interpreting", "kernel_device", "measured_triton"]

# Triton versions (major.minor) whose compiler output the kernel labs' figures were measured with:
# CI runs the labs under 3.9 (`make test`) and the kernel tests under 3.6 (`make test-triton-compat`).
MEASURED_TRITON = ("3.6", "3.9")

_MESSAGE = re.compile(r"NotImplementedError\((['\"])(.*?)\1\)")


def kernel_device() -> torch.device:
    """Where the labs put kernel inputs: CUDA if available, else the CPU (for the interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def measured_triton(triton_version: str | None = None) -> bool:
    """Whether this Triton (or ``triton_version``) is one the labs' compiler figures were measured with."""
    if triton_version is None:
        import triton

        triton_version = triton.__version__
    return ".".join(triton_version.split(".")[:2]) in MEASURED_TRITON


def compiler_check(condition, what: str, *, triton_version: str | None = None) -> bool:
    """Assert ``condition`` (a statement about compiled code, ``what``) under a measured Triton; else report it.

    Under a Triton whose major.minor is in :data:`MEASURED_TRITON`, a false ``condition`` raises
    ``AssertionError(what)``. Under any other version it prints that the figure differs on this
    Triton and returns False, so a notebook keeps running. Returns ``bool(condition)``.
    """
    if triton_version is None:
        import triton

        triton_version = triton.__version__
    ok = bool(condition)
    if not ok:
        if measured_triton(triton_version):
            raise AssertionError(what)
        print(f"Not checked on Triton {triton_version} (these compiler figures were measured with Triton "
              f"{' and '.join(MEASURED_TRITON)}); here it does not hold: {what}")
    return ok


def exercise_launcher(fn):
    """Decorate a kernel's Python launcher: an unfinished kernel raises ``NotImplementedError``."""

    @functools.wraps(fn)
    def launch(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise
        except Exception as e:  # noqa: BLE001 - only errors that name NotImplementedError are converted
            text = " ".join(repr(x) + " " + str(x) for x in (e, e.__cause__, e.__context__) if x is not None)
            if "NotImplementedError" in text:
                found = _MESSAGE.search(text)
                raise NotImplementedError(found.group(2) if found else "an exercise kernel is unfinished") from None
            raise

    return launch
