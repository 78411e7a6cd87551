r"""An experimental Hopper dK/dV kernel: on-device descriptors, optionally warp-specialised.

The backward's dK/dV kernel (:mod:`._flash_bwd`) holds a key tile's two float32 accumulators
for its whole loop over the queries, and at 64 query rows x 128 keys (D = 128, the tile the
autotuner picks on an H200) it needs all 255 registers a thread may have and spills. Part
of the rest is addresses: a ``(64, 128)`` block of pointers for Q and one for dO. Loading
those tiles through tensor descriptors made in the kernel (``tl.make_tensor_descriptor``)
leaves the address arithmetic to the copy engine. Compiled for sm_90 (no GPU needed:
``python -m attnlib.kernels.resources --kernel dkdv-ws``), the same tile then needs 237-248
registers (Triton 3.9, 3.6) and no spill; with 4 warps and
``tl.range(..., warp_specialize=True)``, Triton splits it into a loading warp group and two
computing ones (12 warps, ``setmaxnreg``), as FlashAttention-3 does by hand.

The math is the loop of :func:`._flash_bwd._dkdv_inner` without its masks: for each query tile,
:math:`P^\top = \exp_2(s\,K Q^\top \log_2 e - \mathrm{lse}_2)`, :math:`dV \mathrel{+}= P^\top dO`,
:math:`dS^\top = P^\top \circ (V\,dO^\top - \delta)`, :math:`dK \mathrel{+}= dS^\top Q`, and
:math:`dK` is scaled by :math:`s` at the end.

Scope, kept small on purpose (the benchmark times it; :func:`attnlib.kernels.flash_attention`
does not use it): not causal, one query head per key/value head, float16 or bfloat16, head
dim 64 or 128, lengths that are whole multiples of the tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._flash_fwd_ws import _ensure_allocator, unhandled

__all__ = ["dkdv_ws", "check_dkdv_ws_supported", "DKDV_WS_CONFIGS"]

# (label, (BLOCK_M, BLOCK_N, num_warps, num_stages), warp_specialize): the variants the benchmark times.
DKDV_WS_CONFIGS = (
    ("descriptors 64x128, 8 warps, 3 stages", (64, 128, 8, 3), False),
    ("warp-specialized 64x128, 4(+8) warps, 2 stages", (64, 128, 4, 2), True),
)


@triton.jit
def _flash_bwd_dkdv_ws_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA,  # (B*H*L, D) contiguous; LSE (base 2) and DELTA (B*H, LQ) float32
    LQ, LK, sm_scale, qk_scale,
    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):
    start_n = tl.program_id(0) * BLOCK_N
    off_bh = tl.program_id(1)
    q_rows, kv_rows = tl.num_programs(1) * LQ, tl.num_programs(1) * LK
    q_desc = tl.make_tensor_descriptor(Q, shape=[q_rows, BLOCK_D], strides=[BLOCK_D, 1], block_shape=[BLOCK_M, BLOCK_D])
    do_desc = tl.make_tensor_descriptor(DO, shape=[q_rows, BLOCK_D], strides=[BLOCK_D, 1],
                                        block_shape=[BLOCK_M, BLOCK_D])
    k_desc = tl.make_tensor_descriptor(K, shape=[kv_rows, BLOCK_D], strides=[BLOCK_D, 1],
                                       block_shape=[BLOCK_N, BLOCK_D])
    v_desc = tl.make_tensor_descriptor(V, shape=[kv_rows, BLOCK_D], strides=[BLOCK_D, 1],
                                       block_shape=[BLOCK_N, BLOCK_D])
    dk_desc = tl.make_tensor_descriptor(DK, shape=[kv_rows, BLOCK_D], strides=[BLOCK_D, 1],
                                        block_shape=[BLOCK_N, BLOCK_D])
    dv_desc = tl.make_tensor_descriptor(DV, shape=[kv_rows, BLOCK_D], strides=[BLOCK_D, 1],
                                        block_shape=[BLOCK_N, BLOCK_D])
    kv_row = off_bh * LK + start_n
    k = k_desc.load([kv_row, 0])  # (BLOCK_N, BLOCK_D), held for the whole loop
    v = v_desc.load([kv_row, 0])
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    offs_m = tl.arange(0, BLOCK_M)
    for start_m in tl.range(0, LQ, BLOCK_M, warp_specialize=WARP_SPECIALIZE):
        q = q_desc.load([off_bh * LQ + start_m, 0])  # (BLOCK_M, BLOCK_D)
        do = do_desc.load([off_bh * LQ + start_m, 0])
        lse = tl.load(LSE + off_bh * LQ + start_m + offs_m)  # (BLOCK_M,)
        delta = tl.load(DELTA + off_bh * LQ + start_m + offs_m)
        p_t = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - lse[None, :])  # (BLOCK_N, BLOCK_M) = P^T
        dv += tl.dot(p_t.to(do.dtype), do)  # dV += P^T dO
        ds_t = p_t * (tl.dot(v, tl.trans(do)) - delta[None, :])  # dS^T = P^T o (dP^T - delta)
        dk += tl.dot(ds_t.to(q.dtype), q)  # dK += dS^T Q
    dk_desc.store([kv_row, 0], (dk * sm_scale).to(k.dtype))
    dv_desc.store([kv_row, 0], dv.to(v.dtype))


def check_dkdv_ws_supported(q: torch.Tensor, k: torch.Tensor, causal: bool, block_m: int, block_n: int) -> None:
    """Raise ValueError naming what this experimental kernel does not handle (see the module docstring)."""
    problems = unhandled(q, k, causal, block_m, block_n, causal_handled=False)
    if q.shape[1] != k.shape[1]:
        problems.append(f"grouped K/V heads ({q.shape[1]} query heads, {k.shape[1]} key/value heads)")
    if problems:
        raise ValueError("the experimental dK/dV kernel does not handle " + "; ".join(problems))


def dkdv_ws(q, k, v, do, lse, delta, causal: bool, scale: float, config=DKDV_WS_CONFIGS[0][1],
            warp_specialize: bool = False):
    """dK, dV ``(B, H, Lk, D)`` from q, k, v, dO ``(B, H, L, D)``, lse2 and delta ``(B*H, Lq)`` float32.

    ``config = (BLOCK_M, BLOCK_N, num_warps, num_stages)``; with ``warp_specialize``, ``num_warps``
    counts the warps before specialisation (4: Triton adds the loading warp group).
    """
    block_m, block_n, num_warps, num_stages = config
    check_dkdv_ws_supported(q, k, causal, block_m, block_n)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    q2, k2, v2, do2 = (x.reshape(-1, d).contiguous() for x in (q, k, v, do))
    dk, dv = torch.empty_like(k2), torch.empty_like(v2)
    if q.is_cuda:
        _ensure_allocator()
    _flash_bwd_dkdv_ws_kernel[(lk // block_n, b * h)](
        q2, k2, v2, do2, dk, dv, lse.contiguous(), delta.contiguous(), lq, lk, scale, scale * 1.4426950408889634,
        BLOCK_D=d, BLOCK_M=block_m, BLOCK_N=block_n, WARP_SPECIALIZE=warp_specialize,
        num_warps=num_warps, num_stages=num_stages,
    )
    return dk.reshape(k.shape), dv.reshape(v.shape)
