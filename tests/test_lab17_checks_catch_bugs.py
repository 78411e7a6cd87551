"""Lab 17's check cells must fail on wrong answers (a check that cannot fail is a defect).

Each mutation breaks one exercise of the solution the way a student might: dS without the row term
delta, a dQ kernel that loops over every key tile (right values, no causal skipping), gradients
returned in the wrong order. Its check cells must then raise an AssertionError naming the exercise.
"""

import pytest
from helpers import run_checks

pytest.importorskip("triton")

MUTATIONS = [
    ("17.1", "ds_t = p_t * (dp_t - delta[None, :])", "ds_t = p_t * dp_t"),
    ("17.2", "ds = p * (dp - delta[:, None])", "ds = p * dp"),
    ("17.2", "        hi = tl.minimum(tl.maximum((pid_m + 1) * BLOCK_M + LK - LQ, 0), LK)", "        hi = LK"),
    ("17.3", "return dq, dk, dv, None", "return dk, dq, dv, None"),
]


def test_the_solution_passes_every_check():
    run_checks("lab17_flash_backward")


@pytest.mark.parametrize("exercise, old, new", MUTATIONS, ids=[f"{m[0]}:{m[2][:30]}" for m in MUTATIONS])
def test_a_broken_exercise_fails_its_check(exercise, old, new):
    with pytest.raises(AssertionError, match=f"Exercise {exercise}"):
        run_checks("lab17_flash_backward", exercise, old, new)
