"""Experimental: FlashAttention-2's one-pass backward, dQ added with atomic adds inside the dK/dV kernel.

*What it tries.* The production backward (``attnlib.kernels.flash._backward``) runs two kernels,
one per key tile for dK/dV and one per query tile for dQ, and so computes seven matrix products
where the one-pass backward computes five: the dK/dV kernel already has each tile's :math:`dS`, so
one more product, :math:`dS\\,K`, is that key tile's share of :math:`dQ`, added into a float32 buffer
(the ``FUSE_DQ`` branch of :func:`attnlib.kernels._flash_bwd.flash_bwd_dkdv_kernel`). The price:
:math:`L_k / B_N` atomic passes over dQ, summed in an order that varies from run to run (float32
rounding only). *What has been measured.* Its gradients in Triton's CPU interpreter
(``tests/test_kernels_flash.py``) and its registers for sm_90 (``tools/compile_kernels.py``: the
64x128 tile the dK/dV autotuner picks on an H200 spills); it has never run on a GPU. The benchmark's
backward breakdown (:func:`attnlib.bench.flash.time_backward`) times it against the production backward.
"""

from __future__ import annotations

import torch
import triton

from .._flash_bwd import flash_bwd_dkdv_kernel
from ..flash import _LOG2E, _backward_delta, _block_d, _fixed, _precision

__all__ = ["ONE_PASS_CONFIGS", "backward_one_pass"]

# The tiles the benchmark times: the dK/dV kernel's autotuned choice on an H200 (64x128, whose registers
# spill with the extra product) and the widest that does not spill (32x128).
ONE_PASS_CONFIGS = ((64, 128, 8, 3), (32, 128, 8, 3))


def backward_one_pass(q, k, v, o, lse, do, causal: bool, scale: float, config: tuple = ONE_PASS_CONFIGS[0]):
    """dQ, dK, dV in one pass, as ``attnlib.kernels.flash._backward`` takes and returns them.

    q/o/do ``(B, H, Lq, D)``, k/v ``(B, Hk, Lk, D)``, lse the forward's base-2 log-sum-exp ``(B*H, Lq)``.
    One fixed ``config = (BLOCK_M, BLOCK_N, num_warps, num_stages)``: an autotuner would run the kernel
    several times into the same dQ buffer.
    """
    do = do if do.stride(-1) == 1 else do.contiguous()
    delta = _backward_delta(o, do)
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)  # the atomic adds' float32 buffer
    fixed = _fixed(config)

    def grid(meta):
        return (triton.cdiv(lk, meta["BLOCK_N"]) * b * hk,)

    flash_bwd_dkdv_kernel.fn[grid](
        q, k, v, do, dk, dv, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(), *dq.stride(),
        h, hk, h // hk, lq, lk, d, scale, scale * _LOG2E,
        CAUSAL=causal, BLOCK_D=_block_d(d), PRECISION=_precision(q.dtype), FUSE_DQ=True, **fixed,
    )
    return dq.to(q.dtype), dk, dv
