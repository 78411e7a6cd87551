r"""FlashAttention forward kernel in Triton: tiles, online softmax in base 2, causal block skipping.

One program computes a ``BLOCK_M`` x ``D`` tile of the output for one (batch, head).
It walks over the keys ``BLOCK_N`` at a time, keeping per query row a running
maximum :math:`m`, a running normaliser :math:`\ell` and an unnormalised output
:math:`a` (the online softmax; Milakov & Gimelshein, 2018; FlashAttention, Dao et al.,
2022 and FlashAttention-2, Dao, 2023: *background, not seeds*). Scores are kept in
base 2: with :math:`c = \text{scale}\cdot\log_2 e` folded into one multiply,

.. math:: e^{\text{scale}\, q\cdot k - m} = 2^{c\, q\cdot k - m_2},

so the kernel calls ``exp2`` (one hardware instruction) instead of ``exp``.
At the end it writes :math:`o = a/\ell` and the base-2 log-sum-exp
:math:`\text{lse}_2 = m_2 + \log_2 \ell` that the backward pass recomputes from
(a fully masked row stores ``+inf`` there and writes zeros).

Causal masks are bottom-right aligned (query ``i`` sees key ``j`` iff
``j <= i + Lk - Lq``, see :mod:`attnlib.masks`). Key blocks split into three kinds:
blocks every row of the tile sees (no mask arithmetic), blocks on the diagonal or at
the ragged end of the keys (masked), and blocks no row sees (skipped entirely, about
half the work when causal).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._flash_config import fwd_configs, prune_forward_configs


@triton.jit
def query_tile_and_head(LQ, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr):
    """``(start_m, off_bh)`` of this program on the one-dimensional grid ``(cdiv(LQ, BLOCK_M) * B * H,)``.

    Batch and heads are folded into grid axis 0 (up to 2**31 - 1 programs) because axis 1 stops at
    65,535: a grid ``(tiles, B * H)`` would not launch for ``B * H > 65535``. Consecutive programs
    take consecutive query tiles of one (batch, head), as axis 0 of the two-dimensional grid did;
    causal tiles run last tile first (the last query tiles see the most keys: started first, they do
    not run alone at the end)."""
    num_m = tl.cdiv(LQ, BLOCK_M)
    pid = tl.program_id(0)
    start_m = pid % num_m
    if CAUSAL:
        start_m = num_m - 1 - start_m
    return start_m, pid // num_m


@triton.jit
def key_tile_range(start_m, diag, LK, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key ranges for query tile ``start_m`` (``diag = LK - LQ``): ``[0, full)`` is seen by every
    row of the tile (whole ``BLOCK_N`` blocks, no mask arithmetic), ``[full, hi)`` needs the
    causal/edge mask, and keys from ``hi`` on are in every row's future (skipped)."""
    if CAUSAL:
        # keys this tile's last row may see, and keys its first row sees (all rows see those)
        hi = tl.minimum(tl.maximum((start_m + 1) * BLOCK_M + diag, 0), LK)
        full = tl.minimum(tl.maximum(start_m * BLOCK_M + diag + 1, 0), LK)
    else:
        hi = LK
        full = LK
    return (full // BLOCK_N) * BLOCK_N, hi


@triton.jit
def online_softmax_step(acc, l_i, m_i, q, k, v, cols, offs_m, qk_scale, LK, DIAG_OFFSET,
                        CAUSAL: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """Fold one key tile ``(k, v)`` (key indices ``cols``) into the running (acc, l_i, m_i).

    ``MASKED`` tiles (on the causal diagonal or at the ragged end of the keys) get the mask
    arithmetic; every other tile skips it. Shared by the pointer and the descriptor kernels.
    """
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N) raw scores q.k
    if MASKED:
        allowed = cols[None, :] < LK
        if CAUSAL:
            allowed = allowed & (cols[None, :] <= offs_m[:, None] + DIAG_OFFSET)
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)  # qk_scale > 0: the max commutes with it
        # A row that has seen only masked keys keeps m = -inf: shift it by 0 instead.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        m_shift = m_new
    # One fused multiply-add per score (scale, then shift by the row max), then exp2.
    p = tl.math.exp2(s * qk_scale - m_shift[:, None])  # exactly 0 at masked keys
    alpha = tl.math.exp2(m_i - m_shift)  # rescales the old sums; 0 while m_i = -inf
    l_i = l_i * alpha + tl.sum(p, 1)
    # The rescaled accumulator is the matrix multiply's own accumulator (no separate add).
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
    return acc, l_i, m_new


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, start, stop,
               offs_m, offs_n, offs_d, qk_scale, LK, HEAD_DIM, DIAG_OFFSET,
               CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr,
               PRECISION: tl.constexpr):
    """Accumulate key blocks ``start, start + BLOCK_N, ... < stop`` into (acc, l_i, m_i)."""
    for start_n in range(start, stop, BLOCK_N):
        cols = start_n + offs_n  # (BLOCK_N,) key indices
        kv_mask = cols[:, None] < LK
        if not EVEN_D:
            kv_mask = kv_mask & (offs_d[None, :] < HEAD_DIM)
        if MASKED:
            k = tl.load(k_ptrs + start_n * stride_kn, mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
            v = tl.load(v_ptrs + start_n * stride_vn, mask=kv_mask, other=0.0)
        else:
            if EVEN_D:
                k = tl.load(k_ptrs + start_n * stride_kn)
                v = tl.load(v_ptrs + start_n * stride_vn)
            else:
                k = tl.load(k_ptrs + start_n * stride_kn, mask=kv_mask, other=0.0)
                v = tl.load(v_ptrs + start_n * stride_vn, mask=kv_mask, other=0.0)
        acc, l_i, m_i = online_softmax_step(acc, l_i, m_i, q, k, v, cols, offs_m, qk_scale, LK, DIAG_OFFSET,
                                            CAUSAL, MASKED, PRECISION)
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["LQ", "LK"])  # one compiled kernel for every length
def _flash_fwd_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    H, GROUP, LQ, LK, HEAD_DIM, qk_scale,
    CAUSAL: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m, off_bh = query_tile_and_head(LQ, CAUSAL, BLOCK_M)
    # int64 from here on: off_b * stride_qb reaches 2**31 elements (4 GiB of bf16) in a long-context batch
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    off_hk = off_h // GROUP  # grouped-query attention: GROUP query heads share one K/V head

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query rows
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    k_ptrs = K + off_b * stride_kb + off_hk * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_hk * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    q_mask = (offs_m[:, None] < LQ) & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(q_ptrs, mask=q_mask, other=0.0)  # (BLOCK_M, BLOCK_D)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    diag = LK - LQ  # query i sees key j iff j <= i + diag (bottom-right alignment)
    full, hi = key_tile_range(start_m, diag, LK, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, 0, full,
                               offs_m, offs_n, offs_d, qk_scale, LK, HEAD_DIM, diag,
                               CAUSAL, False, BLOCK_N, EVEN_D, PRECISION)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, full, hi,
                               offs_m, offs_n, offs_d, qk_scale, LK, HEAD_DIM, diag,
                               CAUSAL, True, BLOCK_N, EVEN_D, PRECISION)

    seen = l_i > 0.0  # False only for rows with no visible key
    l_safe = tl.where(seen, l_i, 1.0)
    out = acc / l_safe[:, None]
    lse = tl.where(seen, m_i + tl.math.log2(l_safe), float("inf"))
    o_ptrs = O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=q_mask)
    tl.store(LSE + off_bh.to(tl.int64) * LQ + offs_m, lse, mask=offs_m < LQ)


flash_fwd_kernel = triton.autotune(
    configs=fwd_configs(),
    key=["LQ", "LK", "BLOCK_D", "CAUSAL"],
    prune_configs_by={"early_config_prune": prune_forward_configs},
)(_flash_fwd_kernel)
