"""The kernel labs' solutions (labs 15-17) agree with torch and attnlib on fresh random inputs.

Their Triton kernels run in the interpreter without CUDA (tests/conftest.py), so sizes are tiny.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from helpers import exercise_namespace  # noqa: E402

import attnlib  # noqa: E402
from attnlib.kernels import flash_attention  # noqa: E402
from attnlib.kernels.flash import flash_attention_forward  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = dict(rtol=2e-3, atol=2e-3) if torch.cuda.is_available() else dict(rtol=1e-4, atol=1e-5)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def test_lab15_solution_agrees_with_torch():
    ns = exercise_namespace("lab15_triton_basics")
    x, y = _randn(45, seed=1), _randn(45, seed=2)
    torch.testing.assert_close(ns["add"](x, y), x + y)
    s = _randn(6, 21, seed=3) * 20
    torch.testing.assert_close(ns["softmax_rows"](s), torch.softmax(s, -1), **TOL)
    a, b = _randn(19, 35, seed=4), _randn(35, 22, seed=5)
    torch.testing.assert_close(ns["matmul"](a, b), a @ b, **TOL)


def test_lab16_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab16_flash_forward")
    q, k, v = _randn(2, 27, 16, seed=6), _randn(2, 41, 16, seed=7), _randn(2, 41, 16, seed=8)
    ref = attnlib.core.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ns["naive_attention"](q, k, v), ref, **TOL)
    torch.testing.assert_close(ns["flash_forward"](q, k, v), ref, **TOL)
    for causal, (lq, lk) in ((True, (27, 41)), (True, (41, 27)), (False, (27, 41))):
        q, k, v = _randn(2, lq, 16, seed=lq), _randn(2, lk, 16, seed=lk + 1), _randn(2, lk, 16, seed=lk + 2)
        out, lse, _ = ns["flash_forward_causal"](q, k, v, causal=causal)
        ref_out, ref_lse = flash_attention_forward(q, k, v, causal=causal)
        torch.testing.assert_close(out, ref_out, **TOL)
        torch.testing.assert_close(lse, ref_lse, **TOL)  # -inf on the same rows


def test_lab17_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab17_flash_backward")
    for causal, (lq, lk) in ((True, (23, 23)), (True, (30, 17)), (False, (17, 30))):
        leaves = [_randn(2, n, 16, seed=n + i).requires_grad_() for i, n in enumerate((lq, lk, lk))]
        w = _randn(2, lq, 16, seed=99)
        got = torch.autograd.grad((ns["flash_attention_lab"](*leaves, causal=causal) * w).sum(), leaves)
        want = torch.autograd.grad((flash_attention(*leaves, causal=causal) * w).sum(), leaves)
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e, **TOL)
