"""The experimental warp-specialised forward (``attnlib.kernels._flash_fwd_ws``) under the interpreter.

What a CPU can check: the kernel computes attention and its log-sum-exp (the interpreter runs
the loop as written; the warp specialisation itself is a compilation step, which
``test_kernels_compile_sm90.py`` checks happens for sm_90), with grouped K/V heads, and it
refuses what it does not handle with an error that names it. Speed is the GPU ladder's job.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnlib.kernels._flash_fwd_ws import WS_CONFIGS, check_ws_supported, flash_fwd_ws

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests (the GPU times the ladder)")


def _reference(q, k, v):
    group = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    s = q.double() @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
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


def test_every_ladder_configuration_is_a_whole_tile_shape():
    assert all(bm % 64 == 0 and bn % 64 == 0 and warps == 4 for bm, bn, warps, _ in WS_CONFIGS)


@pytest.mark.parametrize("causal, dtype, d, lq, lk, words", [
    (True, torch.float16, 64, 32, 32, "causal=True"),
    (False, torch.float32, 64, 32, 32, "dtype torch.float32"),
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
