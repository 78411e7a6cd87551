r"""FlashAttention backward kernels in Triton: recompute from the log-sum-exp, then dK/dV and dQ.

With :math:`S = \text{scale}\,QK^\top`, :math:`P = \operatorname{softmax}(S)` and
:math:`O = PV`, the gradients are (FlashAttention, Dao et al., 2022; FlashAttention-2,
Dao, 2023: *background, not seeds*)

.. math::

    dV = P^\top dO, \qquad dP = dO\,V^\top, \qquad
    dS = P \circ (dP - \delta), \quad \delta_i = \textstyle\sum_d dO_{id} O_{id},

    dQ = \text{scale}\; dS\, K, \qquad dK = \text{scale}\; dS^\top Q.

Nothing of size :math:`L_q \times L_k` is stored: each tile of :math:`P` is recomputed
as :math:`2^{c\,q\cdot k - \text{lse}_2}` from the base-2 log-sum-exp the forward pass
saved. Two kernels avoid atomic adds: one program per *key* tile accumulates dK and dV
over all query tiles (and over the query heads that share the K/V head in grouped-query
attention); one program per *query* tile accumulates dQ over the key tiles. Causal
masks are bottom-right aligned and tiles no query sees are skipped, as in the forward.

The dK/dV kernel can also do FlashAttention-2's single pass (``FUSE_DQ``): it already has
each tile's :math:`dS`, so one more product, :math:`dS\,K`, is that key tile's share of
:math:`dQ`, which it adds into a float32 buffer with atomic adds. Five products instead of
seven (the dQ kernel recomputes :math:`S` and :math:`dP`), for :math:`L_k / B_N` atomic
passes over dQ, summed in an order that varies from run to run (float32 rounding only).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._flash_config import bwd_dkdv_configs, bwd_dq_configs, prune_configs
from ._flash_fwd import key_tile_range, query_tile_and_head


@triton.jit(do_not_specialize=["LQ"])
def flash_bwd_delta_kernel(O, DO, DELTA, stride_ob, stride_oh, stride_om, stride_od,
                           stride_dob, stride_doh, stride_dom, stride_dod, H, LQ, HEAD_DIM,
                           BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta_i = sum_d dO_id * O_id in float32, one pass over O and dO (B*H, LQ)."""
    start_m, off_bh = query_tile_and_head(LQ, False, BLOCK_M)
    off_b = (off_bh // H).to(tl.int64)  # int64: see the forward kernel
    off_h = (off_bh % H).to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < LQ) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + off_bh.to(tl.int64) * LQ + offs_m, tl.sum(o * do, 1), mask=offs_m < LQ)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_qm, stride_dom, start, stop,
                offs_n, offs_m, offs_d, qk_scale, LQ, HEAD_DIM, DIAG_OFFSET, dq_ptrs, stride_dqm, sm_scale,
                MASKED: tl.constexpr, BLOCK_M: tl.constexpr, PRECISION: tl.constexpr, FUSE_DQ: tl.constexpr):
    """Accumulate query tiles ``start, start + BLOCK_M, ... < stop`` into this key tile's dK, dV (and with
    ``FUSE_DQ``, add this key tile's share of each query tile's dQ into the float32 buffer at ``dq_ptrs``)."""
    for start_m in range(start, stop, BLOCK_M):
        rows = start_m + offs_m  # (BLOCK_M,) query indices
        row_mask = (rows[:, None] < LQ) & (offs_d[None, :] < HEAD_DIM)
        q = tl.load(q_ptrs + start_m * stride_qm, mask=row_mask, other=0.0)  # (BLOCK_M, BLOCK_D)
        do = tl.load(do_ptrs + start_m * stride_dom, mask=row_mask, other=0.0)
        lse = tl.load(lse_ptr + rows, mask=rows < LQ, other=float("inf"))  # +inf: p = 0 there
        delta = tl.load(delta_ptr + rows, mask=rows < LQ, other=0.0)
        s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M) = S^T in log2 units
        p_t = tl.math.exp2(s_t - lse[None, :])
        if MASKED:
            p_t = tl.where(offs_n[:, None] <= rows[None, :] + DIAG_OFFSET, p_t, 0.0)
        dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)  # dV += P^T dO
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M) = dP^T
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PRECISION)  # dK += dS^T Q (scale applied at the end)
        if FUSE_DQ:  # dQ += scale dS K for this key tile; keys past LK add nothing (their K rows load as zeros)
            dq = tl.dot(tl.trans(ds_t.to(k.dtype)), k, input_precision=PRECISION) * sm_scale  # (BLOCK_M, BLOCK_D)
            tl.atomic_add(dq_ptrs + start_m * stride_dqm, dq, mask=row_mask, sem="relaxed")
    return dk, dv


