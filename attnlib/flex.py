r"""A readable reference of the FlexAttention programming model: attention = a score modifier + a mask.

FlexAttention (seed *Flex Attention: A Programming Model for Generating Optimized
Attention Kernels*) writes an attention variant as two small callbacks that see
*indices*, not tensors of scores:

.. math::

    S_{bhij} = \mathrm{score\_mod}\big(s\, q_{bhi}\cdot k_{bhj},\; b, h, i, j\big),\qquad
    M_{bhij} = \mathrm{mask\_mod}(b, h, i, j),\qquad
    O_{bhi} = \sum_j \operatorname{softmax}_j\big(S_{bhij} \text{ over } M_{bhij}\big)\, v_{bhj}.

:func:`flex_attention` takes callbacks with exactly the signatures of
``torch.nn.attention.flex_attention.flex_attention`` (``score_mod(score, b, h, q_idx, kv_idx)``,
``mask_mod(b, h, q_idx, kv_idx)``) and evaluates them *once* on broadcast index tensors
``b (B,1,1,1)``, ``h (1,H,1,1)``, ``q_idx (1,1,Lq,1)``, ``kv_idx (1,1,1,Lk)``: dense and
:math:`O(L^2)` on purpose, so every score can be printed. PyTorch compiles the same
callbacks into a fused kernel that skips the key blocks a mask empties; which blocks
those are is what :func:`block_summary` computes (as ``create_block_mask`` does):
per (query block, key block) tile, *active* if any entry is allowed and *full* if all
are. ``BlockSummary.active`` is the ``block_mask`` that lab 18's Triton kernel
:func:`attnlib.kernels.block_sparse.block_sparse_attention` consumes, and ``full`` is its
:func:`~attnlib.kernels.block_sparse.full_block_mask`, in the same layout ``(B, H, nQB, nKB)``.

Indices are raw positions (top-left aligned), as in PyTorch: for the bottom-right causal
alignment of :mod:`attnlib.masks` when ``Lq != Lk``, pass ``offset=Lk - Lq``.
Ready-made mods: :func:`causal`, :func:`sliding_window`, :func:`prefix_lm`, :func:`document`
(masks) and :func:`alibi`, :func:`soft_cap` (score mods); :func:`and_masks`/:func:`or_masks`
combine masks. ALiBi (Press et al., *Train Short, Test Long*) and tanh soft-capping of
logits are background, not seeds.
A fully masked row gives zeros (as PyTorch's FlexAttention does), never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .core import compute_dtype, masked_softmax
from .validation import check_positive_int, check_qkv, resolve_scale

__all__ = ["flex_attention", "dense_mask", "BlockSummary", "block_summary", "causal", "sliding_window",
           "prefix_lm", "document", "alibi", "soft_cap", "and_masks", "or_masks"]

ScoreMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _indices(bsz: int, heads: int, lq: int, lk: int, device):
    """Broadcast index tensors b (B,1,1,1), h (1,H,1,1), q_idx (1,1,Lq,1), kv_idx (1,1,1,Lk)."""
    def ar(n):
        return torch.arange(n, device=device)
    return (ar(bsz).view(-1, 1, 1, 1), ar(heads).view(1, -1, 1, 1), ar(lq).view(1, 1, -1, 1),
            ar(lk).view(1, 1, 1, -1))


def dense_mask(mask_mod: MaskMod, bsz: int, heads: int, lq: int, lk: int, *, device=None) -> torch.Tensor:
    """``mask_mod`` evaluated on every ``(b, h, i, j)``: a boolean ``(B, H, Lq, Lk)`` tensor (True = attend)."""
    for name, n in (("bsz", bsz), ("heads", heads), ("lq", lq), ("lk", lk)):
        check_positive_int(n, name)
    if not callable(mask_mod):
        raise TypeError(f"mask_mod must be callable (b, h, q_idx, kv_idx) -> bool tensor, got {type(mask_mod).__name__}")
    m = mask_mod(*_indices(bsz, heads, lq, lk, device))
    if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
        raise TypeError(f"mask_mod must return a boolean tensor, got {getattr(m, 'dtype', type(m).__name__)}")
    try:
        return m.expand(bsz, heads, lq, lk)
    except RuntimeError:
        raise ValueError(f"mask_mod returned shape {tuple(m.shape)}, not broadcastable to "
                         f"(B, H, Lq, Lk) = ({bsz}, {heads}, {lq}, {lk})") from None


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, score_mod: Optional[ScoreMod] = None,
                   mask_mod: Optional[MaskMod] = None, *, scale: Optional[float] = None,
                   return_weights: bool = False):
    """Dense reference of ``torch.nn.attention.flex_attention.flex_attention``.

    Args:
        q: ``(B, H, Lq, d)``; k: ``(B, H, Lk, d)``; v: ``(B, H, Lk, dv)``.
        score_mod: ``score_mod(score, b, h, q_idx, kv_idx) -> score``, applied to the scaled scores.
        mask_mod: ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (True = attend).
        scale: default ``1/sqrt(d)``.
        return_weights: also return the ``(B, H, Lq, Lk)`` weights.

    Returns ``out (B, H, Lq, dv)`` in q's dtype (or ``(out, weights)``); rows with no allowed key are 0.
    """
    check_qkv(q, k, v)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, L, d) as in torch's flex_attention, got {tuple(x.shape)}")
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2]):
        raise ValueError(f"q, k and v must share (B, H): got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if score_mod is not None and not callable(score_mod):
        raise TypeError(f"score_mod must be callable (score, b, h, q_idx, kv_idx) -> score, "
                        f"got {type(score_mod).__name__}")
    bsz, heads, lq, d = q.shape
    lk = k.shape[-2]
    scale = resolve_scale(scale, d)
    ct = compute_dtype(q.dtype)
    scores = (q.to(ct) @ k.to(ct).transpose(-2, -1)) * scale  # (B, H, Lq, Lk)
    if score_mod is not None:
        scores = score_mod(scores, *_indices(bsz, heads, lq, lk, q.device)).expand_as(scores)
    mask = None if mask_mod is None else dense_mask(mask_mod, bsz, heads, lq, lk, device=q.device)
    weights = masked_softmax(scores, mask)  # (B, H, Lq, Lk)
    out = (weights @ v.to(ct)).to(q.dtype)  # (B, H, Lq, dv)
    return (out, weights.to(q.dtype)) if return_weights else out


# ----------------------------------------------------------------------------- ready-made mods


def causal(offset: int = 0) -> MaskMod:
    """``kv_idx <= q_idx + offset`` (``offset = Lk - Lq`` gives attnlib's bottom-right alignment)."""
    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + offset
    return mask_mod


def sliding_window(window: int, offset: int = 0) -> MaskMod:
    """Causal band ``0 <= q_idx + offset - kv_idx < window`` (the last ``window`` keys, the query's own included)."""
    window = check_positive_int(window, "window")

    def mask_mod(b, h, q_idx, kv_idx):
        distance = q_idx + offset - kv_idx
        return (distance >= 0) & (distance < window)
    return mask_mod


def prefix_lm(prefix_length: int) -> MaskMod:
    """Prefix-LM: every query sees the first ``prefix_length`` keys (bidirectional prefix), and the rest causally."""
    if isinstance(prefix_length, bool) or not isinstance(prefix_length, int) or prefix_length < 0:
        raise ValueError(f"prefix_length must be a non-negative int, got {prefix_length!r}")

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx < prefix_length) | (kv_idx <= q_idx)
    return mask_mod


