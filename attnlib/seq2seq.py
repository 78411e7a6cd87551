r"""A GRU encoder-decoder with pluggable attention: none, dot, general, additive, local.

This follows the global and local attention of Luong et al. (seed *Effective
Approaches to Attention-based Neural Machine Translation*). With source tokens
:math:`x_0..x_{S-1}` and decoder inputs :math:`y_{-1} = \text{BOS}, y_0, \dots`:

.. math::

    \bar h_s = \operatorname{GRU}(E x_s, \bar h_{s-1}), \qquad
    h_t = \operatorname{GRU}(E y_{t-1}, h_{t-1}), \quad h_{-1} = \bar h_{S-1},

    a_{ts} = \operatorname{softmax}_s \operatorname{score}(h_t, \bar h_s), \qquad
    c_t = \sum_s a_{ts} \bar h_s, \qquad
    \tilde h_t = \tanh(W_c [c_t; h_t]), \qquad
    p(y_t) = \operatorname{softmax}(W_s \tilde h_t).

The score is one of :mod:`attnlib.scores` (``dot``, ``general``, ``additive``;
additive is Bahdanau et al.'s, *background, not a seed*, and Luong et al.'s
"concat"). Without attention, :math:`\tilde h_t = \tanh(W_c h_t)`: the decoder
only sees the source through the fixed-size vector :math:`\bar h_{S-1}`, the
"early summarization" that attention removes (seed *Bidirectional Attention
Flow for Machine Comprehension*).

**Local attention (local-p).** A predicted centre and a window of half-width
:math:`D` around it:

.. math::

    p_t = (S - 1)\,\sigma\!\big(v_p^\top \tanh(W_p h_t)\big), \qquad
    a_{ts} = \operatorname{softmax}_{s:\,|s - p_t| \le D} \operatorname{score}(h_t, \bar h_s)
             \cdot \exp\!\Big(-\frac{(s - p_t)^2}{2\sigma^2}\Big), \quad \sigma = D/2,

and :math:`a_{ts} = 0` outside the window. The softmax runs over the window
only; the Gaussian then favours positions near :math:`p_t` (so a row sums to at
most 1), and it is what makes :math:`p_t` differentiable.

Differences from the paper, on purpose: GRU cells (the paper stacks LSTMs), no
"input feeding" (so a teacher-forced pass computes all steps at once),
positions start at 0 (hence :math:`S - 1` where the paper has :math:`S`), and the
local score is ``general``. ``S`` is each sequence's own length.

Shapes: ``src`` ``(B, S)`` int64, ``lengths`` ``(B,)``, decoder inputs ``(B, T)``,
logits ``(B, T, V)``, attention weights ``(B, T, S)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from .core import masked_softmax
from .data.sequences import BOS, PAD, SequenceBatch
from .scores import AdditiveScore, DotScore, GeneralScore
from .validation import check_mask, check_positive_int, check_tensor

__all__ = [
    "ATTENTIONS",
    "attend",
    "local_window",
    "local_attention_weights",
    "Seq2SeqOutput",
    "Seq2SeqGRU",
    "decoder_inputs",
    "check_token_batch",
    "copy_accuracy",
    "alignment_scores",
    "fit",
]

ATTENTIONS = ("none", "dot", "general", "additive", "local")


def attend(scores: torch.Tensor, values: torch.Tensor, mask: Optional[torch.Tensor] = None):
    """One attention step: weights ``a = softmax(scores)`` over the allowed keys, context ``c = a @ values``.

    Args:
        scores: ``(..., T, S)`` scores.
        values: ``(..., S, d)`` encoder states.
        mask: optional boolean, broadcastable to ``(..., T, S)``, True = attend.

    Returns:
        ``(context, weights)`` of shapes ``(..., T, d)`` and ``(..., T, S)``; a fully
        masked row gives zero weights and a zero context.
    """
    check_tensor(scores, "scores", min_dim=2)
    check_tensor(values, "values", min_dim=2)
    if values.shape[-2] != scores.shape[-1]:
        raise ValueError(
            f"values must have one row per key: scores has shape {tuple(scores.shape)} "
            f"(S={scores.shape[-1]}), values has shape {tuple(values.shape)}"
        )
    if mask is not None:
        check_mask(mask, scores.shape[-2], scores.shape[-1])
    weights = masked_softmax(scores, mask)  # (..., T, S)
    return weights @ values, weights  # (..., T, d), (..., T, S)


def _check_half_width(half_width) -> float:
    if isinstance(half_width, bool) or not isinstance(half_width, (int, float)):
        raise TypeError(f"half_width must be a number, got {type(half_width).__name__}")
    if not math.isfinite(half_width) or half_width <= 0:
        raise ValueError(f"half_width must be a finite positive number, got {half_width}")
    return float(half_width)


def local_window(centers: torch.Tensor, src_len: int, half_width: float) -> torch.Tensor:
    """Window of local attention: ``window[..., s] = |s - p| <= D``, shape ``(..., S)`` for centres ``p`` of shape ``(...)``."""
    check_tensor(centers, "centers", min_dim=0)
    check_positive_int(src_len, "src_len")
    D = _check_half_width(half_width)
    s = torch.arange(src_len, device=centers.device, dtype=centers.dtype)  # (S,)
    return (s - centers[..., None]).abs() <= D  # (..., S)


def local_attention_weights(scores: torch.Tensor, centers: torch.Tensor, half_width: float,
                            mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""Luong et al.'s local-p weights: softmax over the window :math:`|s - p_t| \le D`, times a Gaussian.

    .. math:: a_{ts} = \operatorname{softmax}_{s \in \text{window}}(\text{scores}_{ts})
              \exp(-(s - p_t)^2 / (2\sigma^2)), \quad \sigma = D / 2.

    Args:
        scores: ``(..., T, S)`` scores.
        centers: ``(..., T)`` real-valued window centres :math:`p_t` (positions from 0).
        half_width: :math:`D > 0`.
        mask: optional boolean, broadcastable to ``(..., T, S)`` (e.g. source padding), True = attend.

    Returns:
        ``(..., T, S)`` weights, exactly 0 outside the window and at masked positions.
    """
    check_tensor(scores, "scores", min_dim=2)
    check_tensor(centers, "centers", min_dim=1)
    if centers.shape != scores.shape[:-1]:
        raise ValueError(
            f"centers must have shape scores.shape[:-1] = {tuple(scores.shape[:-1])}, got {tuple(centers.shape)}"
        )
    D = _check_half_width(half_width)
    S = scores.shape[-1]
    window = local_window(centers, S, D)  # (..., T, S)
    if mask is not None:
        check_mask(mask, scores.shape[-2], S)
        window = window & mask
    align = masked_softmax(scores, window)  # (..., T, S), 0 outside the window
    s = torch.arange(S, device=scores.device, dtype=scores.dtype)
    sigma = D / 2
    gauss = torch.exp(-((s - centers[..., None]) ** 2) / (2 * sigma**2))  # (..., T, S)
    return align * gauss


