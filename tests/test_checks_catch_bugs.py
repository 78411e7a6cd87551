"""Each lab's check cells must fail on wrong answers (a check that cannot fail is a defect).

Each mutation breaks one exercise of a lab's solution the way a student might (the comments say how);
running that exercise's check cells must then raise an AssertionError naming the exercise, before any
kernel writes outside a buffer. Every unbroken solution passes all of its checks. The kernel labs
(15-18) run in Triton's interpreter here, as on any CPU.
"""

import pytest
from helpers import run_checks

MUTATIONS = {  # lab -> (exercise, text in the solution, the broken text)
    "lab01_scaled_dot_product": [
        ("1.1", "scale = 1.0 / math.sqrt(q.shape[-1])", "scale = 1.0"),  # forgot the default scale
        ("1.1", "q @ k.transpose(-2, -1)) * scale", "q @ k.transpose(-1, -2).contiguous()) * scale * 1.001"),
        ("1.2", "return j <= i + (lk - lq)", "return j <= i"),  # top-left instead of bottom-right
        ("1.2", "< lengths[:, None]", "<= lengths[:, None]"),  # off by one
        ("1.3", "e = torch.exp(scores - row_max)", "e = torch.exp(scores)"),  # overflows
        ("1.3", "return e / torch.where(total > 0, total, torch.ones_like(total))", "return e / total"),  # NaN rows
        ("1.4", "mask = c if mask is None else mask & c", "mask = c"),  # causal drops the user's mask
        ("1.4", "return (weights @ v.float()).to(q.dtype), weights",
         "return (weights @ v.float()).to(q.dtype), weights.mT"),
        ("1.5", "correction = torch.exp(m - shift)", "correction = torch.ones_like(m)"),  # no rescaling
        ("1.5", "s = s.masked_fill(key_pos > query_pos",
         "s = s.masked_fill(key_pos > query_pos + 1"),  # causal off by one
    ],
    "lab15_triton_basics": [
        ("15.1", "tl.store(OUT + offsets, x + y, mask=mask)", "tl.store(OUT + offsets, x + y)"),  # writes past N
        ("15.2", "X + row * x_row_stride + cols", "X + row * N_COLS + cols"),  # assumes contiguous rows
        ("15.2", "e = tl.exp(x - tl.max(x, 0))", "e = tl.exp(x)"),  # overflows for large logits
        ("15.2", "y.to(OUT.dtype.element_ty), mask=cols < N_COLS)", "y.to(OUT.dtype.element_ty))"),  # store unmasked
        ("15.3", "a = tl.load(A + rows[:, None] * stride_am", "a = tl.load(A + rows[:, None] * K"),  # row stride
        ("15.3", "mask=(rows[:, None] < M) & ((k0 + ks)[None, :] < K), other=0.0)",
         "mask=rows[:, None] < M, other=0.0)"),  # reads A past K
        ("15.3", "acc.to(C.dtype.element_ty),\n             mask=(rows[:, None] < M) & (cols[None, :] < N))",
         "acc.to(C.dtype.element_ty))"),  # writes outside M x N
    ],
    "lab16_flash_forward": [
        ("16.1", '    s = tl.where(offs_n[None, :] < LK, s, float("-inf"))\n', ""),  # keys past Lk count
        ("16.2", "        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)\n        m_i = m_new\n        # END",
         "        acc = acc + tl.dot(p.to(v.dtype), v)\n        m_i = m_new\n        # END"),  # no rescaling
        ("16.3", "allowed = allowed & (cols[None, :] <= offs_m[:, None] + LK - LQ)",
         "allowed = allowed & (cols[None, :] < offs_m[:, None] + LK - LQ)"),  # causal off by one
        ("16.3", "        hi = tl.minimum(tl.maximum((pid_m + 1) * BLOCK_M + LK - LQ, 0), LK)",
         "        hi = LK"),  # right values, no tile skipped
        ("16.3", "(m_i + tl.math.log2(l_safe)) * 0.6931471805599453", "(m_i + tl.math.log2(l_safe))"),  # base 2
    ],
    "lab17_flash_backward": [
        ("17.1", "ds_t = p_t * (dp_t - delta[None, :])", "ds_t = p_t * dp_t"),  # dS without delta
        ("17.2", "ds = p * (dp - delta[:, None])", "ds = p * dp"),  # dS without delta
        ("17.2", "        hi = tl.minimum(tl.maximum((pid_m + 1) * BLOCK_M + LK - LQ, 0), LK)",
         "        hi = LK"),  # right values, no causal skipping
        ("17.3", "return dq, dk, dv, None", "return dk, dq, dv, None"),  # gradients in the wrong order
    ],
    "lab18_decoding_and_sparse_kernels": [
        ("18.1", "w = torch.exp(lse_parts - m)", "w = torch.exp(lse_parts)"),  # no max shift
        ("18.2", "(m_i + tl.math.log2(safe_l)) * 0.6931471805599453", "(m_i + tl.math.log2(safe_l))"),  # base 2
        ("18.2", "        ok = cols < hi\n", "        ok = cols < hi + 1\n"),  # one key past the chunk
        ("18.3", "(i_first - j_last < window)", "(i_first - j_last <= window)"),  # one tile too many
        ("18.4", "keep = keep & (cols[None, :] <= offs_m[:, None])",
         "keep = keep & (cols[None, :] < offs_m[:, None])"),  # causal off by one
    ],
}
CASES = [(lab, *m) for lab, mutations in MUTATIONS.items() for m in mutations]


KERNEL_LABS = {"lab15_triton_basics", "lab16_flash_forward", "lab17_flash_backward",
               "lab18_decoding_and_sparse_kernels"}


def _needs_triton(lab: str) -> None:
    if lab in KERNEL_LABS:
        pytest.importorskip("triton")


@pytest.mark.parametrize("lab", MUTATIONS)
def test_the_solution_passes_every_check(lab):
    _needs_triton(lab)
    run_checks(lab)


@pytest.mark.parametrize("lab, exercise, old, new", CASES, ids=[f"{c[1]}:{c[3][:30]}" for c in CASES])
def test_a_broken_exercise_fails_its_check(lab, exercise, old, new):
    _needs_triton(lab)
    with pytest.raises(AssertionError, match=f"Exercise {exercise}"):
        run_checks(lab, exercise, old, new)
