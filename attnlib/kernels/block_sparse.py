r"""Block-sparse attention forward: compute only the (query block, key block) tiles a block mask names.

A FlashAttention forward visits every ``block_size x block_size`` tile of the
score matrix. Many attention variants make most tiles empty: a sliding window
keeps a band, documents packed into one sequence keep diagonal squares, and
routed attention such as MoBA lets each query pick a few key blocks (seed
*MoBA: Mixture of Block Attention for Long-Context LLMs*, which "applies the
principles of Mixture of Experts to the attention mechanism"). If the kernel is
told which tiles can be non-empty it can skip the others, so its time falls
with the fraction of active tiles. This is the idea of the ``BlockMask`` of
FlexAttention (seed *Flex Attention: A Programming Model for Generating
Optimized Attention Kernels*), written out here by hand.

The function computes exactly

.. math::

    O = \operatorname{softmax}\big(s\,QK^\top + \log M\big) V,\qquad
    M_{ij} = \underbrace{A_{\lfloor i/b\rfloor,\lfloor j/b\rfloor}}_{\text{block mask}}
             \wedge \underbrace{E_{ij}}_{\text{element rule}},

where ``A`` is the boolean block mask (True = compute the tile) and ``E`` is an
optional element rule evaluated inside the visited tiles: causal, a sliding
window, or equal document ids (all bottom-right aligned as in
:mod:`attnlib.masks`). The block mask decides the *work*, the element rule the
*exact mask*: a tile that the element rule empties costs time but not
correctness, and a fully masked row gives zeros.

The kernel receives the block mask compressed per query block, as
FlexAttention's ``kv_num_blocks``/``kv_indices``: the number of active key
blocks and their indices, so its loop runs over active tiles only. As in
FlexAttention, the active tiles come in two lists: *full* tiles, whose every
entry the element rule keeps (:func:`full_block_mask`; below a causal diagonal,
inside one document), are computed without any comparison or ``where``; only
the *partial* ones (the diagonal, a window's edges, document borders, the last
key block when ``Lk`` is not a whole number of blocks) are masked. With a causal
mask the query blocks that see the most keys are started first.

The ``*_block_mask`` helpers build block masks of shape ``(..., nQB, nKB)``
with ``nQB = ceil(Lq / b)``, ``nKB = ceil(Lk / b)``.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..validation import check_positive_int, check_qkv, resolve_scale
from ._interpreter_compat import check_launchable, interpreting, patch_interpreter

patch_interpreter()  # Triton < 3.7's interpreter with NumPy >= 2.4 (see the module)

__all__ = [
    "block_sparse_attention",
    "block_mask_from_dense",
    "full_block_mask",
    "causal_block_mask",
    "sliding_window_block_mask",
    "document_block_mask",
    "moba_block_mask",
    "block_mask_density",
    "compress_block_mask",
    "element_mask",
    "expand_block_mask",
]

_LOG2E = 1.4426950408889634


@triton.jit
def _attend_key_blocks(acc, l_i, m_i, q, q_doc, pos, n_blocks, idx_base, sik,
                       k_base, v_base, doc_base, skn, skd, svn, svd, sdn,
                       qk_scale, Lk, D, DV, WINDOW, offs_n, offs_d, offs_dv,
                       MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_DOCS: tl.constexpr,
                       BLOCK: tl.constexpr, PRECISION: tl.constexpr):
    """The online softmax over ``n_blocks`` key blocks whose indices start at ``idx_base``.

    ``MASKED=False`` is for *full* tiles (the element rule keeps every entry and no key lies past
    ``Lk``): no comparison, no ``where``. ``MASKED=True`` applies the key bound and the element rule."""
    for t in range(0, n_blocks):
        kb = tl.load(idx_base + t * sik)
        cols = kb * BLOCK + offs_n  # (BLOCK,)
        col_ok = cols < Lk
        k = tl.load(k_base + cols[:, None] * skn + offs_d[None, :] * skd,
                    mask=col_ok[:, None] & (offs_d[None, :] < D), other=0.0)
        v = tl.load(v_base + cols[:, None] * svn + offs_dv[None, :] * svd,
                    mask=col_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BLOCK, BLOCK) raw scores q.k
        if MASKED:
            keep = col_ok[None, :]
            if CAUSAL:
                keep = keep & (cols[None, :] <= pos[:, None])
            if HAS_WINDOW:
                keep = keep & (pos[:, None] - cols[None, :] < WINDOW)
            if HAS_DOCS:
                k_doc = tl.load(doc_base + cols * sdn, mask=col_ok, other=-2)
                keep = keep & (q_doc[:, None] == k_doc[None, :])
            s = tl.where(keep, s, float("-inf"))
        # As in the flash kernels' online_softmax_step: the row max of the raw scores times qk_scale (> 0, so
        # the max commutes with it), then one fused multiply-add per score, and the rescaled accumulator
        # handed to the second product as its accumulator.
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)  # base-2 logits
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet: no NaN
        p = tl.math.exp2(s * qk_scale - shift[:, None])  # exactly 0 at masked keys
        alpha = tl.math.exp2(m_i - shift)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _block_sparse_fwd_kernel(
    Q, K, V, OUT, KV_NUM, KV_IDX, FULL_NUM, FULL_IDX, DOCS,
    sqb, sqh, sqm, sqd,  # q strides (B, H, Lq, D)
    skb, skh, skn, skd,  # k strides (B, H, Lk, D)
    svb, svh, svn, svd,  # v strides (B, H, Lk, Dv)
    sob, soh, som, sod,  # out strides (B, H, Lq, Dv)
    snb, snh, snm,  # kv_num and full_num strides (B, H, nQB); 0 where broadcast
    sib, sih, sim, sik,  # kv_idx and full_idx strides (B, H, nQB, nKB); 0 where broadcast
    sdb, sdn,  # document-id strides (B, Lk)
    qk_scale, H, Lq, Lk, D, DV, WINDOW,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_DOCS: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr,
):
    qb = tl.program_id(0)  # query block
    if CAUSAL:  # the last query blocks see the most keys: start them first, so no long one runs alone at the end
        qb = tl.num_programs(0) - 1 - qb
    bh = tl.program_id(1)  # b * H + h
    b = (bh // H).to(tl.int64)  # int64: b * sqb reaches 2**31 elements in a large batch
    h = (bh % H).to(tl.int64)
    offs_m = qb * BLOCK + tl.arange(0, BLOCK)  # query rows of this tile
    pos = offs_m + Lk - Lq  # their positions among the keys (bottom-right alignment)
    offs_n = tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < Lq

    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
                mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)  # (BLOCK, BLOCK_D)
    q_doc = pos  # (a placeholder without documents)
    if HAS_DOCS:
        q_doc = tl.load(DOCS + b * sdb + pos * sdn, mask=row_ok & (pos >= 0), other=-1)

    m_i = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK,), dtype=tl.float32)
    acc = tl.zeros((BLOCK, BLOCK_DV), dtype=tl.float32)

    k_base, v_base, doc_base = K + b * skb + h * skh, V + b * svb + h * svh, DOCS + b * sdb
    counts = b * snb + h * snh + qb * snm
    indices = b * sib + h * sih + qb * sim
    # Full tiles first (no mask), then the partial ones (the element rule and the key bound), as FlexAttention
    # keeps full_kv_num_blocks / full_kv_indices apart from kv_num_blocks / kv_indices.
    acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q, q_doc, pos, tl.load(FULL_NUM + counts), FULL_IDX + indices,
                                       sik, k_base, v_base, doc_base, skn, skd, svn, svd, sdn, qk_scale, Lk, D, DV,
                                       WINDOW, offs_n, offs_d, offs_dv, False, CAUSAL, HAS_WINDOW, HAS_DOCS, BLOCK,
                                       PRECISION)
    acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q, q_doc, pos, tl.load(KV_NUM + counts), KV_IDX + indices,
                                       sik, k_base, v_base, doc_base, skn, skd, svn, svd, sdn, qk_scale, Lk, D, DV,
                                       WINDOW, offs_n, offs_d, offs_dv, True, CAUSAL, HAS_WINDOW, HAS_DOCS, BLOCK,
                                       PRECISION)

    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]  # fully masked rows: 0
    tl.store(OUT + b * sob + h * soh + offs_m[:, None] * som + offs_dv[None, :] * sod,
             out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & (offs_dv[None, :] < DV))


# ----------------------------------------------------------------------------- block masks


def _check_block_size(block_size) -> int:
    block_size = check_positive_int(block_size, "block_size")
    if block_size < 16 or block_size > 256 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two from 16 (a tl.dot tile) to 256, got {block_size}")
    return block_size


def _described(x) -> str:
    """A tensor's shape and dtype, or any other object's type, for an error message."""
    return f"shape {tuple(x.shape)} and dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__


def _check_bool_mask(mask, name: str, dims: str = "(..., nQB, nKB)") -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() < 2:
        raise TypeError(f"{name} must be a boolean torch.Tensor of shape {dims}, got {_described(mask)}")


def _tile_ranges(lq: int, lk: int, block_size: int, device=None):
    """First/last aligned query position of each query block, first/last key of each key block."""
    nqb, nkb = triton.cdiv(lq, block_size), triton.cdiv(lk, block_size)
    q_first = torch.arange(nqb, device=device) * block_size + (lk - lq)  # (nQB,)
    q_last = torch.clamp(q_first + block_size - 1, max=lk - 1)
    k_first = torch.arange(nkb, device=device) * block_size  # (nKB,)
    k_last = torch.clamp(k_first + block_size - 1, max=lk - 1)
    return q_first[:, None], q_last[:, None], k_first[None, :], k_last[None, :]


def block_mask_from_dense(mask: torch.Tensor, block_size: int) -> torch.Tensor:
    """``(..., Lq, Lk)`` boolean mask -> ``(..., nQB, nKB)``: a tile is active iff any entry in it is True."""
    _check_bool_mask(mask, "mask", "(..., Lq, Lk)")
    block_size = _check_block_size(block_size)
    lq, lk = mask.shape[-2:]
    pad_q, pad_k = (-lq) % block_size, (-lk) % block_size
    padded = torch.nn.functional.pad(mask, (0, pad_k, 0, pad_q), value=False)
    tiles = padded.unflatten(-1, (-1, block_size)).unflatten(-3, (-1, block_size))  # (..., nQB, b, nKB, b)
    return tiles.any(dim=-1).any(dim=-2)


def sliding_window_block_mask(lq: int, lk: int, window: Optional[int], block_size: int, *,
                              device=None) -> torch.Tensor:
    """Tiles that meet the (bottom-right aligned) causal band ``0 <= pos_i - j < window``.

    ``window=None`` is plain causal. Exact (a tile is active iff it holds an allowed entry)
    when ``Lq <= Lk``; otherwise a superset.
    """
    lq, lk = check_positive_int(lq, "lq"), check_positive_int(lk, "lk")
    block_size = _check_block_size(block_size)
    if window is not None:
        check_positive_int(window, "window")
    q_first, q_last, k_first, k_last = _tile_ranges(lq, lk, block_size, device)
    active = k_first <= q_last  # some key at or before some query
    if window is not None:
        active = active & (q_first - k_last < window)  # the closest pair lies inside the window
    return active & (q_last >= 0)  # query blocks before the first key (Lq > Lk) see nothing


def causal_block_mask(lq: int, lk: int, block_size: int, *, device=None) -> torch.Tensor:
    """Tiles on or below the (bottom-right aligned) diagonal."""
    return sliding_window_block_mask(lq, lk, None, block_size, device=device)


def document_block_mask(document_ids: torch.Tensor, block_size: int, *, causal: bool = False) -> torch.Tensor:
    """``(B, L)`` document id of each token (non-decreasing: documents packed one after another)
    -> ``(B, nB, nB)`` block mask of self-attention within documents (and causal, if asked).

    A tile is active iff the id ranges of its query rows and key columns overlap,
    a superset of the tiles that hold an allowed entry (exact when ids are consecutive
    integers); the kernel's element rule removes the rest.
    """
    _check_document_ids(document_ids, None, None)
    block_size = _check_block_size(block_size)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    bsz, length = document_ids.shape
    if bsz == 0 or length == 0:
        return torch.zeros(bsz, triton.cdiv(length, block_size), triton.cdiv(length, block_size), dtype=torch.bool,
                           device=document_ids.device)
    lo, hi = _document_id_ranges(document_ids, block_size)  # (B, nB)
    active = (lo[:, :, None] <= hi[:, None, :]) & (lo[:, None, :] <= hi[:, :, None])  # ranges overlap
    if causal:
        active = active & causal_block_mask(length, length, block_size, device=document_ids.device)
    return active


def _document_id_ranges(document_ids: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L)`` ids -> the least and greatest id of each block of ``block_size`` tokens, ``(B, nB)`` each
    (the last block padded by repeating the last id)."""
    pad = (-document_ids.shape[-1]) % block_size
    ids = torch.nn.functional.pad(document_ids, (0, pad), mode="replicate") if pad else document_ids
    tiles = ids.unflatten(-1, (-1, block_size))  # (B, nB, b)
    return tiles.amin(dim=-1), tiles.amax(dim=-1)


