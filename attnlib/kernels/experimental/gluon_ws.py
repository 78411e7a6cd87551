r"""Experimental: the Gluon forward again, with a loader warp (FlashAttention-3's producer and consumers).

*What it tries.* Whether taking the copies off the compute warps (one warp that only loads) adds
to :mod:`.gluon`'s overlap. *What has been measured.* Only the compiler's view (sm_90, 8 + 1 warps
at ``maxnreg=168``; ``tests/test_kernels_flash_gluon.py``); it has never run on a GPU.

In :mod:`.gluon` the eight compute warps also issue the copies: after each step
they meet at a block-wide barrier and one of them starts the loads of the two freed slots
(and Triton's shared-memory analysis adds barriers of its own around each copy: six per
step in the compiled kernel). Here one extra warp does nothing but load (a *worker
partition*, ``gl.warp_specialize``), and the two kinds of warps talk through ``mbarrier``
pairs per slot, as FlashAttention-3 (background, not a seed) does on Hopper::

    loader (1 warp)                              consumers (8 warps: two warp groups)
    for tile t:                                  for tile j:
        wait  k_free[t % S]                          wait k_ready, v_ready; products; softmax
        load  K_t  -> completes k_ready[t % S]       (exactly :func:`.gluon._overlapped_step`)
        wait  v_free[t % S]                          arrive k_free[(j+1) % S], v_free[j % S]
        load  V_t  -> completes v_ready[t % S]

A "free" barrier completes once per use of its slot: the consumers' ``mbarrier.arrive`` (one
arrival, after all eight warps have reached it) says the slot's tile has been read by both warp
groups. Barriers start as if a phase had just completed, so the loader's first wait on each
slot, on phase ``((t // S) & 1) ^ 1``, passes at once. The consumers' registers: the kernel
is launched with ``maxnreg=168`` (12 warps x 32 threads x 168 fits the SM's 65,536), and the
loader's warp group hands its share to them (``setmaxnreg``): 240 per consumer thread.

Same scope as :mod:`.gluon` (its :func:`~.gluon.unhandled`), same
results (the benchmark's child process checks both on a GPU before timing them).
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
    _load_tile,
    _mma_layouts,
    _overlapped_step,
    _program_tiles,
    check_gluon_supported,
    check_runnable,
    flattened_launch,
)

__all__ = ["flash_fwd_gluon_ws", "load_kv_when_free", "GLUON_WS_CONFIGS", "LOADER_REGISTERS", "MAX_REGISTERS"]

# (BLOCK_M, BLOCK_N, num_warps of the consumers, STAGES). With a loader that runs ahead, a third
# slot of K and V may pay: 128x128 at D=128 bf16 then takes 224 KiB of the 227.
GLUON_WS_CONFIGS = ((128, 128, 8, 2), (128, 128, 8, 3))
LOADER_REGISTERS = 24  # the least a warp group may be given: the loader holds a few addresses and counters
MAX_REGISTERS = 168  # per thread at launch, for 8 + 4 warps (the loader's warp is rounded up to a warp group)


@gluon.jit
def _loader(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_free, v_free, q_row, kv_row,
            n_tiles, STAGES: gl.constexpr, BLOCK_N: gl.constexpr):
    """The worker partition: Q once, then each K and V tile as soon as its slot is free."""
    _load_tile(q_desc, q_row, q_bar, q_smem)
    load_kv_when_free(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, k_free, v_free, kv_row, n_tiles, STAGES,
                      BLOCK_N)


@gluon.jit
def load_kv_when_free(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, k_free, v_free, kv_row, n_tiles,
                      STAGES: gl.constexpr, BLOCK_N: gl.constexpr):
    """Each K and V tile into slot ``t % STAGES`` as soon as the consumers have freed it (the loader's loop)."""
    for t in range(n_tiles):
        slot = t % STAGES
        free_phase = ((t // STAGES) & 1) ^ 1  # the first wait on a fresh barrier passes at once
        mbarrier.wait(k_free.index(slot), free_phase)
        _load_tile(k_desc, kv_row + t * BLOCK_N, k_ready.index(slot), k_smem.index(slot))
        mbarrier.wait(v_free.index(slot), free_phase)
        _load_tile(v_desc, kv_row + t * BLOCK_N, v_ready.index(slot), v_smem.index(slot))


@gluon.jit
def _consumers(q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_free, v_free, o_desc, LSE, q_row, off_bh,
               start_m, LQ, DIAG, n_tiles, qk_scale, CAUSAL: gl.constexpr, STAGES: gl.constexpr,
               BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_D: gl.constexpr, s_layout: gl.constexpr,
               o_layout: gl.constexpr, p_layout: gl.constexpr):
    """The default partition (the kernel's ``num_warps``): the products, the softmax and the output."""
    acc, l_i, m_i, p = _first_tile(q_smem, k_smem, q_bar, k_ready, start_m, DIAG, qk_scale, CAUSAL, BLOCK_M, BLOCK_N,
                                   BLOCK_D, s_layout, o_layout)
    mbarrier.arrive(k_free.index(0), count=1)
    for j in range(0, n_tiles - 2):
        acc, l_i, m_i, p = _overlapped_step(j, acc, l_i, m_i, p, q_smem, k_smem, v_smem, k_ready, v_ready, start_m,
                                            DIAG, qk_scale, False, STAGES, BLOCK_M, BLOCK_N, s_layout, o_layout,
                                            p_layout)
        mbarrier.arrive(k_free.index((j + 1) % STAGES), count=1)
        mbarrier.arrive(v_free.index(j % STAGES), count=1)
    if n_tiles >= 2:  # (causal) the step into the diagonal tile
        acc, l_i, m_i, p = _overlapped_step(n_tiles - 2, acc, l_i, m_i, p, q_smem, k_smem, v_smem, k_ready, v_ready,
                                            start_m, DIAG, qk_scale, CAUSAL, STAGES, BLOCK_M, BLOCK_N, s_layout,
                                            o_layout, p_layout)
        mbarrier.arrive(k_free.index((n_tiles - 1) % STAGES), count=1)  # (with one slot, the loader's last
        mbarrier.arrive(v_free.index((n_tiles - 2) % STAGES), count=1)  # V tile waits for this one)
    acc = _last_product(acc, p, v_smem, v_ready, n_tiles - 1, STAGES, p_layout)
    _epilogue(acc, l_i, m_i, q_smem, o_desc, LSE, q_row, off_bh, start_m, LQ, BLOCK_M, s_layout, o_layout)


@gluon.jit
def _flash_fwd_gluon_ws_kernel(
    q_desc, k_desc, v_desc, o_desc, LSE,  # descriptors over q/o (B*H*LQ, D), k/v (B*Hk*LK, D); LSE (B*H, LQ) fp32
    H, GROUP, LQ, LK, qk_scale,
    CAUSAL: gl.constexpr, STAGES: gl.constexpr, LOADER_REGS: gl.constexpr, num_warps: gl.constexpr,
):
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[0]
    BLOCK_D: gl.constexpr = q_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    layouts: gl.constexpr = _mma_layouts(num_warps, BLOCK_N, BLOCK_D)
    s_layout: gl.constexpr = layouts[0]
    o_layout: gl.constexpr = layouts[1]
    p_layout: gl.constexpr = layouts[2]

    start_m, off_bh, q_row, kv_row, DIAG, n_tiles = _program_tiles(H, GROUP, LQ, LK, CAUSAL, BLOCK_M, BLOCK_N)

    q_smem = gl.allocate_shared_memory(q_desc.dtype, [BLOCK_M, BLOCK_D], q_desc.layout)
    k_smem, v_smem = _kv_slots(k_desc, v_desc, STAGES)
    q_bar = _barrier_ring(1, 1).index(0)
    k_ready = _barrier_ring(STAGES, 1)  # a tile has arrived in the slot (the copy's bytes end the phase)
    v_ready = _barrier_ring(STAGES, 1)
    k_free = _barrier_ring(STAGES, 1)  # the consumers (one arrival: all their warps) are done with the slot
    v_free = _barrier_ring(STAGES, 1)

    gl.warp_specialize([
        (_consumers, (q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_free, v_free, o_desc, LSE, q_row, off_bh,
                      start_m, LQ, DIAG, n_tiles, qk_scale, CAUSAL, STAGES, BLOCK_M, BLOCK_N, BLOCK_D, s_layout,
                      o_layout, p_layout)),
        (_loader, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_free, v_free, q_row,
                   kv_row, n_tiles, STAGES, BLOCK_N)),
    ], [1], [LOADER_REGS])


def flash_fwd_gluon_ws(q, k, v, causal: bool, scale: float, config=GLUON_WS_CONFIGS[0]):
    """q (B, H, Lq, D), k/v (B, Hk, Lk, D) -> (o (B, H, Lq, D), lse2 (B*H, Lq) float32, base 2).

    ``config = (BLOCK_M, BLOCK_N, num_warps, STAGES)``, ``num_warps`` the consumers' (the loader's warp
    comes on top); Hopper GPUs only (or compiled ahead of time by :mod:`attnlib.kernels.resources`).
    """
    block_m, block_n, num_warps, stages = config
    check_runnable()
    check_gluon_supported(q, k, causal, block_m, block_n, v)
    o2, lse, descs, scalars = flattened_launch(q, k, v, block_m, block_n)
    _flash_fwd_gluon_ws_kernel[(q.shape[2] // block_m, lse.shape[0])](
        *descs, lse, *scalars, scale * 1.4426950408889634,
        CAUSAL=causal, STAGES=stages, LOADER_REGS=LOADER_REGISTERS, num_warps=num_warps, maxnreg=MAX_REGISTERS,
    )
    return o2.reshape(q.shape), lse
