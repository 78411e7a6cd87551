"""Lab 15's check cells must fail on wrong answers (a check that cannot fail is a defect).

Each mutation breaks one exercise of the solution the way a student might: a store without its mask
(which, on a real output, would write past the buffer), the wrong row stride, a softmax without the
max shift, a matrix product reading past K. Its check cells must then raise an AssertionError naming
the exercise, before any launch writes outside a buffer. The unbroken solution passes every check.
"""

import pytest
from helpers import run_checks

pytest.importorskip("triton")

MUTATIONS = [
    ("15.1", "tl.store(OUT + offsets, x + y, mask=mask)", "tl.store(OUT + offsets, x + y)"),
    ("15.2", "X + row * x_row_stride + cols", "X + row * N_COLS + cols"),  # assumes contiguous rows
    ("15.2", "e = tl.exp(x - tl.max(x, 0))", "e = tl.exp(x)"),  # overflows for large logits
    ("15.2", "y.to(OUT.dtype.element_ty), mask=cols < N_COLS)", "y.to(OUT.dtype.element_ty))"),
    ("15.3", "a = tl.load(A + rows[:, None] * stride_am", "a = tl.load(A + rows[:, None] * K"),
    ("15.3", "mask=(rows[:, None] < M) & ((k0 + ks)[None, :] < K), other=0.0)", "mask=rows[:, None] < M, other=0.0)"),
    ("15.3", "acc.to(C.dtype.element_ty),\n             mask=(rows[:, None] < M) & (cols[None, :] < N))",
     "acc.to(C.dtype.element_ty))"),
]


def test_the_solution_passes_every_check():
    run_checks("lab15_triton_basics")


@pytest.mark.parametrize("exercise, old, new", MUTATIONS, ids=[f"{m[0]}:{m[2][:30]}" for m in MUTATIONS])
def test_a_broken_exercise_fails_its_check(exercise, old, new):
    with pytest.raises(AssertionError, match=f"Exercise {exercise}"):
        run_checks("lab15_triton_basics", exercise, old, new)