def full_block_mask(lq: int, lk: int, block_size: int, *, causal: bool = False, window: Optional[int] = None,
                    document_ids: Optional[torch.Tensor] = None, device=None) -> torch.Tensor:
    """``(B or 1, 1, nQB, nKB)``: the tiles whose every entry the element rule keeps and that hold no key
    past ``Lk``: FlexAttention's *full* blocks, which :func:`block_sparse_attention` computes without
    a mask (the other active tiles, *partial*, get the comparisons and the ``where``).

    Causal: every key of the tile at or before the first query's position, ``k_last <= q_first``;
    a window adds ``q_last - k_first < window``; documents need one id over the tile's queries and
    keys. Padding rows past ``Lq`` do not count (their results are never stored).
    """
    lq, lk, block_size = check_positive_int(lq, "lq"), check_positive_int(lk, "lk"), _check_block_size(block_size)
    if window is not None:
        check_positive_int(window, "window")
    if document_ids is not None:
        if lq != lk:
            raise ValueError(f"document_ids needs self-attention (Lq == Lk), got Lq={lq}, Lk={lk}")
        _check_document_ids(document_ids, None, None)
        if document_ids.shape[-1] != lk:
            raise ValueError(f"document_ids must have shape (B, L) = (B, {lk}), got {tuple(document_ids.shape)}")
    return _full_tiles(lq, lk, block_size, causal, window, document_ids, device)