def document(document_ids: torch.Tensor) -> MaskMod:
    """Packed sequences: query and key must carry the same id, ``document_ids`` of shape ``(B, L)``.

    Combine with :func:`causal` through :func:`and_masks` for causal language modelling on packed documents.
    """
    if not isinstance(document_ids, torch.Tensor) or document_ids.dim() != 2 or document_ids.is_floating_point():
        raise ValueError(f"document_ids must be an integer tensor of shape (B, L), got "
                         f"{getattr(document_ids, 'dtype', type(document_ids).__name__)} "
                         f"{tuple(getattr(document_ids, 'shape', ()))}")

    def mask_mod(b, h, q_idx, kv_idx):
        return document_ids[b, q_idx] == document_ids[b, kv_idx]
    return mask_mod


def alibi(slopes: torch.Tensor) -> ScoreMod:
    """ALiBi: ``score + slopes[h] * (kv_idx - q_idx)``, a linear penalty on distance per head; ``slopes`` is ``(H,)``."""
    if not isinstance(slopes, torch.Tensor) or slopes.dim() != 1 or not slopes.is_floating_point():
        raise ValueError(f"slopes must be a floating-point tensor of shape (H,), got "
                         f"{getattr(slopes, 'dtype', type(slopes).__name__)} {tuple(getattr(slopes, 'shape', ()))}")

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    return score_mod


