"""Helpers for the labs' check cells: compare a student's answer with a reference
and say *where* and *how* it differs.

A check cell looks like this::

    check = Check("1.3")
    for case in random_attention_cases(seed=13):
        check.close(my_attention(*case.args), attnlib_reference(*case.args), case=case.name)
    check.done()

``Check.close`` raises an ``AssertionError`` whose message names the exercise,
the case (shapes, mask, causal), the first offending index and both values, so
a student reads "Exercise 1.3, case 'Lq=5 Lk=7 causal': output differs at
index (0, 2, 1): yours 0.41, expected 0.17" instead of a wall of numbers.
Following Triton-Puzzles, the reference is an oracle and the inputs are random
(odd lengths, masks), so uniform inputs cannot hide a bug.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterator, Optional

import torch

__all__ = ["Check", "Case", "default_tolerance", "random_attention_cases", "yours_or_reference"]

# (rtol, atol) per dtype, a little looser than torch.testing's defaults because
# a student's correct formula may sum in another order than the reference.
_TOLERANCE = MappingProxyType({
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
})


def default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(rtol, atol)`` used by :meth:`Check.close` for ``dtype``."""
    return _TOLERANCE.get(dtype, (0.0, 0.0))


def _fmt(x) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _plain(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a plain ``torch.Tensor`` (a subclass's overridden methods are not used to compare it)."""
    if type(t) is torch.Tensor:
        return t
    with torch._C.DisableTorchFunctionSubclass():
        return t.detach().as_subclass(torch.Tensor)


class Check:
    """Collects the assertions of one exercise's check cell.

    Every method raises ``AssertionError("Exercise N.M ...: what went wrong")``
    at the first failure; :meth:`done` prints a one-line success message.
    """

    # The grader sets this to its integrity check (tools/grading/integrity.py), called at every assertion:
    # a checking tool patched by the code under test is caught while the patch is in place.
    _integrity: Optional[Callable[[], None]] = None

    def __init__(self, exercise: str):
        self.exercise = exercise
        self.passed = 0
        # Bind the methods now, from the class as it was defined: a patch of the class made later (by code
        # under test) does not change a check that is already running.
        for name, method in _METHODS.items():
            self.__dict__[name] = method.__get__(self)
        self.__dict__["_integrity_now"] = Check._integrity

    def _guard(self) -> None:
        verify = self.__dict__.get("_integrity_now")
        if verify is not None:
            verify()

    def _fail(self, message: str, case: Optional[str]) -> None:
        where = f", case {case!r}" if case else ""
        raise AssertionError(f"Exercise {self.exercise}{where}: {message}")

    def true(self, condition, message: str, *, case: Optional[str] = None) -> None:
        """Assert a property; ``message`` says what should have held."""
        self._guard()
        if isinstance(condition, torch.Tensor):
            condition = bool(condition.all())
        if not condition:
            self._fail(message, case)
        self.passed += 1

    def raises(self, exception: type, fn: Callable, *args, case: Optional[str] = None, **kwargs) -> None:
        """Assert that ``fn(*args, **kwargs)`` raises ``exception``."""
        self._guard()
        try:
            fn(*args, **kwargs)
        except exception:
            self.passed += 1
            return
        except NotImplementedError:
            raise
        except Exception as e:  # noqa: BLE001 - report what was raised instead
            self._fail(f"expected {exception.__name__}, but it raised {type(e).__name__}: {e}", case)
        self._fail(f"expected {exception.__name__}, but nothing was raised", case)

    def close(self, actual, expected: torch.Tensor, *, name: str = "output", case: Optional[str] = None,
              rtol: Optional[float] = None, atol: Optional[float] = None) -> None:
        """Assert ``actual`` equals ``expected`` in type, shape, dtype and value (within tolerance).

        NaN in ``actual`` where ``expected`` is finite is always a failure;
        NaN in both places counts as equal. A tensor subclass is compared as the plain tensor it holds.
        """
        self._guard()
        if not isinstance(actual, torch.Tensor):
            self._fail(f"{name} should be a torch.Tensor, got {type(actual).__name__}", case)
        actual = _plain(actual)
        if actual.shape != expected.shape:
            self._fail(f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}", case)
        if actual.dtype != expected.dtype:
            self._fail(f"{name} has dtype {actual.dtype}, expected {expected.dtype}", case)
        if expected.dtype == torch.bool or not expected.is_floating_point():
            wrong = actual != expected
            if wrong.any():
                idx = tuple(int(i) for i in wrong.nonzero()[0])
                self._fail(
                    f"{name} differs at {int(wrong.sum())} of {wrong.numel()} entries; first at index {idx}: "
                    f"yours {actual[idx].item()}, expected {expected[idx].item()}",
                    case,
                )
            self.passed += 1
            return
        d_rtol, d_atol = default_tolerance(expected.dtype)
        rtol = d_rtol if rtol is None else rtol
        atol = d_atol if atol is None else atol
        a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
        both_nan = torch.isnan(a) & torch.isnan(e)
        err = (a - e).abs()
        bad = ~both_nan & ~(err <= atol + rtol * e.abs())  # NaN in only one of them is bad
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            hint = ""
            if torch.isnan(a[idx]):
                hint = " (yours is NaN: a fully masked row? a 0/0 in the softmax?)"
            elif torch.isinf(a[idx]):
                hint = " (yours is infinite: overflow in exp? subtract the row maximum first)"
            self._fail(
                f"{name} differs at {int(bad.sum())} of {bad.numel()} entries; first at index {idx}: "
                f"yours {_fmt(a[idx].item())}, expected {_fmt(e[idx].item())}{hint} "
                f"(max |diff| {_fmt(err[~both_nan].max().item())}, tolerance {atol:g} + {rtol:g}*|expected|)",
                case,
            )
        self.passed += 1

    def done(self) -> None:
        """Print the success line (only reached when every assertion passed)."""
        self._guard()
        print(f"Exercise {self.exercise}: all {self.passed} checks passed.")


_METHODS = MappingProxyType({name: vars(Check)[name] for name in ("_guard", "_fail", "true", "raises", "close", "done")})


@dataclass
class Case:
    """One random test input for an attention function."""

    name: str
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: Optional[torch.Tensor] = None
    causal: bool = False
    extra: dict = field(default_factory=dict)


def _seed(seed: int) -> int:
    # ATTN_CHECK_SEED lets an instructor draw other inputs than the students saw.
    return seed + int(os.environ.get("ATTN_CHECK_SEED", "0"))


def random_attention_cases(seed: int, *, dtype: torch.dtype = torch.float32, n: int = 6,
                           masks: bool = True, causal: bool = True) -> Iterator[Case]:
    """Yield ``n`` random (q, k, v) cases with odd lengths, batch/head dims, masks and causal flags.

    The first case is tiny (one query, one key); the rest draw ``Lq, Lk`` in
    ``[1, 12]`` (often unequal), ``d`` and ``dv`` in ``[1, 9]``, leading dims
    ``(B,)`` or ``(B, H)``, and, when enabled, a random boolean mask with at least
    one fully masked row, ``causal=True``, or both.
    """
    g = torch.Generator().manual_seed(_seed(seed))

    def randint(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    for i in range(n):
        if i == 0:
            lead, lq, lk, d, dv = (1,), 1, 1, 1, 1
        else:
            lead = (randint(1, 3),) if i % 2 else (randint(1, 2), randint(1, 3))
            lq, lk, d, dv = randint(1, 12), randint(1, 12), randint(1, 9), randint(1, 9)
        q = torch.randn(*lead, lq, d, generator=g, dtype=torch.float64).to(dtype)
        k = torch.randn(*lead, lk, d, generator=g, dtype=torch.float64).to(dtype)
        v = torch.randn(*lead, lk, dv, generator=g, dtype=torch.float64).to(dtype)
        mask = None
        is_causal = causal and i % 3 in (0, 2) and i > 0  # cases 2, 3, 5, 6, ...: causal
        if masks and i % 3 in (0, 1) and i > 0:  # cases 1, 3, 4, 6, ...: a mask (3, 6: with causal too)
            mask = torch.rand(*lead, lq, lk, generator=g) > 0.3
            mask[..., 0, :] = False  # one fully masked row: the output there must be 0, not NaN
        name = f"lead={lead} Lq={lq} Lk={lk} d={d} dv={dv}" + (" mask" if mask is not None else "") + (
            " causal" if is_causal else "")
        yield Case(name, q, k, v, mask, is_causal)


def yours_or_reference(fn: Callable, reference: Callable, exercise: str) -> Callable:
    """Return a function that calls ``fn`` and, while it still raises
    ``NotImplementedError``, falls back to ``reference`` (saying so once).

    Experiments in the labs use it so that a figure shows up before the
    exercise is done and turns into *your* figure once it is. After a call,
    ``call.used_reference`` says whether the reference answered, so that a
    label can say whose result is shown.
    """

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            if not call.used_reference:
                print(f"(Exercise {exercise} is not done yet: this cell uses attnlib's reference instead.)")
                call.used_reference = True
            return reference(*args, **kwargs)

    call.used_reference = False
    return call
