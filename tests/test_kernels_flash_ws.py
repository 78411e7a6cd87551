"""The experimental warp-specialised forward (``attnlib.kernels.experimental.fwd_ws``) under the interpreter.

What a CPU can check: the forward computes attention and its log-sum-exp (causal too, with more
keys than queries; the interpreter runs the loop as written, and the warp specialisation itself
is a compilation step, which ``test_kernels_compile_sm90.py`` checks happens for sm_90), and it
refuses what it does not handle with an error that names it. Speed is the GPU benchmark's job.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnlib.kernels import flash
from attnlib.kernels.experimental.fwd_ws import WS_CONFIGS, check_ws_supported, flash_fwd_ws

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests (the GPU times the ladder)")


def _reference(q, k, v, causal=False):
    """float64 attention and its natural log-sum-exp; causal aligned bottom-right (key j seen by query i
    if j <= i + Lk - Lq, Lk >= Lq: every row sees a key)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    s = q.double() @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        lq, lk = s.shape[-2:]
        s = s.masked_fill(torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq).logical_not(), float("-inf"))
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


@pytest.mark.parametrize("hk, d, lq, lk", [(4, 64, 32, 48), (2, 64, 16, 80), (1, 128, 32, 32)])
def test_matches_attention_and_its_log_sum_exp(hk, d, lq, lk):
    g = torch.Generator().manual_seed(hk * 1000 + lk)
    q = torch.randn(2, 4, lq, d, generator=g).half()
    k, v = (torch.randn(2, hk, lk, d, generator=g).half() for _ in range(2))
    q[0, 1, 3] *= 40  # large logits in one row: the online softmax must rescale
    for warp_specialize in (True, False):
        o, lse2 = flash_fwd_ws(q, k, v, False, d ** -0.5, config=(16, 16, 4, 2), warp_specialize=warp_specialize)
        ref_o, ref_lse = _reference(q, k, v)
        torch.testing.assert_close(o.double(), ref_o, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(lse2.view(2, 4, lq).double() * math.log(2), ref_lse, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("hk, lq, lk, block_m, block_n", [
    (4, 48, 48, 16, 16),  # square
    (2, 32, 64, 16, 16),  # more keys than queries: the diagonal moves right by Lk - Lq
    (4, 64, 96, 32, 16),  # tiles of two shapes: a query tile's diagonal crosses two key tiles
])
def test_causal_matches_attention_and_its_log_sum_exp(hk, lq, lk, block_m, block_n):
    """Causal: one specialised loop over the key tiles a query tile may see, every tile masked."""
    g = torch.Generator().manual_seed(hk * 1000 + lq + lk)
    q = torch.randn(1, 4, lq, 64, generator=g).half()
    k, v = (torch.randn(1, hk, lk, 64, generator=g).half() for _ in range(2))
    q[0, 2, -1] *= 40  # large logits in one row: the online softmax must rescale
    ref_o, ref_lse = _reference(q, k, v, causal=True)
    for warp_specialize in (True, False):
        o, lse2 = flash_fwd_ws(q, k, v, True, 64 ** -0.5, config=(block_m, block_n, 4, 2),
                               warp_specialize=warp_specialize)
        torch.testing.assert_close(o.double(), ref_o, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(lse2.view(1, 4, lq).double() * math.log(2), ref_lse, atol=2e-3, rtol=1e-3)
        # and what attnlib's own forward gives (output and base-2 log-sum-exp)
        same_o, same_lse2 = flash._forward(q, k, v, True, 64 ** -0.5)
        torch.testing.assert_close(o, same_o, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(lse2, same_lse2, atol=2e-3, rtol=1e-3)


def test_every_ladder_configuration_is_a_whole_tile_shape():
    assert all(bm % 64 == 0 and bn % 64 == 0 and warps == 4 for bm, bn, warps, _ in WS_CONFIGS)


@pytest.mark.parametrize("causal, dtype, d, lq, lk, words", [
    (True, torch.float32, 64, 32, 32, "dtype torch.float32"),
    (False, torch.float32, 64, 32, 32, "dtype torch.float32"),
    (True, torch.float16, 64, 32, 40, "Lk=40"),
    (True, torch.float16, 64, 64, 32, "Lq=64 > Lk=32"),  # rows that see no key
    (False, torch.float16, 80, 32, 32, "head dim 80"),
    (False, torch.float16, 64, 33, 32, "Lq=33"),
    (False, torch.float16, 64, 32, 40, "Lk=40"),
])
def test_refuses_what_it_does_not_handle_and_says_what(causal, dtype, d, lq, lk, words):
    q = torch.zeros(1, 2, lq, d, dtype=dtype)
    k = torch.zeros(1, 2, lk, d, dtype=dtype)
    with pytest.raises(ValueError, match=words):
        check_ws_supported(q, k, causal, 16, 16)
    with pytest.raises(ValueError, match="warp-specialised forward does not handle"):
        flash_fwd_ws(q, k, k, causal, 0.1, config=(16, 16, 4, 2))


def _mismatched_inputs():
    """(q, k, v, words) that each fit the tiles but not together: the kernel reads flattened rows, so these
    would read zeros past the end of K/V (or another head's rows) instead of failing."""
    q = torch.zeros(1, 3, 32, 64, dtype=torch.float16)
    kv = torch.zeros(1, 2, 32, 64, dtype=torch.float16)
    return [
        (q, kv, kv, "3, 32, 64\\) with k of shape \\(1, 2, 32, 64\\)"),  # 3 query heads on 2 K/V heads
        (q[:, :2], torch.zeros(2, 2, 32, 64, dtype=torch.float16), None, "the same batch"),
        (q[:, :2], kv.bfloat16(), None, "k of dtype torch.bfloat16 with q of dtype torch.float16"),
        (q[:, :2], kv, kv[:, :, :16], "v of shape \\(1, 2, 16, 64\\)"),
        (q[:, :2], kv, kv.bfloat16(), "v of shape .* and dtype torch.bfloat16"),
        (q[:, :2, :0], kv, kv, "positive multiples"),
        (q[0], kv[0], kv[0], "4-D"),
    ]


@pytest.mark.parametrize("case", range(len(_mismatched_inputs())))
def test_refuses_inputs_that_do_not_fit_together(case):
    q, k, v, words = _mismatched_inputs()[case]
    with pytest.raises(ValueError, match=words):
        check_ws_supported(q, k, False, 16, 16, v)
    if v is not None:
        with pytest.raises(ValueError, match="warp-specialised forward does not handle"):
            flash_fwd_ws(q, k, v, False, 0.1, config=(16, 16, 4, 2))