def soft_cap(cap: float) -> ScoreMod:
    """Logit soft-capping ``cap * tanh(score / cap)``: scores stay in ``(-cap, cap)``."""
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0:
        raise ValueError(f"cap must be a positive number, got {cap!r}")

    def score_mod(score, b, h, q_idx, kv_idx):
        return cap * torch.tanh(score / cap)
    return score_mod


def and_masks(*mask_mods: MaskMod) -> MaskMod:
    """A key is allowed iff every mask allows it."""
    def mask_mod(b, h, q_idx, kv_idx):
        out = torch.ones((), dtype=torch.bool, device=q_idx.device)
        for m in mask_mods:
            out = out & m(b, h, q_idx, kv_idx)
        return out
    return mask_mod


def or_masks(*mask_mods: MaskMod) -> MaskMod:
    """A key is allowed iff some mask allows it."""
    def mask_mod(b, h, q_idx, kv_idx):
        out = torch.zeros((), dtype=torch.bool, device=q_idx.device)
        for m in mask_mods:
            out = out | m(b, h, q_idx, kv_idx)
        return out
    return mask_mod


# ----------------------------------------------------------------------------- block summaries


@dataclass(frozen=True)
class BlockSummary:
    """Which ``block_size x block_size`` tiles of a mask hold any allowed entry (``active``) or only
    allowed entries (``full``), both ``(B, H, nQB, nKB)`` booleans with ``nQB = ceil(Lq / block_size)``.

    A tile that reaches past ``Lk`` is never full; query rows past ``Lq`` do not count (lab 18's convention).
    ``kv_num_blocks``/``kv_indices`` list the *partial* tiles (active, not full) per query block and
    ``full_kv_num_blocks``/``full_kv_indices`` the full ones, indices first and ascending, as in
    FlexAttention's ``BlockMask`` and lab 18's ``compress_block_mask``.
    """

    active: torch.Tensor
    full: torch.Tensor
    block_size: int
    q_len: int
    kv_len: int

    @property
    def partial(self) -> torch.Tensor:
        return self.active & ~self.full

    @staticmethod
    def _compress(tiles: torch.Tensor):
        num = tiles.sum(dim=-1, dtype=torch.int32)  # (B, H, nQB)
        idx = torch.argsort((~tiles).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # active first
        return num, idx

    @property
    def kv_num_blocks(self) -> torch.Tensor:
        return self._compress(self.partial)[0]

    @property
    def kv_indices(self) -> torch.Tensor:
        return self._compress(self.partial)[1]

    @property
    def full_kv_num_blocks(self) -> torch.Tensor:
        return self._compress(self.full)[0]

    @property
    def full_kv_indices(self) -> torch.Tensor:
        return self._compress(self.full)[1]

    def density(self) -> float:
        """Fraction of tiles a block-sparse kernel visits."""
        return float(self.active.float().mean())

    def to_dense(self) -> torch.Tensor:
        """``(B, H, Lq, Lk)``: True inside every active tile (the entries a block-sparse kernel computes)."""
        b = self.block_size
        return self.active.repeat_interleave(b, -2).repeat_interleave(b, -1)[..., :self.q_len, :self.kv_len]


def block_summary(mask_mod: MaskMod, bsz: int, heads: int, lq: int, lk: int, *, block_size: int = 128,
                  device=None) -> BlockSummary:
    """Tile ``mask_mod``'s dense mask into ``block_size`` blocks (what ``create_block_mask`` computes)."""
    block_size = check_positive_int(block_size, "block_size")
    mask = dense_mask(mask_mod, bsz, heads, lq, lk, device=device)  # (B, H, Lq, Lk)
    pad_q, pad_k = (-lq) % block_size, (-lk) % block_size

    def tiles(pad_rows_value: bool) -> torch.Tensor:  # (B, H, nQB, b, nKB, b)
        m = torch.nn.functional.pad(mask, (0, pad_k), value=False)  # keys past Lk: never allowed
        m = torch.nn.functional.pad(m, (0, 0, 0, pad_q), value=pad_rows_value)  # rows past Lq
        return m.unflatten(-1, (-1, block_size)).unflatten(-3, (-1, block_size))

    active = tiles(False).any(-1).any(-2)
    full = tiles(True).all(-1).all(-2)
    return BlockSummary(active, full & active, block_size, lq, lk)
