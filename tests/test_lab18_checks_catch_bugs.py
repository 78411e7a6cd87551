"""Lab 18's check cells must fail on wrong answers (a check that cannot fail is a defect).

Each mutation breaks one exercise of the solution the way a student might: chunks merged without the
max shift, a chunk's log-sum-exp left in base 2, a chunk reading one key past its end, a window mask
with one tile too many per row, a causal block-sparse mask off by one. Its check cells must then raise
an AssertionError naming the exercise.
"""

import pytest
from helpers import run_checks

pytest.importorskip("triton")

MUTATIONS = [
    ("18.1", "w = torch.exp(lse_parts - m)", "w = torch.exp(lse_parts)"),
    ("18.2", "(m_i + tl.math.log2(safe_l)) * 0.6931471805599453", "(m_i + tl.math.log2(safe_l))"),
    ("18.2", "        ok = cols < hi\n", "        ok = cols < hi + 1\n"),
    ("18.3", "(i_first - j_last < window)", "(i_first - j_last <= window)"),
    ("18.4", "keep = keep & (cols[None, :] <= offs_m[:, None])", "keep = keep & (cols[None, :] < offs_m[:, None])"),
]


def test_the_solution_passes_every_check():
    run_checks("lab18_decoding_and_sparse_kernels")


@pytest.mark.parametrize("exercise, old, new", MUTATIONS, ids=[f"{m[0]}:{m[2][:30]}" for m in MUTATIONS])
def test_a_broken_exercise_fails_its_check(exercise, old, new):
    with pytest.raises(AssertionError, match=f"Exercise {exercise}"):
        run_checks("lab18_decoding_and_sparse_kernels", exercise, old, new)