def _full_tiles(lq: int, lk: int, block_size: int, causal: bool, window: Optional[int],
                document_ids: Optional[torch.Tensor], device) -> torch.Tensor:
    """:func:`full_block_mask` on arguments already checked (block_sparse_attention's, once per call)."""
    q_first, q_last, k_first, k_last = _tile_ranges(lq, lk, block_size, device)
    full = (k_first + block_size <= lk).expand(q_first.shape[0], -1)  # (nQB, nKB): no key past Lk
    if causal or window is not None:
        full = full & (k_last <= q_first)
    if window is not None:
        full = full & (q_last - k_first < window)
    full = full[None, None]
    if document_ids is not None:
        lo, hi = _document_id_ranges(document_ids, block_size)  # (B, nB)
        single = lo == hi  # the block holds one document
        one_doc = single[:, :, None] & single[:, None, :] & (lo[:, :, None] == lo[:, None, :])
        full = full & one_doc[:, None].to(full.device)
    return full


def moba_block_mask(q: torch.Tensor, k: torch.Tensor, block_size: int, top_k: int) -> torch.Tensor:
    """Routed (MoBA-style) causal block mask: each query block keeps its own (diagonal)
    key block and the ``top_k`` earlier key blocks with the largest gate score.

    Gate score of query block ``I`` and key block ``J``: ``mean_{i in I} q_i . mean_{j in J} k_j``.
    This is *our* tile-level simplification for a self-attention (``Lq == Lk``) kernel:
    the MoBA abstract states only that it applies Mixture-of-Experts principles to
    attention and can move between full and sparse attention; its exact gating rule
    is in the paper body. Returns ``(B, H, nB, nB)``; use it with ``causal=True``.
    """
    check_qkv(q, k, k)
    block_size = _check_block_size(block_size)
    top_k = check_positive_int(top_k, "top_k")
    if q.dim() != 4 or k.dim() != 4 or q.shape[:2] != k.shape[:2] or q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"q and k must be (B, H, L, d) with equal L for self-attention, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    length = k.shape[-2]
    if length == 0:
        raise ValueError(f"q and k must have a positive length (dim -2), got q {tuple(q.shape)}, k {tuple(k.shape)}")
    nb = triton.cdiv(length, block_size)

    def block_means(x):  # (B, H, L, d) -> (B, H, nB, d), the last block averaged over its real rows
        pad = nb * block_size - length
        sums = torch.nn.functional.pad(x.float(), (0, 0, 0, pad)).unflatten(-2, (nb, block_size)).sum(-2)
        counts = torch.full((nb,), float(block_size), device=x.device)
        counts[-1] = block_size - pad
        return sums / counts[:, None]

    gate = block_means(q) @ block_means(k).transpose(-2, -1)  # (B, H, nB, nB)
    earlier = torch.ones(nb, nb, dtype=torch.bool, device=q.device).tril(diagonal=-1)  # J < I
    gate = gate.masked_fill(~earlier, float("-inf"))
    kk = min(top_k, max(nb - 1, 1))
    chosen = torch.zeros_like(gate, dtype=torch.bool)
    if nb > 1:
        top = gate.topk(kk, dim=-1).indices  # (B, H, nB, kk)
        chosen.scatter_(-1, top, True)
        chosen &= earlier  # rows with fewer than kk earlier blocks picked -inf ones: drop them
    return chosen | torch.eye(nb, dtype=torch.bool, device=q.device)


