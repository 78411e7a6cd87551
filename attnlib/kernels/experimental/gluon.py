r"""Experimental: a Hopper forward in Gluon, the next tile's scores in flight during this tile's softmax.

*What it tries.* Whether overlapping the softmax with the tensor cores inside one warp group (the
first half of FlashAttention-3's schedule) lifts the forward above the TMA kernel. *What has been
measured.* Only what the compiler says (sm_90: wgmma, no spill, the exponentials placed while a
product is in flight; ``tests/test_kernels_flash_gluon.py``); Gluon has no CPU interpreter, so its
output has never been computed, and it has never run on a GPU. This module also holds the helpers
the other Gluon forwards share (barrier rings, tile loads, the causal mask, the epilogue, the launch).

Why a second language. In a ``tl.dot`` loop the compiler decides when each matrix product is
waited for, and for attention it waits for the scores ``S = Q K^T`` at once, before any
``exp2`` (lab 16, exercise 5 reads that in the TTGIR): the tensor cores idle while the
softmax runs, and the softmax idles while they work. FlashAttention-3 (background, not a
seed) overlaps the two inside one warp group: issue the next tile's ``Q K_{j+1}^T``, issue this
tile's ``P_j V_j``, wait for the scores only, and compute the softmax of tile ``j+1`` while
``P_j V_j`` still runs. Gluon (``triton.experimental.gluon``, in Triton 3.6 and 3.9) is
Triton's lower-level dialect where the kernel says this itself: shared-memory buffers,
``mbarrier`` completion barriers, copy-engine (TMA) loads, asynchronous warp-group matrix
products (``warpgroup_mma(..., is_async=True)``) and waits that leave some in flight
(``warpgroup_mma_wait(num_outstanding=1)``).

One program computes a ``BLOCK_M x D`` tile of the output with ``num_warps = 8``: two warp
groups of 64 rows each, every product issued by both. The loop, for key tile ``j``::

    S_{j+1} = Q K_{j+1}^T           async (needs K tile j+1 in shared memory)
    O      += P_j V_j               async (P_j in registers, V tile j in shared memory)
    wait until at most 1 product is in flight       -> S_{j+1} is done, P_j V_j still runs
    m, P_{j+1}, l, alpha from S_{j+1}               (the softmax, overlapping P_j V_j)
    wait until none is in flight                    -> O is ready
    O *= alpha                                      (O moves to tile j+1's running max)
    barrier; refill K's freed slot with tile j+1+STAGES and V's with tile j+STAGES

K and V each have ``STAGES`` shared-memory slots, tile ``t`` in slot ``t % STAGES``; a slot's
barrier completes once per fill, so the wait for tile ``t`` is on phase ``(t // STAGES) % 2``.
A slot is refilled only after a whole-program barrier, because each warp group waits for its
own products only: one group leaving the loop body must not let a copy overwrite a tile the
other group's product still reads.

Scope, kept small on purpose (:func:`unhandled` says what a call asks for that it lacks):
float16/bfloat16, head dim 64 or 128, lengths that are whole multiples of the tile, causal only
with ``BLOCK_M == BLOCK_N`` and ``Lk >= Lq`` (then exactly one key tile per query tile crosses
the diagonal: the last, masked). GQA by the K/V head index, as in the other kernels.

Gluon kernels do not run under ``TRITON_INTERPRET``: this one is compiled for sm_90 on the CPU
by the tests (``tests/test_kernels_flash_gluon.py``: wgmma, no spill, exponentials placed while
a product is in flight, ``resources.exp2_during_mma``) and its results are checked on a GPU only,
against attnlib's descriptor kernel, by the benchmark's child process before it is timed
(``attnlib.bench.canary.gluon_errors``). :mod:`.gluon_ws` is the same loop with a warp that only
loads, :mod:`.gluon_pingpong` that with two consumer warp groups taking turns.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .._interpreter_compat import interpreting
from .fwd_ws import flatten_heads
from .fwd_ws import unhandled as whole_tile_problems

__all__ = ["flash_fwd_gluon", "check_gluon_supported", "unhandled", "GLUON_CONFIGS"]

# (BLOCK_M, BLOCK_N, num_warps, STAGES): the tiles the ladder times. D=128 bf16: Q 32 KiB, each
# K or V slot 32 KiB (128 keys) or 16 KiB (64 keys): 160 KiB and 128 KiB of shared memory.
GLUON_CONFIGS = ((128, 128, 8, 2), (128, 64, 8, 3))

# Gluon renamed these between the two Tritons this course supports (3.6 the old names, 3.9 the new).
_cta_barrier = gl.barrier if hasattr(gl, "barrier") else gl.thread_barrier
_tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared
_tma_store = tma.async_store if hasattr(tma, "async_store") else tma.async_copy_shared_to_global


@gluon.constexpr_function
def _mma_layouts(num_warps, BLOCK_N, BLOCK_D):
    """Register layouts of the scores S (BLOCK_M, BLOCK_N), the output O (BLOCK_M, D), and P as O's first operand.

    wgmma's accumulator layout: warps stacked along the rows (16 rows each), instruction tiles 16 x N x 16;
    P enters the second product from registers, in the operand layout of that product."""
    s_layout = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_N, 16])
    o_layout = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_D, 16])
    return s_layout, o_layout, gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)


@gluon.jit
def _barrier_ring(STAGES: gl.constexpr, ARRIVALS: gl.constexpr):
    """``STAGES`` mbarriers (one per slot), each completing a phase after ``ARRIVALS`` arrivals."""
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=ARRIVALS)
    return bars


@gluon.jit
def _kv_slots(k_desc, v_desc, STAGES: gl.constexpr):
    """``STAGES`` shared-memory slots for K tiles and as many for V tiles, in the copy engine's layout."""
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    return k_smem, v_smem