def check_token_batch(src, lengths, name: str = "src") -> None:
    """``src`` is an int64 ``(B, S)`` tensor and ``lengths`` an int64 ``(B,)`` tensor with values in ``[1, S]``."""
    if not isinstance(src, torch.Tensor) or src.dtype != torch.int64 or src.dim() != 2:
        raise TypeError(f"{name} must be an int64 tensor of shape (B, S), got {getattr(src, 'dtype', type(src))} "
                        f"with shape {tuple(getattr(src, 'shape', ()))}")
    if not isinstance(lengths, torch.Tensor) or lengths.dtype != torch.int64 or lengths.shape != src.shape[:1]:
        raise TypeError(f"lengths must be an int64 tensor of shape (B,) = ({src.shape[0]},), got "
                        f"{getattr(lengths, 'dtype', type(lengths))} with shape {tuple(getattr(lengths, 'shape', ()))}")
    if (lengths < 1).any() or (lengths > src.shape[1]).any():
        raise ValueError(f"lengths must lie in [1, S={src.shape[1]}], got {lengths.tolist()}")


def decoder_inputs(tgt: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing inputs ``[BOS, tgt_0, ..., tgt_{T-2}]`` of shape ``(B, T)``."""
    bos = torch.full_like(tgt[:, :1], BOS)
    return torch.cat([bos, tgt[:, :-1]], dim=1)


@dataclass
class Seq2SeqOutput:
    logits: torch.Tensor  # (B, T, V)
    weights: Optional[torch.Tensor]  # (B, T, S), None without attention
    centers: Optional[torch.Tensor]  # (B, T) local-attention centres p_t, else None


class Seq2SeqGRU(nn.Module):
    """GRU encoder-decoder; ``attention`` is one of :data:`ATTENTIONS` (see the module docstring).

    Args:
        vocab_size: number of token ids (input and output vocabulary).
        d_model: embedding and hidden size.
        attention: ``"none"``, ``"dot"``, ``"general"``, ``"additive"`` or ``"local"``.
        window: half-width :math:`D` of local attention.
        attend_fn: replaces :func:`attend` (the labs plug in the student's version).
        local_fn: replaces :func:`local_attention_weights`.
    """

    def __init__(self, vocab_size: int, d_model: int = 32, attention: str = "dot", *, window: float = 2.0,
                 attend_fn: Optional[Callable] = None, local_fn: Optional[Callable] = None):
        super().__init__()
        check_positive_int(vocab_size, "vocab_size")
        check_positive_int(d_model, "d_model")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention, self.window = attention, _check_half_width(window)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.encoder = nn.GRU(d_model, d_model, batch_first=True)
        self.decoder = nn.GRU(d_model, d_model, batch_first=True)
        if attention == "dot":
            self.score = DotScore()
        elif attention in ("general", "local"):
            self.score = GeneralScore(d_model, d_model)
        elif attention == "additive":
            self.score = AdditiveScore(d_model, d_model, d_model)
        if attention == "local":
            self.W_p = nn.Linear(d_model, d_model, bias=False)
            self.v_p = nn.Linear(d_model, 1, bias=False)
        self.W_c = nn.Linear(d_model if attention == "none" else 2 * d_model, d_model)
        self.W_s = nn.Linear(d_model, vocab_size)
        self.attend_fn = attend_fn or attend
        self.local_fn = local_fn or local_attention_weights

    def encode(self, src: torch.Tensor, lengths: torch.Tensor):
        """Encoder states ``(B, S, d)`` and the last real state ``(B, d)`` of each sequence."""
        check_token_batch(src, lengths)
        enc, _ = self.encoder(self.embed(src))  # (B, S, d); padding comes after, so real states are exact
        last = enc[torch.arange(src.shape[0], device=src.device), lengths - 1]  # (B, d)
        return enc, last

    def _attend(self, dec, enc, lengths):
        """Context ``(B, T, d)``, weights ``(B, T, S)`` and centres ``(B, T)`` for decoder states ``dec``."""
        src_mask = (torch.arange(enc.shape[1], device=enc.device) < lengths[:, None])[:, None, :]  # (B, 1, S)
        scores = self.score(dec, enc)  # (B, T, S)
        if self.attention == "local":
            gate = torch.sigmoid(self.v_p(torch.tanh(self.W_p(dec)))).squeeze(-1)  # (B, T)
            centers = (lengths - 1)[:, None].to(dec.dtype) * gate  # (B, T), p_t in [0, S-1]
            weights = self.local_fn(scores, centers, self.window, src_mask)
            return weights @ enc, weights, centers
        context, weights = self.attend_fn(scores, enc, src_mask)
        return context, weights, None

    def _readout(self, dec, enc, lengths):
        if self.attention == "none":
            return self.W_s(torch.tanh(self.W_c(dec))), None, None
        context, weights, centers = self._attend(dec, enc, lengths)
        h_tilde = torch.tanh(self.W_c(torch.cat([context, dec], dim=-1)))  # (B, T, d)
        return self.W_s(h_tilde), weights, centers

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor) -> Seq2SeqOutput:
        """Teacher-forced pass: ``tgt_in`` ``(B, T)`` (see :func:`decoder_inputs`) gives logits ``(B, T, V)``."""
        enc, last = self.encode(src, lengths)
        check_token_batch(tgt_in, torch.ones_like(lengths), name="tgt_in")
        dec, _ = self.decoder(self.embed(tgt_in), last[None])  # (B, T, d)
        return Seq2SeqOutput(*self._readout(dec, enc, lengths))

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, lengths: torch.Tensor, steps: int):
        """Feed back the argmax token for ``steps`` steps: tokens ``(B, steps)``, weights ``(B, steps, S)`` or None."""
        check_positive_int(steps, "steps")
        enc, h = self.encode(src, lengths)
        h = h[None]  # (1, B, d)
        y = torch.full((src.shape[0], 1), BOS, dtype=torch.int64, device=src.device)
        tokens, weights = [], []
        for _ in range(steps):
            dec, h = self.decoder(self.embed(y), h)  # (B, 1, d)
            logits, w, _ = self._readout(dec, enc, lengths)
            y = logits.argmax(-1)  # (B, 1)
            tokens.append(y)
            weights.append(w)
        return torch.cat(tokens, 1), (None if weights[0] is None else torch.cat(weights, 1))

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Mean cross-entropy over the real target tokens."""
        out = self(batch.src, batch.lengths, decoder_inputs(batch.tgt))
        mask = batch.mask
        return nn.functional.cross_entropy(out.logits[mask], batch.tgt[mask])

    def predict(self, batch: SequenceBatch):
        """Greedy output tokens ``(B, L)`` (``PAD`` past each length) and attention weights."""
        tokens, weights = self.greedy_decode(batch.src, batch.lengths, batch.src.shape[1])
        return tokens.masked_fill(~batch.mask, PAD), weights


def copy_accuracy(pred: torch.Tensor, batch: SequenceBatch):
    """Per sequence: the fraction of correct target tokens ``(B,)`` and exact match ``(B,)`` (bool)."""
    correct = (pred == batch.tgt) & batch.mask  # (B, L)
    token_acc = correct.sum(1) / batch.lengths
    return token_acc, correct.sum(1) == batch.lengths


def alignment_scores(weights: torch.Tensor, batch: SequenceBatch):
    """Score attention ``(B, T, S)`` against the gold alignment, per sequence ``(B,)``.

    Returns ``(argmax_acc, gold_mass)``: the fraction of target steps whose most
    attended source position is the gold one, and the mean weight put on it.
    """
    check_tensor(weights, "weights", min_dim=3)
    L = batch.src.shape[1]
    if weights.shape != (batch.src.shape[0], L, L):
        raise ValueError(f"weights must have shape (B, L, L) = {(batch.src.shape[0], L, L)}, got {tuple(weights.shape)}")
    mask = batch.mask  # (B, L) over target steps
    gold = batch.alignment.clamp(min=0)  # (B, L)
    hit = (weights.argmax(-1) == gold) & mask
    mass = weights.gather(-1, gold[..., None]).squeeze(-1) * mask  # (B, L)
    return hit.sum(1) / batch.lengths, mass.sum(1) / batch.lengths


def fit(model: nn.Module, sample: Callable[[torch.Generator], SequenceBatch], *, steps: int, lr: float = 1e-2,
        seed: int = 0, clip: float = 1.0, progress: bool = False) -> list[float]:
    """Train ``model`` (which has ``.loss(batch)``) with Adam for ``steps`` batches ``sample(generator)``.

    The batches come from one ``torch.Generator`` seeded with ``seed``, so a run is
    reproducible. Returns the list of training losses.
    """
    check_positive_int(steps, "steps")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=type(model).__name__, leave=False)
    model.train()
    for _ in it:
        loss = model.loss(sample(g))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses
