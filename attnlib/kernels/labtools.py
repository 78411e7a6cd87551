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
"""

from __future__ import annotations

import functools
import re

import torch

from ._interpreter_compat import interpreting, patch_interpreter

patch_interpreter()

__all__ = ["exercise_launcher", "interpreting", "kernel_device"]

_MESSAGE = re.compile(r"NotImplementedError\((['\"])(.*?)\1\)")


def kernel_device() -> torch.device:
    """Where the labs put kernel inputs: CUDA if available, else the CPU (for the interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
