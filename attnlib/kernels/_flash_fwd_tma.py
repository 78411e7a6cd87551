r"""The forward kernel again, with tiles moved by tensor-memory descriptors (Hopper's TMA).

Same algorithm as :mod:`attnlib.kernels._flash_fwd` (online softmax in base 2, masks only on
diagonal and ragged tiles, causal tiles skipped). The difference is how tiles reach the
program: instead of a block of pointers per tile (``tl.load(ptrs, mask)``), each tensor is
described once on the host by a ``TensorDescriptor`` (base pointer, shape, strides, tile
shape) and ``desc.load([i, j, 0])`` fetches a whole tile; on Hopper GPUs the copy engine
(TMA) does the address arithmetic and zero-fills reads past the edges, and stores past the
edges are dropped. Tensors are viewed as ``(B*H, L, D)`` so that a tile never crosses from
one head into the next.

Used by :func:`attnlib.kernels.flash_attention` only on compute capability 9.x with a Triton
that has ``triton.tools.tensor_descriptor``, for float16/bfloat16 and head dims that are a
multiple of 8 (TMA needs 16-byte aligned rows); everywhere else, and whenever this kernel
fails to compile, the portable kernel runs. Background, not a seed: Triton's fused-attention
tutorial uses the same descriptors.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._flash_config import prune_forward_configs, tma_fwd_configs
from ._flash_fwd import key_tile_range, online_softmax_step, query_tile_and_head

try:  # public since Triton 3.4; older Tritons simply never take this path
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - depends on the installed Triton
    TensorDescriptor = None


@triton.jit
def _tma_inner(acc, l_i, m_i, q, k_desc, v_desc, off_kh, start, stop, offs_m, offs_n, qk_scale, LK, DIAG_OFFSET,
               CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               PRECISION: tl.constexpr):
    for start_n in range(start, stop, BLOCK_N):
        k = k_desc.load([off_kh, start_n, 0]).reshape([BLOCK_N, BLOCK_D])  # rows past LK arrive as zeros
        v = v_desc.load([off_kh, start_n, 0]).reshape([BLOCK_N, BLOCK_D])
        acc, l_i, m_i = online_softmax_step(acc, l_i, m_i, q, k, v, start_n + offs_n, offs_m, qk_scale, LK,
                                            DIAG_OFFSET, CAUSAL, MASKED, PRECISION)
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["LQ", "LK"])
def _flash_fwd_tma_kernel(
    q_desc, k_desc, v_desc, o_desc, LSE,
    H, GROUP, LQ, LK, qk_scale,
    CAUSAL: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m, off_bh = query_tile_and_head(LQ, CAUSAL, BLOCK_M)  # (heaviest causal tiles first)
    off_kh = (off_bh // H) * (H // GROUP) + (off_bh % H) // GROUP  # row of the shared K/V head
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q = q_desc.load([off_bh, start_m * BLOCK_M, 0]).reshape([BLOCK_M, BLOCK_D])

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    diag = LK - LQ
    full, hi = key_tile_range(start_m, diag, LK, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _tma_inner(acc, l_i, m_i, q, k_desc, v_desc, off_kh, 0, full, offs_m, offs_n, qk_scale, LK,
                               diag, CAUSAL, False, BLOCK_N, BLOCK_D, PRECISION)
    acc, l_i, m_i = _tma_inner(acc, l_i, m_i, q, k_desc, v_desc, off_kh, full, hi, offs_m, offs_n, qk_scale, LK,
                               diag, CAUSAL, True, BLOCK_N, BLOCK_D, PRECISION)

    seen = l_i > 0.0
    l_safe = tl.where(seen, l_i, 1.0)
    out = acc / l_safe[:, None]
    lse = tl.where(seen, m_i + tl.math.log2(l_safe), float("inf"))
    o_desc.store([off_bh, start_m * BLOCK_M, 0], out.to(q.dtype).reshape([1, BLOCK_M, BLOCK_D]))
    tl.store(LSE + off_bh.to(tl.int64) * LQ + offs_m, lse, mask=offs_m < LQ)


def _set_block_shapes(nargs):
    """Autotuning picks BLOCK_M/BLOCK_N per launch: give the descriptors the matching tile shapes."""
    bm, bn, bd = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_D"]
    nargs["q_desc"].block_shape = [1, bm, bd]
    nargs["o_desc"].block_shape = [1, bm, bd]
    nargs["k_desc"].block_shape = [1, bn, bd]
    nargs["v_desc"].block_shape = [1, bn, bd]


def _tma_configs():
    configs = tma_fwd_configs()
    for c in configs:
        c.pre_hook = _set_block_shapes
    return configs


flash_fwd_tma_kernel = triton.autotune(
    configs=_tma_configs(),
    key=["LQ", "LK", "BLOCK_D", "CAUSAL"],
    prune_configs_by={"early_config_prune": prune_forward_configs},
)(_flash_fwd_tma_kernel)


def descriptor(x3, block_rows: int, block_d: int):
    """A TMA descriptor of a contiguous ``(B*H, L, D)`` tensor, tiles ``[1, block_rows, block_d]``."""
    return TensorDescriptor.from_tensor(x3, [1, block_rows, block_d])
