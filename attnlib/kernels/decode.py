r"""Split-KV ("flash-decoding") attention for a few new query tokens against a long KV cache.

Decoding one token at a time reads the whole key/value cache once per step and
does only about two multiply-adds per element read, so it is limited by memory
bandwidth, not arithmetic (seed *Fast Transformer Decoding: One Write-Head is
All You Need*: incremental inference is slow "due to the memory-bandwidth cost
of repeatedly loading the large 'keys' and 'values' tensors"). A FlashAttention
forward launches one program per (batch, head, query block); with one query
token that is only ``B * H`` programs, too few to keep every memory channel of a
large GPU busy when the cache is long. Flash-decoding (Dao et al., 2023,
*background, not a seed*) therefore also **splits the keys** into ``S`` chunks:

1. ``_decode_split_kernel``, grid ``(B * Hkv, S)``: program ``(b, h, s)`` runs
   the online softmax over the keys of chunk ``s`` and writes a normalised
   partial output :math:`o_s` and its log-sum-exp
   :math:`\ell_s = \log \sum_{j \in s} e^{x_j}` (here in base 2).
2. ``_decode_combine_kernel``, grid ``(B * Hq * Lq,)``: merges the chunks,

   .. math:: o = \sum_s w_s\, o_s, \qquad w_s = \frac{e^{\ell_s - m}}{\sum_{s'} e^{\ell_{s'} - m}},
             \quad m = \max_s \ell_s,

   which is exact: :math:`e^{\ell_s} o_s = \sum_{j\in s} e^{x_j} v_j`.

**Grouped-query heads** (GQA; MQA when ``Hkv = 1``; *background, not a seed*,
MQA is the seed above): query head ``h`` reads key/value head
``h // (Hq // Hkv)`` (as ``repeat_interleave`` would). One program handles all
``G = Hq // Hkv`` query heads (and all ``Lq`` query tokens) that share a
key/value head, so each cached key and value is read from memory **once** per
step, not ``G`` times: the ``G * Lq`` query rows form the ``M`` side of the
``tl.dot``.

**Ragged caches**: ``cache_lens[b]`` keys of batch ``b`` are valid; the rest of
the buffer is never read. The lengths stay on the device: the kernel clamps them to
``[0, Lmax]`` rather than the host reading them back to check them (a synchronisation
per decoding step; ``check_lens=True`` asks for it). A batch with an empty cache (or a query row with no
visible key) gets zeros, as everywhere in attnlib.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from ..validation import check_positive_int, check_tensor, resolve_scale
from ._interpreter_compat import check_launchable, interpreting, patch_interpreter

patch_interpreter()  # Triton < 3.7's interpreter with NumPy >= 2.4 (see the module)

__all__ = ["flash_decode", "default_num_splits", "decode_bytes"]

_LOG2E = 1.4426950408889634  # log2(e): the kernels use exp2, so scores are pre-multiplied by it
_MAX_ROWS = 1024  # query rows (grouped heads x tokens) one program holds; Triton caps a block at 2**20 elements
_MAX_BLOCK_N = 1024


@triton.jit
def _decode_split_kernel(
    Q, K, V, LENS, OP, LSEP,
    sqb, sqh, sqm, sqd,  # q strides: (B, Hq, Lq, D)
    skb, skh, skn, skd,  # k strides: (B, Hkv, Lmax, D)
    svb, svh, svn, svd,  # v strides: (B, Hkv, Lmax, Dv)
    sob, soh, som, sos, sod,  # partial-output strides: (B, Hq, Lq, S, Dv)
    slb, slh, slm, sls,  # partial-lse strides: (B, Hq, Lq, S)
    qk_scale,  # softmax scale * log2(e)
    Hkv, Lq, Lmax, D, DV, split_len,
    G: tl.constexpr,  # query heads per key/value head
    HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_bh = tl.program_id(0)  # b * Hkv + kv head
    pid_s = tl.program_id(1)  # which chunk of keys
    b = (pid_bh // Hkv).to(tl.int64)  # int64: b * skb reaches 2**31 elements in a large cache (B=16, 64k tokens)
    hkv = (pid_bh % Hkv).to(tl.int64)

    # The valid keys of this batch, and this program's chunk of them.
    if HAS_LENS:  # clamped to [0, Lmax]: the host reads the lengths back only with check_lens=True
        seq_len = tl.minimum(tl.maximum(tl.load(LENS + b).to(tl.int32), 0), Lmax)
    else:
        seq_len = Lmax
    lo = pid_s * split_len
    hi = tl.minimum(lo + split_len, seq_len)

    # Query rows r = g * Lq + i: query head hkv * G + g, query token i.
    offs_m = tl.arange(0, BLOCK_M)
    g = offs_m // Lq
    i = offs_m % Lq
    row_ok = offs_m < G * Lq
    head = hkv * G + g  # (BLOCK_M,) query head of each row
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n = tl.arange(0, BLOCK_N)

    q_ptrs = Q + b * sqb + head[:, None] * sqh + i[:, None] * sqm + offs_d[None, :] * sqd
    q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)  # (BLOCK_M, BLOCK_D)

    k_base = K + b * skb + hkv * skh
    v_base = V + b * svb + hkv * svh
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)  # running max (base-2 logits)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)  # running sum of exp2(x - m)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)  # running sum of exp2(x - m) v
    # Causal (bottom-right): query token i sees key j iff j <= i + seq_len - Lq.
    last_key = i + seq_len - Lq  # (BLOCK_M,)

    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n  # (BLOCK_N,)
        col_ok = cols < hi
        k = tl.load(k_base + cols[:, None] * skn + offs_d[None, :] * skd,
                    mask=col_ok[:, None] & (offs_d[None, :] < D), other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(v_base + cols[:, None] * svn + offs_dv[None, :] * svd,
                    mask=col_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)  # (BLOCK_N, BLOCK_DV)
        x = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        visible = col_ok[None, :]
        if CAUSAL:
            visible = visible & (cols[None, :] <= last_key[:, None])
        x = tl.where(visible, x, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(x, axis=1))
        # A row that has seen no visible key keeps m = -inf: shift it by 0 so exp2 gives 0, not NaN.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(x - shift[:, None])  # (BLOCK_M, BLOCK_N), exactly 0 where masked
        alpha = tl.math.exp2(m_i - shift)  # rescales the old sums; 0 while m_i = -inf
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    has_keys = l_i > 0.0
    out = acc / tl.where(has_keys, l_i, 1.0)[:, None]  # normalised partial output, 0 if no keys
    lse = tl.where(has_keys, m_i + tl.math.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
    o_ptrs = OP + b * sob + head[:, None] * soh + i[:, None] * som + pid_s * sos + offs_dv[None, :] * sod
    tl.store(o_ptrs, out, mask=row_ok[:, None] & (offs_dv[None, :] < DV))
    tl.store(LSEP + b * slb + head * slh + i * slm + pid_s * sls, lse, mask=row_ok)


@triton.jit
def _decode_combine_kernel(
    OP, LSEP, OUT,
    sob, soh, som, sos, sod,  # partial-output strides: (B, Hq, Lq, S, Dv)
    slb, slh, slm, sls,  # partial-lse strides: (B, Hq, Lq, S)
    sxb, sxh, sxm, sxd,  # output strides: (B, Hq, Lq, Dv)
    Hq, Lq, S, DV,
    BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)  # one (b, query head, query token) row; int64 as in the split kernel
    i = pid % Lq
    h = (pid // Lq) % Hq
    b = pid // (Lq * Hq)
    offs_s = tl.arange(0, BLOCK_S)
    offs_dv = tl.arange(0, BLOCK_DV)
    s_ok = offs_s < S
    lse = tl.load(LSEP + b * slb + h * slh + i * slm + offs_s * sls, mask=s_ok, other=float("-inf"))
    m = tl.max(lse, axis=0)
    shift = tl.where(m == float("-inf"), 0.0, m)  # every chunk empty: all weights 0
    w = tl.math.exp2(lse - shift)  # (BLOCK_S,)
    total = tl.sum(w, axis=0)
    o = tl.load(OP + b * sob + h * soh + i * som + offs_s[:, None] * sos + offs_dv[None, :] * sod,
                mask=s_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)  # (BLOCK_S, BLOCK_DV)
    out = tl.sum(w[:, None] * o, axis=0) / tl.where(total > 0.0, total, 1.0)
    tl.store(OUT + b * sxb + h * sxh + i * sxm + offs_dv * sxd, out.to(OUT.dtype.element_ty), mask=offs_dv < DV)


def _cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` of positive ints on the host. (``triton.cdiv`` and ``triton.next_power_of_2`` are
    constexpr functions, usable in kernels too, and cost about 4 µs a call on the host: a decode step is
    short enough, tens of µs on a GPU, for the seven a call would make to show.)"""
    return -(-a // b)


def _next_pow2(x: int) -> int:
    """The least power of two >= ``x`` (``x >= 1``), on the host."""
    return 1 << (x - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _sm_count_of(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return _sm_count_of(device.index if device.index is not None else torch.cuda.current_device())
    return 1


def default_num_splits(batch: int, kv_heads: int, max_len: int, block_n: int, device: torch.device) -> int:
    """How many key chunks to use: enough programs for about four waves of the GPU's
    multiprocessors, but no chunk shorter than a few key blocks. On CPU (the
    interpreter) the answer is just enough to exercise the combine step."""
    max_splits = max(1, _cdiv(max_len, 4 * block_n))
    if device.type != "cuda":
        return min(max_splits, 3)
    want = _cdiv(4 * _sm_count(device), max(1, batch * kv_heads))  # (an empty batch launches nothing)
    return max(1, min(want, max_splits, 128))


def _check_inputs(q, k_cache, v_cache, cache_lens, check_lens: bool = False):
    check_tensor(q, "q", min_dim=4)
    check_tensor(k_cache, "k_cache", min_dim=4)
    check_tensor(v_cache, "v_cache", min_dim=4)
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, L, d), got shape {tuple(x.shape)}")
    bq, hq, lq, d = q.shape
    bk, hkv, lmax, dk = k_cache.shape
    if k_cache.shape[:3] != v_cache.shape[:3]:
        raise ValueError(
            f"k_cache and v_cache must share (B, Hkv, Lmax): k_cache {tuple(k_cache.shape)}, "
            f"v_cache {tuple(v_cache.shape)}")
    if bk != bq or dk != d:
        raise ValueError(
            f"q (B, Hq, Lq, d) and k_cache (B, Hkv, Lmax, d) must share B and d: q {tuple(q.shape)}, "
            f"k_cache {tuple(k_cache.shape)}")
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"the query heads Hq={hq} must be a multiple of the key/value heads Hkv={hkv} (Hkv > 0)")
    if d == 0 or v_cache.shape[-1] == 0:
        raise ValueError(f"the head dims must be positive: q {tuple(q.shape)}, v_cache {tuple(v_cache.shape)}")
    if (hq // hkv) * lq > _MAX_ROWS:
        raise ValueError(f"flash_decode is for a few query tokens: (Hq / Hkv) * Lq = {hq // hkv} * {lq} rows share "
                         f"one key/value head here, more than {_MAX_ROWS}; use flash_attention for long queries")
    if not (q.dtype == k_cache.dtype == v_cache.dtype):
        raise TypeError(f"q, k_cache and v_cache must share a dtype, got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if not (q.device == k_cache.device == v_cache.device):
        raise ValueError(f"q, k_cache and v_cache must be on one device, got {q.device}, {k_cache.device}, "
                         f"{v_cache.device}")
    check_launchable(q, "q", "flash_decode")
    if interpreting() and q.dtype == torch.bfloat16:
        raise TypeError("Triton's CPU interpreter has no bfloat16 (it would compute wrong numbers): "
                        "use float16 or float32 there")
    if cache_lens is not None:
        if not isinstance(cache_lens, torch.Tensor):
            raise TypeError(f"cache_lens must be an integer torch.Tensor of shape (B,), got {type(cache_lens).__name__}")
        if cache_lens.is_floating_point() or cache_lens.dtype == torch.bool or cache_lens.is_complex():
            raise TypeError(f"cache_lens must hold integers, got dtype {cache_lens.dtype}")
        if cache_lens.shape != (bq,):
            raise ValueError(f"cache_lens must have shape (B,) = ({bq},), got {tuple(cache_lens.shape)}")
        if cache_lens.device != q.device:
            raise ValueError(f"cache_lens must be on {q.device}, got {cache_lens.device}")
        if check_lens and bq and not _capturing(cache_lens):  # one read back to the host (a GPU synchronisation)
            low, high = (int(x) for x in torch.aminmax(cache_lens))
            if low < 0 or high > lmax:
                raise ValueError(f"cache_lens must lie in [0, Lmax={lmax}], got {cache_lens.tolist()}")


def _capturing(t: torch.Tensor) -> bool:
    """Whether a CUDA graph is being captured on ``t``'s device, where reading ``t`` back is not allowed: the
    lengths are then not checked on the host, and the kernel clamps them to ``[0, Lmax]``."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def flash_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_lens: Optional[torch.Tensor] = None,
    *,
    causal: bool = False,
    scale: Optional[float] = None,
    num_splits: Optional[int] = None,
    block_n: Optional[int] = None,
    check_lens: bool = False,
) -> torch.Tensor:
    r"""Attention of a few new query tokens over a (ragged) KV cache, split over the keys.

    Args:
        q: ``(B, Hq, Lq, d)`` queries, ``Lq`` small (1 for plain decoding).
        k_cache: ``(B, Hkv, Lmax, d)`` cached keys; ``Hq`` must be a multiple of ``Hkv``
            (``Hkv = Hq``: MHA, ``1``: MQA, otherwise GQA). Query head ``h`` reads
            key/value head ``h // (Hq // Hkv)``.
        v_cache: ``(B, Hkv, Lmax, dv)`` cached values.
        cache_lens: optional ``(B,)`` integer tensor: batch ``b`` uses keys ``0 .. cache_lens[b]-1``;
            ``None`` means all ``Lmax``. Its dtype, shape and device are checked on the host; its
            values are not read back by default: the kernel clamps each length to ``[0, Lmax]`` (a
            negative length attends to nothing, one past ``Lmax`` to the whole buffer), so a serving
            loop calls this once per token without a GPU synchronisation.
        causal: the ``Lq`` queries are the *last* ``Lq`` tokens of each cache (bottom-right
            aligned): query ``i`` sees key ``j`` iff ``j <= i + cache_lens[b] - Lq``.
            Without it every query sees every valid key.
        scale: score scale, default ``1/sqrt(d)``.
        num_splits: number of key chunks ``S`` (default: :func:`default_num_splits`).
        block_n: keys per inner-loop step (default 64 on GPU, 16 in the interpreter).
        check_lens: also check that every length lies in ``[0, Lmax]`` (a ``ValueError`` otherwise) by
            reading ``cache_lens`` back to the host: one synchronisation per call on a GPU, for tests and
            debugging. Skipped while a CUDA graph is being captured (reading back is not allowed there).

    Returns:
        ``(B, Hq, Lq, dv)`` in the dtype of ``q``; a row with no visible key is zero.
        Forward only: the result does not track gradients (decoding needs none).
    """
    _check_inputs(q, k_cache, v_cache, cache_lens, check_lens)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    bsz, hq, lq, d = q.shape
    _, hkv, lmax, dv = v_cache.shape
    scale = resolve_scale(scale, d)
    on_gpu = not interpreting()  # compiled for a GPU: its tile sizes and launch options
    block_n = check_positive_int(block_n, "block_n") if block_n is not None else (64 if on_gpu else 16)
    if block_n < 16 or block_n > _MAX_BLOCK_N or block_n & (block_n - 1):
        raise ValueError(f"block_n must be a power of two from 16 to {_MAX_BLOCK_N}, got {block_n}")
    if num_splits is None:
        num_splits = default_num_splits(bsz, hkv, lmax, block_n, q.device)
    num_splits = check_positive_int(num_splits, "num_splits")

    out = torch.empty((bsz, hq, lq, dv), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    if lmax == 0:
        return out.zero_()
    # Each chunk is a whole number of key blocks; trailing chunks may be empty.
    split_len = _cdiv(_cdiv(lmax, num_splits), block_n) * block_n
    o_part = torch.empty((bsz, hq, lq, num_splits, dv), dtype=torch.float32, device=q.device)
    lse_part = torch.empty((bsz, hq, lq, num_splits), dtype=torch.float32, device=q.device)

    group = hq // hkv
    block_m = max(16, _next_pow2(group * lq))
    block_d = max(16, _next_pow2(d))
    block_dv = max(16, _next_pow2(dv))
    # int32 and contiguous: the kernel reads lens[b] at LENS + b (`out` is an unused placeholder without lengths)
    lens = cache_lens.to(torch.int32).contiguous() if cache_lens is not None else out
    precision = "ieee" if q.dtype == torch.float32 else None  # fp32 inputs: no tf32 rounding
    extra = {"num_warps": 4, "num_stages": 3} if on_gpu else {}

    _decode_split_kernel[(bsz * hkv, num_splits)](
        q, k_cache, v_cache, lens, o_part, lse_part,
        *q.stride(), *k_cache.stride(), *v_cache.stride(), *o_part.stride(), *lse_part.stride(),
        scale * _LOG2E, hkv, lq, lmax, d, dv, split_len,
        G=group, HAS_LENS=cache_lens is not None, CAUSAL=causal,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv, PRECISION=precision,
        **extra,
    )
    _decode_combine_kernel[(bsz * hq * lq,)](
        o_part, lse_part, out,
        *o_part.stride(), *lse_part.stride(), *out.stride(),
        hq, lq, num_splits, dv,
        BLOCK_S=max(2, _next_pow2(num_splits)), BLOCK_DV=block_dv,
    )
    return out


def decode_bytes(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 cache_lens: Optional[torch.Tensor] = None) -> int:
    """The fewest bytes a decode step must move: q read, the valid K and V read once, out written."""
    bsz, hq, lq, _ = q.shape
    _, hkv, lmax, dv = v_cache.shape
    keys = int(cache_lens.sum()) if cache_lens is not None else bsz * lmax
    kv = keys * hkv * (k_cache.shape[-1] * k_cache.element_size() + dv * v_cache.element_size())
    return q.numel() * q.element_size() + kv + bsz * hq * lq * dv * q.element_size()