@triton.jit(do_not_specialize=["LQ", "LK"])  # one compiled kernel for every length
def _flash_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    H, HK, GROUP, LQ, LK, HEAD_DIM, sm_scale, qk_scale,
    CAUSAL: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FUSE_DQ: tl.constexpr = False,
):
    key_tile, off_bhk = query_tile_and_head(LK, False, BLOCK_N)  # (the same folded grid, over key tiles)
    start_n = key_tile * BLOCK_N
    off_b = (off_bhk // HK).to(tl.int64)  # int64: see the forward kernel
    off_hk = (off_bhk % HK).to(tl.int64)

    offs_n = start_n + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key indices
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (offs_n[:, None] < LK) & (offs_d[None, :] < HEAD_DIM)
    k = tl.load(K + off_b * stride_kb + off_hk * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
    v = tl.load(V + off_b * stride_vb + off_hk * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    diag = LK - LQ  # query i sees key j iff j <= i + diag
    if CAUSAL:
        # first query that sees this tile's first key, and first query that sees all of its keys
        lo = tl.maximum(start_n - diag, 0)
        lo = (lo // BLOCK_M) * BLOCK_M
        full = tl.maximum(start_n + BLOCK_N - 1 - diag, 0)
        full = ((full + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
    else:
        lo = 0
        full = 0
    for g in range(0, GROUP):  # the query heads that share this K/V head
        off_h = off_hk * GROUP + g
        q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
        do_ptrs = (DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom
                   + offs_d[None, :] * stride_dod)
        lse_ptr = LSE + (off_b * H + off_h) * LQ
        delta_ptr = DELTA + (off_b * H + off_h) * LQ
        # (float32 dQ buffer, read only with FUSE_DQ; without it the kernel is launched with DQ = DK)
        dq_ptrs = (DQ + off_b * stride_dqb + off_h * stride_dqh + offs_m[:, None] * stride_dqm
                   + offs_d[None, :] * stride_dqd)
        dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_qm, stride_dom,
                             lo, tl.minimum(full, LQ), offs_n, offs_m, offs_d, qk_scale, LQ, HEAD_DIM, diag,
                             dq_ptrs, stride_dqm, sm_scale, True, BLOCK_M, PRECISION, FUSE_DQ)
        dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_qm, stride_dom,
                             full, LQ, offs_n, offs_m, offs_d, qk_scale, LQ, HEAD_DIM, diag,
                             dq_ptrs, stride_dqm, sm_scale, False, BLOCK_M, PRECISION, FUSE_DQ)

    dk = dk * sm_scale
    dk_ptrs = (DK + off_b * stride_dkb + off_hk * stride_dkh + offs_n[:, None] * stride_dkn
               + offs_d[None, :] * stride_dkd)
    dv_ptrs = (DV + off_b * stride_dvb + off_hk * stride_dvh + offs_n[:, None] * stride_dvn
               + offs_d[None, :] * stride_dvd)
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, start, stop,
              offs_m, offs_n, offs_d, qk_scale, LK, HEAD_DIM, DIAG_OFFSET,
              CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """Accumulate key tiles ``start, start + BLOCK_N, ... < stop`` into this query tile's dQ."""
    for start_n in range(start, stop, BLOCK_N):
        cols = start_n + offs_n  # (BLOCK_N,) key indices
        kv_mask = (cols[:, None] < LK) & (offs_d[None, :] < HEAD_DIM)
        k = tl.load(k_ptrs + start_n * stride_kn, mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(v_ptrs + start_n * stride_vn, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N) in log2 units
        p = tl.math.exp2(s - lse[:, None])
        if MASKED:
            allowed = cols[None, :] < LK
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= offs_m[:, None] + DIAG_OFFSET)
            p = tl.where(allowed, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)  # dQ += dS K (scale applied at the end)
    return dq


@triton.jit(do_not_specialize=["LQ", "LK"])  # one compiled kernel for every length
def _flash_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    H, GROUP, LQ, LK, HEAD_DIM, sm_scale, qk_scale,
    CAUSAL: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m, off_bh = query_tile_and_head(LQ, False, BLOCK_M)
    off_b = (off_bh // H).to(tl.int64)  # int64: see the forward kernel
    off_h = (off_bh % H).to(tl.int64)
    off_hk = off_h // GROUP

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query indices
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = (offs_m[:, None] < LQ) & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_mask, other=0.0)  # (BLOCK_M, BLOCK_D)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=row_mask, other=0.0)
    lse = tl.load(LSE + off_bh.to(tl.int64) * LQ + offs_m, mask=offs_m < LQ, other=float("inf"))
    delta = tl.load(DELTA + off_bh.to(tl.int64) * LQ + offs_m, mask=offs_m < LQ, other=0.0)
    k_ptrs = K + off_b * stride_kb + off_hk * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_hk * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    diag = LK - LQ
    full, hi = key_tile_range(start_m, diag, LK, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, 0, full,
                   offs_m, offs_n, offs_d, qk_scale, LK, HEAD_DIM, diag, CAUSAL, False, BLOCK_N, PRECISION)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, full, hi,
                   offs_m, offs_n, offs_d, qk_scale, LK, HEAD_DIM, diag, CAUSAL, True, BLOCK_N, PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + off_b * stride_dqb + off_h * stride_dqh + offs_m[:, None] * stride_dqm
             + offs_d[None, :] * stride_dqd, dq.to(DQ.dtype.element_ty), mask=row_mask)


flash_bwd_dkdv_kernel = triton.autotune(
    configs=bwd_dkdv_configs(),
    key=["LQ", "LK", "BLOCK_D", "CAUSAL", "GROUP"],
    prune_configs_by={"early_config_prune": prune_configs},
)(_flash_bwd_dkdv_kernel)

flash_bwd_dq_kernel = triton.autotune(
    configs=bwd_dq_configs(),
    key=["LQ", "LK", "BLOCK_D", "CAUSAL"],
    prune_configs_by={"early_config_prune": prune_configs},
)(_flash_bwd_dq_kernel)