@gluon.jit
def _load_tile(desc, row, bar, dest):
    """Ask the copy engine for the tile of ``desc`` starting at ``row``; ``bar`` completes on arrival."""
    mbarrier.expect(bar, desc.block_type.nbytes)
    _tma_load(desc, [row, 0], bar, dest)


@gluon.jit
def _causal_mask(s, start_n, start_m, DIAG, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
    """-inf where key ``start_n + c`` lies after query ``start_m * BLOCK_M + r`` (plus ``DIAG = Lk - Lq``)."""
    rows = start_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
    cols = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    return gl.where(cols[None, :] <= rows[:, None] + DIAG, s, float("-inf"))


@gluon.jit
def _program_tiles(H, GROUP, LQ, LK, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    """This program's query tile, (batch, head), first rows in the flattened views, and key tiles to visit."""
    start_m = gl.program_id(0)
    if CAUSAL:  # heaviest query tiles first
        start_m = gl.num_programs(0) - 1 - start_m
    off_bh = gl.program_id(1)
    off_kh = (off_bh // H) * (H // GROUP) + (off_bh % H) // GROUP  # the shared K/V head
    q_row = off_bh * LQ + start_m * BLOCK_M  # first row of this query tile in the flattened view
    kv_row = off_kh * LK
    DIAG = LK - LQ
    if CAUSAL:  # key tiles up to the one holding the diagonal of this query tile's last row
        n_tiles = start_m + 1 + DIAG // BLOCK_N
    else:
        n_tiles = LK // BLOCK_N
    return start_m, off_bh, q_row, kv_row, DIAG, n_tiles


@gluon.jit
def _first_tile(q_smem, k_smem, q_bar, k_bars, start_m, DIAG, qk_scale, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr,
                BLOCK_N: gl.constexpr, BLOCK_D: gl.constexpr, s_layout: gl.constexpr, o_layout: gl.constexpr):
    """Key tile 0's scores and softmax, with nothing to overlap yet: the initial (acc, l, m, P)."""
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_bars.index(0), 0)
    s = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout),
                      use_acc=False)
    if CAUSAL:  # all-true unless tile 0 is this query tile's diagonal tile
        s = _causal_mask(s, 0, start_m, DIAG, BLOCK_M, BLOCK_N, s_layout)
    m_i = gl.max(s, axis=1) * qk_scale  # (BLOCK_M,) running row max of the scaled scores, base 2
    p = gl.exp2(s * qk_scale - m_i[:, None])  # (BLOCK_M, BLOCK_N)
    l_i = gl.sum(p, axis=1)  # (BLOCK_M,) running row sum
    acc = gl.zeros([BLOCK_M, BLOCK_D], gl.float32, o_layout)  # (BLOCK_M, D) unnormalised output
    return acc, l_i, m_i, p


