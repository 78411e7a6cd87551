"""The check-cell helpers must fail on wrong answers, with messages a student can act on."""

import pytest
import torch

from attnlib.checks import Check, random_attention_cases, yours_or_reference


def test_close_passes_on_equal_and_counts():
    check = Check("9.9")
    x = torch.randn(3, 4)
    check.close(x.clone(), x)
    check.true(True, "fine")
    assert check.passed == 2


@pytest.mark.parametrize(
    "actual, expected, words",
    [
        ([1.0], torch.zeros(1), "should be a torch.Tensor"),
        (torch.zeros(2, 3), torch.zeros(3, 2), "has shape (2, 3), expected (3, 2)"),
        (torch.zeros(2, dtype=torch.float64), torch.zeros(2), "has dtype torch.float64"),
        (torch.tensor([0.0, float("nan")]), torch.tensor([0.0, 1.0]), "yours is NaN"),
        (torch.tensor([0.0, 1.1]), torch.tensor([0.0, 1.0]), "first at index (1,): yours 1.1, expected 1"),
        (torch.tensor([True, False]), torch.tensor([True, True]), "first at index (1,)"),
    ],
)
def test_close_fails_with_a_readable_message(actual, expected, words):
    with pytest.raises(AssertionError) as info:
        Check("2.3").close(actual, expected, case="tiny")
    message = str(info.value)
    assert message.startswith("Exercise 2.3, case 'tiny': ")
    assert words in message


def test_nan_in_both_counts_as_equal():
    Check("1").close(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0]))


def test_true_and_raises():
    with pytest.raises(AssertionError, match="rows must sum to 1"):
        Check("1").true(torch.tensor([True, False]), "rows must sum to 1")
    check = Check("1")
    check.raises(ValueError, lambda: int("x"))
    with pytest.raises(AssertionError, match="nothing was raised"):
        check.raises(ValueError, lambda: 1)
    with pytest.raises(NotImplementedError):
        check.raises(ValueError, lambda: (_ for _ in ()).throw(NotImplementedError("Exercise 1")))


def test_random_cases_are_deterministic_and_varied():
    a = list(random_attention_cases(seed=3, n=9))
    b = list(random_attention_cases(seed=3, n=9))
    assert [c.name for c in a] == [c.name for c in b]
    assert all(torch.equal(x.q, y.q) for x, y in zip(a, b))
    assert any(c.mask is not None and not c.mask.any(-1).all() for c in a)  # a fully masked row
    assert any(c.causal for c in a)
    assert any(c.q.shape[-2] != c.k.shape[-2] for c in a)
    assert a[0].q.shape[-2:] == (1, 1)


def test_yours_or_reference_falls_back_then_uses_yours(capsys):
    def mine(x):
        raise NotImplementedError("Exercise 1.1: ...")

    f = yours_or_reference(mine, lambda x: x + 1, "1.1")
    assert not f.used_reference
    assert f(1) == 2 and f(2) == 3
    assert f.used_reference  # a plot's label can say the reference answered
    assert capsys.readouterr().out.count("not done yet") == 1
    g = yours_or_reference(lambda x: x * 10, lambda x: x + 1, "1.1")
    assert g(2) == 20 and not g.used_reference
