"""Lab 01's check cells must fail on wrong answers (a check that cannot fail is a defect).

Each mutation below breaks one exercise of the solution in a way a student
might; running that exercise's check cells must then raise an AssertionError
that names the exercise. The unbroken solution must pass every check.
"""

import pytest
from helpers import run_checks

MUTATIONS = [
    ("1.1", "scale = 1.0 / math.sqrt(q.shape[-1])", "scale = 1.0"),  # forgot the default scale
    ("1.1", "q @ k.transpose(-2, -1)) * scale", "q @ k.transpose(-1, -2).contiguous()) * scale * 1.001"),
    ("1.2", "return j <= i + (lk - lq)", "return j <= i"),  # top-left instead of bottom-right
    ("1.2", "< lengths[:, None]", "<= lengths[:, None]"),  # off by one
    ("1.3", "e = torch.exp(scores - row_max)", "e = torch.exp(scores)"),  # overflows
    ("1.3", "return e / torch.where(total > 0, total, torch.ones_like(total))", "return e / total"),  # NaN rows
    ("1.4", "mask = c if mask is None else mask & c", "mask = c"),  # causal drops the user's mask
    ("1.4", "return (weights @ v.float()).to(q.dtype), weights", "return (weights @ v.float()).to(q.dtype), weights.mT"),
    ("1.5", "correction = torch.exp(m - shift)", "correction = torch.ones_like(m)"),  # no rescaling
    ("1.5", "s = s.masked_fill(key_pos > query_pos", "s = s.masked_fill(key_pos > query_pos + 1"),  # causal off by one
]


def test_the_solution_passes_every_check():
    run_checks("lab01_scaled_dot_product")


@pytest.mark.parametrize("exercise, old, new", MUTATIONS, ids=[f"{m[0]}:{m[2][:30]}" for m in MUTATIONS])
def test_a_broken_exercise_fails_its_check(exercise, old, new):
    with pytest.raises(AssertionError, match=f"Exercise {exercise}"):
        run_checks("lab01_scaled_dot_product", exercise, old, new)
