"""Lab 16's check cells must fail on wrong answers (a check that cannot fail is a defect).

Each mutation breaks one exercise of the solution the way a student might: keys past Lk not masked,
the running output not rescaled, the causal mask off by one, no tile skipping (right values, more
work), a base-2 log-sum-exp returned as if natural. Its check cells must then raise an AssertionError
naming the exercise.
"""

import pytest
from helpers import run_checks

pytest.importorskip("triton")

MUTATIONS = [
    ("16.1", '    s = tl.where(offs_n[None, :] < LK, s, float("-inf"))\n', ""),
    ("16.2", "        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)\n        m_i = m_new\n        # END",
     "        acc = acc + tl.dot(p.to(v.dtype), v)\n        m_i = m_new\n        # END"),
    ("16.3", "allowed = allowed & (cols[None, :] <= offs_m[:, None] + LK - LQ)",
     "allowed = allowed & (cols[None, :] < offs_m[:, None] + LK - LQ)"),
    ("16.3", "        hi = tl.minimum(tl.maximum((pid_m + 1) * BLOCK_M + LK - LQ, 0), LK)", "        hi = LK"),
    ("16.3", "(m_i + tl.math.log2(l_safe)) * 0.6931471805599453", "(m_i + tl.math.log2(l_safe))"),
]


def test_the_solution_passes_every_check():
    run_checks("lab16_flash_forward")


@pytest.mark.parametrize("exercise, old, new", MUTATIONS, ids=[f"{m[0]}:{m[2][:30]}" for m in MUTATIONS])
def test_a_broken_exercise_fails_its_check(exercise, old, new):
    with pytest.raises(AssertionError, match=f"Exercise {exercise}"):
        run_checks("lab16_flash_forward", exercise, old, new)
