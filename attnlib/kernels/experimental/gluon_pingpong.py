r"""Experimental: the Gluon forward with a loader warp and two consumer warp groups taking turns (ping-pong).

*What it tries.* FlashAttention-3's whole forward schedule: the only kernel here shaped like the
forward that beats cuDNN on Hopper. *What has been measured.* Only the compiler's view (sm_90,
12 warps at ``maxnreg=168``; the 128x128 tile with three stages uses 230,784 of the 232,448 bytes
of shared memory an sm_90 block may have, so it fits); it has never run on a GPU.

In :mod:`.gluon_ws` the two warp groups of the consumers form one partition: they
issue their products together and meet at every barrier. FlashAttention-3 (background, not a
seed) lets them take turns instead: while one warp group computes its softmax on the CUDA
cores, the other's matrix products run on the tensor cores, and then the other way round.
Here each warp group is a partition of its own (4 warps, 64 of the tile's 128 query rows; the
first is the default partition, the second a worker, the loader a third), and two ``mbarrier``
"turns" order their issues::

    warp group c, each step j:
        wait   turn[c]            (phase (j & 1) ^ (1 - c): group 0 goes first)
        issue  S_{j+1} and P_j V_j
        arrive turn[1 - c]        the other group may issue now; this one computes its softmax

The loop step is :func:`.gluon._overlapped_step` with ``TAKE_TURNS``; the "free"
barriers of each K/V slot now wait for two arrivals, one per warp group. Registers: 12 warps
at ``maxnreg=168``; the loader keeps 24, each consumer group 240.

Same scope and checks as :mod:`.gluon` (square 128-row tiles split into two halves).
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier

from .gluon import (
    _barrier_ring,
    _epilogue,
    _first_tile,
    _kv_slots,
    _last_product,
    _mma_layouts,
    _overlapped_step,
    _program_tiles,
    _tma_load,
    check_gluon_supported,
    check_runnable,
    flattened_launch,
)
from .gluon_ws import LOADER_REGISTERS, MAX_REGISTERS, load_kv_when_free

__all__ = ["flash_fwd_gluon_pingpong", "GLUON_PINGPONG_CONFIGS"]

# (BLOCK_M, BLOCK_N, num_warps of the two consumer groups together, STAGES); BLOCK_M = 2 x 64 rows.
# Three stages fit sm_90's shared memory at D=128 (230,784 of 232,448 bytes; tools/compile_kernels.py).
GLUON_PINGPONG_CONFIGS = ((128, 128, 8, 2), (128, 128, 8, 3))
_CONSUMER_REGISTERS = 240  # the second consumer group's; the first gets what is left of 12 x 32 x 168


@gluon.jit
def _loader(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_free, v_free, q_row, kv_row,
            n_tiles, STAGES: gl.constexpr, HALF: gl.constexpr, BLOCK_N: gl.constexpr):
    """The loader: the two halves of Q once, then each K and V tile as soon as both groups freed its slot."""
    mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)  # both halves complete one phase of q_bar
    for c in gl.static_range(2):
        _tma_load(q_desc, [q_row + c * HALF, 0], q_bar, q_smem.index(c))
    load_kv_when_free(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, k_free, v_free, kv_row, n_tiles, STAGES,
                      BLOCK_N)


@gluon.jit
def _consumer(c: gl.constexpr, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_free, v_free, turns, o_desc, LSE,
              q_row, off_bh, start_m, LQ, DIAG, n_tiles, qk_scale, CAUSAL: gl.constexpr, STAGES: gl.constexpr,
              HALF: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_D: gl.constexpr):
    """Warp group ``c`` (4 warps): query rows ``c * HALF ...`` of the tile, from the first key tile to the output."""
    layouts: gl.constexpr = _mma_layouts(4, BLOCK_N, BLOCK_D)  # one warp group
    s_layout: gl.constexpr = layouts[0]
    o_layout: gl.constexpr = layouts[1]
    p_layout: gl.constexpr = layouts[2]
    half = 2 * start_m + c  # this group's rows, in units of HALF (the causal mask and the LSE rows need it)
    q_half = q_smem.index(c)
    acc, l_i, m_i, p = _first_tile(q_half, k_smem, q_bar, k_ready, half, DIAG, qk_scale, CAUSAL, HALF, BLOCK_N,
                                   BLOCK_D, s_layout, o_layout)
    mbarrier.arrive(k_free.index(0), count=1)
    for j in range(0, n_tiles - 2):
        acc, l_i, m_i, p = _overlapped_step(j, acc, l_i, m_i, p, q_half, k_smem, v_smem, k_ready, v_ready, half, DIAG,
                                            qk_scale, False, STAGES, HALF, BLOCK_N, s_layout, o_layout, p_layout,
                                            turns.index(c), turns.index(1 - c), (j & 1) ^ (1 - c), True)
        mbarrier.arrive(k_free.index((j + 1) % STAGES), count=1)
        mbarrier.arrive(v_free.index(j % STAGES), count=1)
    if n_tiles >= 2:  # (causal) the step into the diagonal tile
        last_step = n_tiles - 2
        acc, l_i, m_i, p = _overlapped_step(last_step, acc, l_i, m_i, p, q_half, k_smem, v_smem, k_ready, v_ready,
                                            half, DIAG, qk_scale, CAUSAL, STAGES, HALF, BLOCK_N, s_layout, o_layout,
                                            p_layout, turns.index(c), turns.index(1 - c), (last_step & 1) ^ (1 - c),
                                            True)
        mbarrier.arrive(k_free.index((n_tiles - 1) % STAGES), count=1)
        mbarrier.arrive(v_free.index((n_tiles - 2) % STAGES), count=1)
    acc = _last_product(acc, p, v_smem, v_ready, n_tiles - 1, STAGES, p_layout)
    _epilogue(acc, l_i, m_i, q_half, o_desc, LSE, q_row + c * HALF, off_bh, half, LQ, HALF, s_layout, o_layout)


@gluon.jit
def _flash_fwd_gluon_pingpong_kernel(
    q_desc, k_desc, v_desc, o_desc, LSE,  # q/o descriptors tile HALF rows; k/v BLOCK_N rows; LSE (B*H, LQ) fp32
    H, GROUP, LQ, LK, qk_scale,
    CAUSAL: gl.constexpr, STAGES: gl.constexpr, LOADER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    num_warps: gl.constexpr,
):
    HALF: gl.constexpr = q_desc.block_type.shape[0]
    BLOCK_D: gl.constexpr = q_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    gl.static_assert(num_warps == 4, "the default partition is one consumer warp group")

    start_m, off_bh, q_row, kv_row, DIAG, n_tiles = _program_tiles(H, GROUP, LQ, LK, CAUSAL, 2 * HALF, BLOCK_N)

    q_smem = gl.allocate_shared_memory(q_desc.dtype, [2, HALF, BLOCK_D], q_desc.layout)  # the two halves
    k_smem, v_smem = _kv_slots(k_desc, v_desc, STAGES)
    q_bar = _barrier_ring(1, 1).index(0)
    k_ready = _barrier_ring(STAGES, 1)
    v_ready = _barrier_ring(STAGES, 1)
    k_free = _barrier_ring(STAGES, 2)  # one arrival from each consumer group
    v_free = _barrier_ring(STAGES, 2)
    turns = _barrier_ring(2, 1)  # turns.index(c): warp group c may issue its products

    gl.warp_specialize([
        (_consumer, (0, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_free, v_free, turns, o_desc, LSE, q_row,
                     off_bh, start_m, LQ, DIAG, n_tiles, qk_scale, CAUSAL, STAGES, HALF, BLOCK_N, BLOCK_D)),
        (_consumer, (1, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_free, v_free, turns, o_desc, LSE, q_row,
                     off_bh, start_m, LQ, DIAG, n_tiles, qk_scale, CAUSAL, STAGES, HALF, BLOCK_N, BLOCK_D)),
        (_loader, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_free, v_free, q_row,
                   kv_row, n_tiles, STAGES, HALF, BLOCK_N)),
    ], [4, 1], [CONSUMER_REGS, LOADER_REGS])


def flash_fwd_gluon_pingpong(q, k, v, causal: bool, scale: float, config=GLUON_PINGPONG_CONFIGS[0]):
    """q (B, H, Lq, D), k/v (B, Hk, Lk, D) -> (o (B, H, Lq, D), lse2 (B*H, Lq) float32, base 2).

    ``config = (BLOCK_M, BLOCK_N, num_warps, STAGES)`` with ``num_warps = 8``: two consumer groups of 4
    (the loader's warp comes on top); Hopper GPUs only (or compiled ahead of time by
    :mod:`attnlib.kernels.resources`).
    """
    block_m, block_n, num_warps, stages = config
    check_runnable()
    if num_warps != 8 or block_m != 128:
        raise ValueError(f"config must have BLOCK_M=128 and num_warps=8 (two warp groups of 64 rows), got {config}")
    check_gluon_supported(q, k, causal, block_m, block_n, v)
    o2, lse, descs, scalars = flattened_launch(q, k, v, block_m // 2, block_n)  # q/o tiled by half a tile
    _flash_fwd_gluon_pingpong_kernel[(q.shape[2] // block_m, lse.shape[0])](
        *descs, lse, *scalars, scale * 1.4426950408889634,
        CAUSAL=causal, STAGES=stages, LOADER_REGS=LOADER_REGISTERS, CONSUMER_REGS=_CONSUMER_REGISTERS,
        num_warps=4, maxnreg=MAX_REGISTERS,
    )
    return o2.reshape(q.shape), lse
