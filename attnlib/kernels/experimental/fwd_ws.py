r"""Experimental: the forward with on-device tensor descriptors and Triton's warp specialisation.

*What it tries.* Whether Triton's automatic warp specialisation (a producer warp group that only
loads, consumers that only compute) makes the forward faster than the TMA kernel on Hopper.
*What has been measured.* Only what the compiler says (sm_90, D=128 bf16: 4 warps become 12 with
register reallocation, 168 registers, no spill) and its output in Triton's CPU interpreter
(``tests/test_kernels_flash_ws.py``); it has never run on a GPU, so its speed is unknown.

FlashAttention-3 (background, not a seed) splits a Hopper thread block into *warp groups
with different jobs*: one group only issues the copy engine's tile loads (the producer),
the others only compute (the consumers), and the consumers hand the registers the producer
does not need to themselves (``setmaxnreg``). Triton builds that structure automatically
for a loop marked ``tl.range(..., warp_specialize=True)`` on sm_90 (Meta's pass, in Triton
3.6 and 3.9) when the loop loads through descriptors created *in the kernel*
(``tl.make_tensor_descriptor``) rather than on the host.

Compiled for sm_90 with 4 warps per program (``tools/compile_kernels.py``; no GPU needed),
the kernel becomes 12 warps with register reallocation; with 8 warps the pass leaves it
alone. Whether it is faster is for a GPU to say: the benchmark's forward ladder
(``attnlib.bench.flash.LADDER``) and ``tools/gpu_forward_target.py`` time it.

Scope, kept small on purpose: float16 or bfloat16, head dim 64 or 128, and lengths that are
whole multiples of the tiles (so no tile needs a length mask and none crosses from one head into
the next of the flattened ``(B*H*L, D)`` views). The math is the online softmax of
:func:`attnlib.kernels._flash_fwd.online_softmax_step`.

Causal, one loop with the mask on every tile. The pass takes one loop: a kernel with two
specialised loops (unmasked tiles, then the diagonal's masked ones, as attnlib's other forwards
do) fails in the pass (``PassManager::run failed`` in ``NVGPUWarpSpecialization``, Triton 3.6 and
3.9), and a branch inside the loop between a masked and an unmasked step makes the pass leave the
loop alone (4 warps, 255 registers, spills). So the causal kernel runs one specialised loop over
every key tile a row of the query tile may see and masks each of them: one compare and one select
per score more than needed on the tiles left of the diagonal (compiled for sm_90, D=128 bf16:
12 warps, 168 registers, no spill, as the non-causal kernel; ``tools/compile_kernels.py``).
Causal needs ``Lk >= Lq``: with more queries than keys, a query tile that sees no key would run the
specialised loop zero times, a case no GPU has tried (a hang would be a hang in user code).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._flash_fwd import key_tile_range, online_softmax_step

__all__ = ["flash_fwd_ws", "check_ws_supported", "unhandled", "flatten_heads", "WS_CONFIGS"]

# (BLOCK_M, BLOCK_N, num_warps before specialisation, num_stages): the tiles the ladder times. With
# the producer's extra buffers, 128x128 fits sm_90's 227 KiB of shared memory at two stages, not three.
WS_CONFIGS = ((128, 64, 4, 3), (128, 128, 4, 2))


@triton.jit
def _flash_fwd_ws_kernel(
    Q, K, V, Out, LSE,  # q/out (B*H*LQ, D), k/v (B*Hk*LK, D) contiguous; LSE (B*H, LQ) float32, base 2
    H, GROUP, LQ, LK, qk_scale,
    CAUSAL: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    start_m = tl.program_id(0)
    if CAUSAL:  # heaviest query tiles first
        start_m = tl.num_programs(0) - 1 - start_m
    off_bh = tl.program_id(1)
    off_kh = (off_bh // H) * (H // GROUP) + (off_bh % H) // GROUP  # the shared K/V head
    # Descriptors made here, on the device (the warp-specialisation pass needs them so).
    q_desc = tl.make_tensor_descriptor(Q, shape=[tl.num_programs(1) * LQ, BLOCK_D], strides=[BLOCK_D, 1],
                                       block_shape=[BLOCK_M, BLOCK_D])
    o_desc = tl.make_tensor_descriptor(Out, shape=[tl.num_programs(1) * LQ, BLOCK_D], strides=[BLOCK_D, 1],
                                       block_shape=[BLOCK_M, BLOCK_D])
    kv_rows = (tl.num_programs(1) // GROUP) * LK
    k_desc = tl.make_tensor_descriptor(K, shape=[kv_rows, BLOCK_D], strides=[BLOCK_D, 1],
                                       block_shape=[BLOCK_N, BLOCK_D])
    v_desc = tl.make_tensor_descriptor(V, shape=[kv_rows, BLOCK_D], strides=[BLOCK_D, 1],
                                       block_shape=[BLOCK_N, BLOCK_D])
    q_row = off_bh * LQ + start_m * BLOCK_M  # first row of this query tile in the flattened view
    kv_row = off_kh * LK
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)

    q = q_desc.load([q_row, 0])  # (BLOCK_M, BLOCK_D)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    # Keys [0, hi) are those some row of this tile may see (all of them when not causal); causal, every tile
    # is masked (the pass takes one loop, see the module docstring): key j is seen by row i if j <= i + LK - LQ.
    _, hi = key_tile_range(start_m, LK - LQ, LK, CAUSAL, BLOCK_M, BLOCK_N)
    for start_n in tl.range(0, hi, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        k = k_desc.load([kv_row + start_n, 0])  # (BLOCK_N, BLOCK_D)
        v = v_desc.load([kv_row + start_n, 0])
        acc, l_i, m_i = online_softmax_step(acc, l_i, m_i, q, k, v, start_n + offs_n, offs_m, qk_scale, LK,
                                            LK - LQ, CAUSAL, CAUSAL, "tf32")
    o_desc.store([q_row, 0], (acc / l_i[:, None]).to(q.dtype))  # every row has seen a key (Lk >= Lq if causal)
    tl.store(LSE + off_bh * LQ + offs_m, m_i + tl.math.log2(l_i))


def unhandled(q: torch.Tensor, k: torch.Tensor, causal: bool, block_m: int, block_n: int, v=None) -> list[str]:
    """What this forward does not handle, in words (the Gluon forwards add their own limits to these).

    Beyond their limits (half precision, D 64 or 128, whole tiles), the inputs must fit
    together as :func:`attnlib.kernels.flash_attention` checks them, since these kernels read rows of
    flattened tensors and the copy engine fills rows past the end with zeros: a mismatch would give a
    wrong answer, not an error. (``v``, when given, must have ``k``'s shape and dtype.)"""
    if q.dim() != 4 or k.dim() != 4:
        return [f"shapes {tuple(q.shape)} and {tuple(k.shape)} (q (B, H, Lq, D) and k (B, Hk, Lk, D), 4-D)"]
    lq, lk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    problems = []
    if k.shape[0] != q.shape[0] or k.shape[-1] != d or k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        problems.append(f"q of shape {tuple(q.shape)} with k of shape {tuple(k.shape)} (the same batch and head "
                        "dim, and a number of K/V heads that divides the query heads)")
    if v is not None and (v.shape != k.shape or v.dtype != k.dtype):
        problems.append(f"v of shape {tuple(v.shape)} and dtype {v.dtype} (k's: {tuple(k.shape)}, {k.dtype})")
    if k.dtype != q.dtype:
        problems.append(f"k of dtype {k.dtype} with q of dtype {q.dtype} (one dtype)")
    if causal and lq > lk:  # query tiles with no key to see would run the specialised loop zero times
        problems.append(f"causal with Lq={lq} > Lk={lk} (rows that see no key; causal needs Lk >= Lq)")
    if q.dtype not in (torch.float16, torch.bfloat16):
        problems.append(f"dtype {q.dtype} (float16 or bfloat16 only)")
    if d not in (64, 128):
        problems.append(f"head dim {d} (64 or 128 only)")
    if q.shape[0] * q.shape[1] > 65_535:  # the grid is (query tiles, B*H): axis 1 stops at 65,535
        problems.append(f"B*H = {q.shape[0] * q.shape[1]} (at most 65,535: the grid's second axis)")
    if lq % block_m or lk % block_n or lq == 0 or lk == 0:
        problems.append(f"lengths Lq={lq}, Lk={lk} (must be positive multiples of the {block_m}x{block_n} tile)")
    return problems


def check_ws_supported(q: torch.Tensor, k: torch.Tensor, causal: bool, block_m: int, block_n: int, v=None) -> None:
    """Raise ValueError naming what this experimental kernel does not handle (see the module docstring)."""
    problems = unhandled(q, k, causal, block_m, block_n, v)
    if problems:
        raise ValueError("the warp-specialised forward does not handle " + "; ".join(problems))


def _torch_scratch(size: int, alignment: int, stream):
    """Global memory for the descriptors a kernel creates on the device (Triton asks for it at launch)."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_allocator() -> None:
    """On-device descriptors need ``triton.set_allocator``; set a torch one unless the caller set their own."""
    from triton.runtime import _allocation

    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(_torch_scratch)


def flash_fwd_ws(q, k, v, causal: bool, scale: float, config=WS_CONFIGS[0], warp_specialize: bool = True):
    """q (B, H, Lq, D), k/v (B, Hk, Lk, D) -> (o (B, H, Lq, D), lse2 (B*H, Lq) float32, base 2).

    ``config = (BLOCK_M, BLOCK_N, num_warps, num_stages)``; ``num_warps`` counts the warps *before*
    specialisation (4: one consumer warp group per 64 rows, Triton adds the producer).
    """
    block_m, block_n, num_warps, num_stages = config
    check_ws_supported(q, k, causal, block_m, block_n, v)
    q2, k2, v2, o2, lse, scalars = flatten_heads(q, k, v)
    if q.is_cuda:
        _ensure_allocator()
    _flash_fwd_ws_kernel[(q.shape[2] // block_m, lse.shape[0])](
        q2, k2, v2, o2, lse, *scalars, scale * 1.4426950408889634,
        CAUSAL=bool(causal), BLOCK_D=q.shape[3], BLOCK_M=block_m, BLOCK_N=block_n,
        WARP_SPECIALIZE=warp_specialize,
        num_warps=num_warps, num_stages=num_stages,
    )
    return o2.reshape(q.shape), lse


def flatten_heads(q, k, v):
    """``(q2, k2, v2, o2, lse, (H, H // Hk, Lq, Lk))``: q/o as ``(B*H*Lq, D)``, k/v as ``(B*Hk*Lk, D)``
    (contiguous; with lengths that are whole tiles no tile crosses from one head into the next), and the
    base-2 log-sum-exp ``(B*H, Lq)`` float32 to fill. Shared by the kernels that load 2-D tiles."""
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    q2 = q.reshape(b * h * lq, d).contiguous()
    k2 = k.reshape(b * hk * lk, d).contiguous()
    v2 = v.reshape(b * hk * lk, d).contiguous()
    lse = torch.empty((b * h, lq), device=q.device, dtype=torch.float32)
    return q2, k2, v2, torch.empty_like(q2), lse, (h, h // hk, lq, lk)