@gluon.jit
def _last_product(acc, p, v_smem, v_bars, last, STAGES: gl.constexpr, p_layout: gl.constexpr):
    """The last key tile's P V, with nothing left to overlap."""
    mbarrier.wait(v_bars.index(last % STAGES), (last // STAGES) & 1)
    p_op = gl.convert_layout(p.to(v_smem.dtype), p_layout, assert_trivial=True)
    return warpgroup_mma(p_op, v_smem.index(last % STAGES), acc)


@gluon.jit
def _epilogue(acc, l_i, m_i, q_smem, o_desc, LSE, q_row, off_bh, start_m, LQ, BLOCK_M: gl.constexpr,
              s_layout: gl.constexpr, o_layout: gl.constexpr):
    """O = acc / l through Q's buffer (no product reads Q any more) and one TMA store; the log-sum-exp."""
    out = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
    _cta_barrier()  # both warp groups are done with Q before either overwrites its buffer
    q_smem.store(out.to(q_smem.dtype))
    fence_async_shared()  # the threads' shared-memory writes become visible to the copy engine
    _cta_barrier()  # ... all of them, before one thread issues the store
    _tma_store(o_desc, [q_row, 0], q_smem)
    offs_m = start_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
    gl.store(LSE + off_bh * LQ + offs_m, m_i + gl.log2(l_i))  # base-2 log-sum-exp, as the backward reads it
    tma.store_wait(0)


@gluon.jit
def _overlapped_step(j, acc, l_i, m_i, p, q_smem, k_smem, v_smem, k_bars, v_bars, start_m, DIAG, qk_scale,
                     MASK_NEXT: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                     s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr,
                     my_turn=None, other_turn=None, turn_phase=0, TAKE_TURNS: gl.constexpr = False):
    """Key tile ``j``'s ``P V`` and tile ``j + 1``'s softmax, overlapped; returns the state for tile ``j + 1``.

    On return no product is in flight: K tile ``j + 1`` and V tile ``j`` are no longer read by this
    warp group (the caller frees their slots). ``TAKE_TURNS`` (:mod:`.gluon_pingpong`):
    issue the two products only when ``my_turn`` completes ``turn_phase``, then hand the turn over."""
    nxt = j + 1
    k_slot = nxt % STAGES
    v_slot = j % STAGES
    if TAKE_TURNS:  # wait until the other warp group has issued its products
        mbarrier.wait(my_turn, turn_phase)
    # Issue S_{j+1} = Q K_{j+1}^T: the K tile is (BLOCK_N, D) in shared memory; the product reads its transpose.
    mbarrier.wait(k_bars.index(k_slot), (nxt // STAGES) & 1)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    s_tok = warpgroup_mma(q_smem, k_smem.index(k_slot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    # Issue O += P_j V_j with P_j from registers (a wgmma's first operand may live there). The scores'
    # accumulator layout already is that operand's layout: the conversion moves no data (asserted).
    mbarrier.wait(v_bars.index(v_slot), (j // STAGES) & 1)
    p_op = gl.convert_layout(p.to(k_smem.dtype), p_layout, assert_trivial=True)
    o_tok = warpgroup_mma(p_op, v_smem.index(v_slot), acc, is_async=True)
    if TAKE_TURNS:  # its turn: its products run while this group computes its softmax
        mbarrier.arrive(other_turn, count=1)
    # Wait for the older of the two only: the scores. P_j V_j keeps the tensor cores busy meanwhile.
    s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok,))
    if MASK_NEXT:
        s = _causal_mask(s, nxt * BLOCK_N, start_m, DIAG, BLOCK_M, BLOCK_N, s_layout)
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)  # (BLOCK_M,) qk_scale > 0: max commutes with it
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(s * qk_scale - m_new[:, None])  # (BLOCK_M, BLOCK_N) one multiply-add per score, then exp2
    l_i = l_i * alpha + gl.sum(p, axis=1)
    # Now O: wait for P_j V_j (keeping P_j's registers alive until it has read them), then rescale.
    acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p_op))
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    return acc, l_i, m_new, p


@gluon.jit
def _step(j, acc, l_i, m_i, p, q_smem, k_smem, v_smem, k_bars, v_bars, k_desc, v_desc, kv_row, n_tiles,
          start_m, DIAG, qk_scale, MASK_NEXT: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr,
          BLOCK_N: gl.constexpr, s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr):
    """:func:`_overlapped_step`, then this program's own copies into the two slots it freed."""
    acc, l_i, m_i, p = _overlapped_step(j, acc, l_i, m_i, p, q_smem, k_smem, v_smem, k_bars, v_bars, start_m, DIAG,
                                        qk_scale, MASK_NEXT, STAGES, BLOCK_M, BLOCK_N, s_layout, o_layout, p_layout)
    # Both warp groups are past K tile j+1 and V tile j: refill their slots.
    _cta_barrier()
    if j + 1 + STAGES < n_tiles:
        _load_tile(k_desc, kv_row + (j + 1 + STAGES) * BLOCK_N, k_bars.index((j + 1) % STAGES),
                   k_smem.index((j + 1) % STAGES))
    if j + STAGES < n_tiles:
        _load_tile(v_desc, kv_row + (j + STAGES) * BLOCK_N, v_bars.index(j % STAGES), v_smem.index(j % STAGES))
    return acc, l_i, m_i, p


@gluon.jit
def _flash_fwd_gluon_kernel(
    q_desc, k_desc, v_desc, o_desc, LSE,  # descriptors over q/o (B*H*LQ, D), k/v (B*Hk*LK, D); LSE (B*H, LQ) fp32
    H, GROUP, LQ, LK, qk_scale,
    CAUSAL: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr,
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
    k_bars = _barrier_ring(STAGES, 1)  # complete when a tile has arrived in that slot
    v_bars = _barrier_ring(STAGES, 1)
    _cta_barrier()  # every thread sees the initialised barriers before any waits on them

    # Prologue: Q, and the first STAGES tiles of K and V.
    _load_tile(q_desc, q_row, q_bar, q_smem)
    for i in gl.static_range(STAGES):
        if i < n_tiles:
            _load_tile(k_desc, kv_row + i * BLOCK_N, k_bars.index(i), k_smem.index(i))
            _load_tile(v_desc, kv_row + i * BLOCK_N, v_bars.index(i), v_smem.index(i))

    acc, l_i, m_i, p = _first_tile(q_smem, k_smem, q_bar, k_bars, start_m, DIAG, qk_scale, CAUSAL, BLOCK_M, BLOCK_N,
                                   BLOCK_D, s_layout, o_layout)
    _cta_barrier()  # K slot 0 is free once both warp groups have their scores
    if STAGES < n_tiles:
        _load_tile(k_desc, kv_row + STAGES * BLOCK_N, k_bars.index(0), k_smem.index(0))

    # Steady state: tiles whose next tile is whole; then (causal) the step into the diagonal tile.
    for j in range(0, n_tiles - 2):
        acc, l_i, m_i, p = _step(j, acc, l_i, m_i, p, q_smem, k_smem, v_smem, k_bars, v_bars, k_desc, v_desc,
                                 kv_row, n_tiles, start_m, DIAG, qk_scale, False, STAGES, BLOCK_M, BLOCK_N,
                                 s_layout, o_layout, p_layout)
    if n_tiles >= 2:
        acc, l_i, m_i, p = _step(n_tiles - 2, acc, l_i, m_i, p, q_smem, k_smem, v_smem, k_bars, v_bars, k_desc,
                                 v_desc, kv_row, n_tiles, start_m, DIAG, qk_scale, CAUSAL, STAGES, BLOCK_M,
                                 BLOCK_N, s_layout, o_layout, p_layout)

    acc = _last_product(acc, p, v_smem, v_bars, n_tiles - 1, STAGES, p_layout)

    _epilogue(acc, l_i, m_i, q_smem, o_desc, LSE, q_row, off_bh, start_m, LQ, BLOCK_M, s_layout, o_layout)
    mbarrier.invalidate(q_bar)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(k_bars.index(i))
        mbarrier.invalidate(v_bars.index(i))


def unhandled(q: torch.Tensor, k: torch.Tensor, causal: bool, block_m: int, block_n: int, v=None) -> list[str]:
    """What this kernel does not handle for these inputs and this tile, in words (empty: handled): the
    warp-specialised Triton forward's limits (inputs that fit together, dtype, head dim, whole tiles) except
    causal, which is handled with a square tile and ``Lk >= Lq``; and at least one key tile."""
    problems = whole_tile_problems(q, k, False, block_m, block_n, v)
    if q.dim() != 4 or k.dim() != 4:
        return problems
    lq, lk = q.shape[-2], k.shape[-2]
    if lk < block_n:
        problems.append(f"Lk={lk} (at least one whole {block_n}-key tile)")
    if causal and (block_m != block_n or lk < lq):
        problems.append(f"causal with a {block_m}x{block_n} tile and Lq={lq}, Lk={lk} (causal needs a square "
                        "tile and Lk >= Lq)")
    return problems


def check_gluon_supported(q: torch.Tensor, k: torch.Tensor, causal: bool, block_m: int, block_n: int,
                          v=None) -> None:
    """Raise ValueError naming what this experimental kernel does not handle (see the module docstring)."""
    problems = unhandled(q, k, causal, block_m, block_n, v)
    if problems:
        raise ValueError("the Gluon forward does not handle " + "; ".join(problems))


def check_runnable() -> None:
    """Raise if Triton runs in its CPU interpreter, which cannot run Gluon kernels."""
    if interpreting():
        raise RuntimeError("the Gluon forward cannot run under TRITON_INTERPRET=1 (Gluon has no CPU interpreter): "
                           "run it on a Hopper GPU, or compile it with attnlib.kernels.resources")


def flattened_launch(q, k, v, q_rows: int, block_n: int):
    """The buffers and arguments every Gluon forward launches with: ``(o2, lse, descriptors, scalars)``.

    q/o are viewed as ``(B*H*Lq, D)`` and k/v as ``(B*Hk*Lk, D)`` (a tile never crosses heads: the lengths
    are whole tiles); the descriptors tile q and o by ``q_rows`` rows, k and v by ``block_n``; ``scalars``
    is ``(H, H // Hk, Lq, Lk)``."""
    q2, k2, v2, o2, lse, scalars = flatten_heads(q, k, v)
    d = q.shape[-1]
    descs = (_descriptor(q2, [q_rows, d]), _descriptor(k2, [block_n, d]), _descriptor(v2, [block_n, d]),
             _descriptor(o2, [q_rows, d]))
    return o2, lse, descs, scalars


def _descriptor(t2: torch.Tensor, block: list[int]) -> TensorDescriptor:
    """A copy-engine descriptor over a contiguous 2-D tensor, tile ``block``, in wgmma's shared layout."""
    element = gl.bfloat16 if t2.dtype == torch.bfloat16 else gl.float16
    layout = gl.NVMMASharedLayout.get_default_for(block, element)
    return TensorDescriptor(t2, list(t2.shape), list(t2.stride()), block, layout)


def flash_fwd_gluon(q, k, v, causal: bool, scale: float, config=GLUON_CONFIGS[0]):
    """q (B, H, Lq, D), k/v (B, Hk, Lk, D) -> (o (B, H, Lq, D), lse2 (B*H, Lq) float32, base 2).

    ``config = (BLOCK_M, BLOCK_N, num_warps, STAGES)``; Hopper GPUs only (or compiled ahead of
    time for sm_90 by :mod:`attnlib.kernels.resources`).
    """
    block_m, block_n, num_warps, stages = config
    check_runnable()
    check_gluon_supported(q, k, causal, block_m, block_n, v)
    o2, lse, descs, scalars = flattened_launch(q, k, v, block_m, block_n)
    _flash_fwd_gluon_kernel[(q.shape[2] // block_m, lse.shape[0])](
        *descs, lse, *scalars, scale * 1.4426950408889634, CAUSAL=causal, STAGES=stages, num_warps=num_warps,
    )
    return o2.reshape(q.shape), lse