def block_mask_density(block_mask: torch.Tensor) -> float:
    """Fraction of active tiles (the fraction of the dense work the kernel does)."""
    return float(block_mask.float().mean())


def compress_block_mask(block_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., nQB, nKB)`` -> ``(kv_num (..., nQB) int32, kv_idx (..., nQB, nKB) int32)``:
    per query block, how many key blocks are active and their indices first, in order."""
    _check_bool_mask(block_mask, "block_mask")
    kv_num = block_mask.sum(dim=-1, dtype=torch.int32)
    kv_idx = torch.argsort((~block_mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return kv_num, kv_idx


# ----------------------------------------------------------------------------- the entry point


def _check_document_ids(document_ids, bsz: Optional[int], length: Optional[int]) -> None:
    if not isinstance(document_ids, torch.Tensor):
        raise TypeError(f"document_ids must be an integer torch.Tensor (B, L), got {type(document_ids).__name__}")
    if document_ids.is_floating_point() or document_ids.dtype == torch.bool or document_ids.is_complex():
        raise TypeError(f"document_ids must hold integers, got dtype {document_ids.dtype}")
    if document_ids.dim() != 2 or (bsz is not None and document_ids.shape != (bsz, length)):
        want = "(B, L)" if bsz is None else f"(B, L) = ({bsz}, {length})"
        raise ValueError(f"document_ids must have shape {want}, got {tuple(document_ids.shape)}")
    if document_ids.device.type not in ("cpu", "cuda"):
        raise ValueError(f"document_ids must be on the CPU or a CUDA GPU, got {document_ids.device}")
    if document_ids.numel() and (document_ids.min() < -2**31 or document_ids.max() >= 2**31):
        raise ValueError("document_ids must fit in int32 (the kernel compares them as int32), got values from "
                         f"{int(document_ids.min())} to {int(document_ids.max())}")
    if document_ids.shape[-1] > 1 and (document_ids.diff(dim=-1) < 0).any():
        raise ValueError("document_ids must be non-decreasing along the sequence (documents packed in order)")


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    *,
    block_size: int = 64,
    causal: bool = False,
    window: Optional[int] = None,
    document_ids: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
) -> torch.Tensor:
    r"""Attention that computes only the tiles the block mask marks active (forward only).

    Args:
        q: ``(B, H, Lq, d)``; k: ``(B, H, Lk, d)``; v: ``(B, H, Lk, dv)``.
        block_mask: boolean, broadcastable to ``(B, H, nQB, nKB)``, ``nQB = ceil(Lq/block_size)``,
            ``nKB = ceil(Lk/block_size)``; True = compute tile ``(I, J)``. Entries of inactive tiles
            are masked out.
        block_size: tile edge, a power of two >= 16 (the block mask's geometry).
        causal: element rule, query ``i`` sees key ``j`` iff ``j <= i + Lk - Lq``.
        window: element rule, sliding window ``0 <= i + Lk - Lq - j < window`` (implies causal).
        document_ids: element rule for self-attention (``Lq == Lk``): ``(B, L)`` non-decreasing ids;
            ``i`` sees ``j`` only within one document.
        scale: score scale, default ``1/sqrt(d)``.

    Returns:
        ``(B, H, Lq, dv)`` in the dtype of ``q``; rows with no allowed key are zero.
        The result does not track gradients (forward kernel only).
    """
    check_qkv(q, k, v)
    check_launchable(q, "q", "block_sparse_attention")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, L, d), got {tuple(x.shape)}")
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2]):
        raise ValueError(f"q, k and v must share (B, H): got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    block_size = _check_block_size(block_size)
    if interpreting() and q.dtype == torch.bfloat16:
        raise TypeError("Triton's CPU interpreter has no bfloat16 (it would compute wrong numbers): "
                        "use float16 or float32 there")
    bsz, heads, lq, d = q.shape
    lk, dv = k.shape[-2], v.shape[-1]
    nqb, nkb = triton.cdiv(lq, block_size), triton.cdiv(lk, block_size)
    if not isinstance(block_mask, torch.Tensor) or block_mask.dtype != torch.bool:
        raise TypeError(f"block_mask must be a boolean torch.Tensor, got {getattr(block_mask, 'dtype', type(block_mask))}")
    if block_mask.device != q.device:
        raise ValueError(f"block_mask must be on {q.device}, got {block_mask.device}")
    try:
        block_mask = block_mask.expand(bsz, heads, nqb, nkb) if block_mask.dim() <= 4 else None
    except RuntimeError:
        block_mask = None
    if block_mask is None:
        raise ValueError(
            f"block_mask must be broadcastable to (B, H, nQB, nKB) = ({bsz}, {heads}, {nqb}, {nkb}) "
            f"for Lq={lq}, Lk={lk}, block_size={block_size}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if window is not None:
        window = check_positive_int(window, "window")
    if document_ids is not None:
        if lq != lk:
            raise ValueError(f"document_ids needs self-attention (Lq == Lk), got Lq={lq}, Lk={lk}")
        _check_document_ids(document_ids, bsz, lk)
        if document_ids.device != q.device:
            raise ValueError(f"document_ids must be on {q.device}, got {document_ids.device}")
    scale = resolve_scale(scale, d)

    out = torch.empty((bsz, heads, lq, dv), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    # Compress the (broadcast) mask without materialising the broadcast: stride 0 stays 0.
    base = block_mask
    for dim in (0, 1):
        if block_mask.stride(dim) == 0:
            base = base.narrow(dim, 0, 1)
    # Split the active tiles into full ones (computed without a mask) and partial ones.
    full = _full_tiles(lq, lk, block_size, causal, window, document_ids, q.device)  # (arguments checked above)
    full, partial = (base & full).contiguous(), (base & ~full).contiguous()  # one shape: one set of strides
    kv_num, kv_idx = compress_block_mask(partial)
    full_num, full_idx = compress_block_mask(full)
    kv_num, kv_idx = kv_num.expand(bsz, heads, nqb), kv_idx.expand(bsz, heads, nqb, nkb)
    full_num, full_idx = full_num.expand(bsz, heads, nqb), full_idx.expand(bsz, heads, nqb, nkb)
    docs = document_ids.to(torch.int32) if document_ids is not None else kv_num  # kv_num: unused placeholder
    docs_strides = docs.stride() if document_ids is not None else (0, 0)
    on_gpu = not interpreting()  # compiled for a GPU: its tile sizes and launch options
    extra = {"num_warps": 4 if block_size <= 64 else 8, "num_stages": 3} if on_gpu else {}

    if bsz * heads > 65_535:
        # Grid axis 1 stops at 65,535 programs. The flash kernels fold B*H into axis 0; here that fold costs
        # 40 spilled registers at 128x128 tiles under Triton 3.6 (measured with tools/compile_kernels.py).
        raise ValueError(f"block_sparse_attention launches one program row per (batch, head): batch * heads must "
                         f"be at most 65,535, got {bsz} * {heads} = {bsz * heads}; split the batch")
    _block_sparse_fwd_kernel[(nqb, bsz * heads)](
        q, k, v, out, kv_num, kv_idx, full_num, full_idx, docs,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        *kv_num.stride(), *kv_idx.stride(), *docs_strides,
        scale * _LOG2E, heads, lq, lk, d, dv, window if window is not None else 0,
        CAUSAL=causal or window is not None, HAS_WINDOW=window is not None, HAS_DOCS=document_ids is not None,
        BLOCK=block_size, BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_DV=max(16, triton.next_power_of_2(dv)),
        PRECISION="ieee" if q.dtype == torch.float32 else None,
        **extra,
    )
    return out


def element_mask(lq: int, lk: int, *, causal: bool = False, window: Optional[int] = None,
                 document_ids: Optional[torch.Tensor] = None, device=None) -> torch.Tensor:
    """The element rule of :func:`block_sparse_attention` as a dense mask, ``(B or 1, 1, Lq, Lk)``,
    for references and plots."""
    i = torch.arange(lq, device=device)[:, None] + (lk - lq)  # aligned query positions
    j = torch.arange(lk, device=device)[None, :]
    keep = torch.ones(lq, lk, dtype=torch.bool, device=device)
    if causal or window is not None:
        keep &= j <= i
    if window is not None:
        keep &= i - j < window
    keep = keep[None, None]
    if document_ids is not None:
        same = document_ids[:, :, None] == document_ids[:, None, :]  # (B, L, L)
        keep = keep & same[:, None]
    return keep


def expand_block_mask(block_mask: torch.Tensor, lq: int, lk: int, block_size: int) -> torch.Tensor:
    """``(..., nQB, nKB)`` -> ``(..., Lq, Lk)``: every entry of an active tile True."""
    _check_bool_mask(block_mask, "block_mask")
    lq, lk, block_size = check_positive_int(lq, "lq"), check_positive_int(lk, "lk"), _check_block_size(block_size)
    want = (triton.cdiv(lq, block_size), triton.cdiv(lk, block_size))
    if tuple(block_mask.shape[-2:]) != want:
        raise ValueError(f"block_mask must end in (nQB, nKB) = {want} for Lq={lq}, Lk={lk}, block_size={block_size}, "
                         f"got shape {tuple(block_mask.shape)}")
    dense = block_mask.repeat_interleave(block_size, dim=-2).repeat_interleave(block_size, dim=-1)
    return dense[..., :lq, :lk]

