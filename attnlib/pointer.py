r"""Pointer network: attention used as a pointer to an input position (seed *Pointer Networks*).

A sequence-to-sequence model whose output at each step is not a word from a
fixed vocabulary but a **position of the input**, so the number of classes
grows with the input length. With encoder states :math:`e_1..e_n` and decoder
state :math:`d_i` (Vinyals et al.'s notation):

.. math::

    u_{ij} = v^\top \tanh(W_1 e_j + W_2 d_i), \qquad
    p(C_i = j \mid C_{<i}, \mathcal P) = \operatorname{softmax}_j(u_{ij}),

the additive score of :class:`attnlib.scores.AdditiveScore`. Where seq2seq
attention blends the :math:`e_j` into a context vector, the pointer network
*outputs* the distribution itself. The input token at the chosen position is
the next decoder input.

A property worth checking: because :math:`u_{ij}` depends on position
:math:`j` only through :math:`e_j`, permuting the encoder states permutes the
output distribution the same way (permutation equivariance).

Decoding forbids positions already chosen (``no-repeat``), so a decoded
sequence of length ``n`` is a permutation of the input. Training applies the
same mask to the teacher-forced targets. Differences from the paper, on purpose:
GRU cells instead of LSTMs (to compare with :class:`attnlib.seq2seq.Seq2SeqGRU`
cell for cell), token inputs through an embedding, and greedy decoding instead of
beam search.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .core import masked_softmax
from .data.sequences import BOS, PAD, SequenceBatch
from .scores import AdditiveScore
from .seq2seq import check_token_batch, decoder_inputs
from .validation import check_mask, check_positive_int, check_tensor

__all__ = ["pointer_distribution", "pointer_step", "no_repeat_mask", "PointerNet"]


def pointer_distribution(query: torch.Tensor, enc: torch.Tensor, score: Callable,
                         mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``p[..., i, j] = softmax_j score(query_i, enc_j)`` over allowed positions ``j``.

    Args:
        query: ``(..., T, d)`` decoder states.
        enc: ``(..., n, d)`` encoder states.
        score: maps ``(query, enc)`` to ``(..., T, n)`` scores (e.g. an :class:`~attnlib.scores.AdditiveScore`).
        mask: optional boolean, broadcastable to ``(..., T, n)``, True = may point there.

    Returns:
        ``(..., T, n)``: each row sums to 1 over the allowed positions (0 if none is allowed).
    """
    check_tensor(query, "query", min_dim=2)
    check_tensor(enc, "enc", min_dim=2)
    scores = score(query, enc)  # (..., T, n)
    if mask is not None:
        check_mask(mask, query.shape[-2], enc.shape[-2])
    return masked_softmax(scores, mask)


def pointer_step(query: torch.Tensor, enc: torch.Tensor, score: Callable, valid: torch.Tensor,
                 chosen: torch.Tensor):
    """One greedy decoding step with the no-repeat rule.

    Args:
        query: ``(B, d)`` decoder state.
        enc: ``(B, n, d)`` encoder states.
        score: as in :func:`pointer_distribution`.
        valid: ``(B, n)`` boolean, True at real (non-padding) input positions.
        chosen: ``(B, n)`` boolean, True at positions already pointed to.

    Returns:
        ``(probs, index)``: ``(B, n)`` distribution over ``valid & ~chosen``, and its argmax ``(B,)``.
    """
    check_tensor(query, "query", min_dim=2)
    check_tensor(enc, "enc", min_dim=3)
    for name, m in (("valid", valid), ("chosen", chosen)):
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != enc.shape[:2]:
            raise TypeError(f"{name} must be a boolean tensor of shape (B, n) = {tuple(enc.shape[:2])}, got "
                            f"{getattr(m, 'dtype', type(m))} with shape {tuple(getattr(m, 'shape', ()))}")
    allowed = (valid & ~chosen)[:, None, :]  # (B, 1, n)
    probs = pointer_distribution(query[:, None, :], enc, score, allowed).squeeze(1)  # (B, n)
    return probs, probs.argmax(-1)


def no_repeat_mask(targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``allowed[b, i, j]``: ``j`` is a real position not among ``targets[b, :i]``; shape ``(B, T, n)``.

    ``targets`` ``(B, T)`` holds positions, negative at padding (ignored).
    """
    B, T = targets.shape
    n = valid.shape[1]
    onehot = torch.zeros(B, T, n, dtype=torch.bool, device=targets.device)
    real = targets >= 0
    b, i = real.nonzero(as_tuple=True)
    onehot[b, i, targets[b, i]] = True
    before = (onehot.cumsum(1) - onehot.long()) > 0  # chosen at some step < i
    return valid[:, None, :] & ~before


class PointerNet(nn.Module):
    """GRU pointer network over token inputs; outputs point to input positions.

    Args:
        vocab_size: number of token ids.
        d_model: embedding, hidden and score size.
        step_fn: replaces :func:`pointer_step` when decoding (the labs plug in the student's version).
    """

    def __init__(self, vocab_size: int, d_model: int = 32, *, step_fn: Optional[Callable] = None):
        super().__init__()
        check_positive_int(vocab_size, "vocab_size")
        check_positive_int(d_model, "d_model")
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.encoder = nn.GRU(d_model, d_model, batch_first=True)
        self.decoder = nn.GRU(d_model, d_model, batch_first=True)
        self.score = AdditiveScore(d_model, d_model, d_model)  # u_ij = v^T tanh(W_2 d_i + W_1 e_j)
        self.step_fn = step_fn or pointer_step

    def encode(self, src: torch.Tensor, lengths: torch.Tensor):
        check_token_batch(src, lengths)
        enc, _ = self.encoder(self.embed(src))  # (B, n, d)
        return enc, enc[torch.arange(src.shape[0], device=src.device), lengths - 1]  # (B, n, d), (B, d)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor,
                allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Teacher-forced log-probabilities ``(B, T, n)`` over input positions.

        ``allowed`` ``(B, T, n)`` restricts each step (default: the real positions).
        A step with no allowed position falls back to all real positions, so the
        result stays finite.
        """
        enc, last = self.encode(src, lengths)
        check_token_batch(tgt_in, torch.ones_like(lengths), name="tgt_in")
        dec, _ = self.decoder(self.embed(tgt_in), last[None])  # (B, T, d)
        valid = (torch.arange(src.shape[1], device=src.device) < lengths[:, None])[:, None, :]  # (B, 1, n)
        allowed = valid if allowed is None else (allowed & valid)
        allowed = torch.where(allowed.any(-1, keepdim=True), allowed, valid)  # (B, T, n)
        scores = self.score(dec, enc).masked_fill(~allowed, float("-inf"))  # (B, T, n)
        return scores.log_softmax(-1)

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Mean negative log-likelihood of the gold pointers ``batch.alignment`` under the no-repeat rule."""
        allowed = no_repeat_mask(batch.alignment, batch.mask)
        logp = self(batch.src, batch.lengths, decoder_inputs(batch.tgt), allowed)  # (B, T, n)
        mask = batch.mask
        return -logp[mask].gather(-1, batch.alignment[mask][:, None]).mean()

    @torch.no_grad()
    def decode(self, src: torch.Tensor, lengths: torch.Tensor, steps: int):
        """Greedy no-repeat decoding: pointers ``(B, steps)`` and distributions ``(B, steps, n)``."""
        check_positive_int(steps, "steps")
        enc, h = self.encode(src, lengths)
        h = h[None]  # (1, B, d)
        B, n = src.shape
        valid = torch.arange(n, device=src.device)[None, :] < lengths[:, None]  # (B, n)
        chosen = torch.zeros_like(valid)
        y = torch.full((B, 1), BOS, dtype=torch.int64, device=src.device)
        pointers, dists = [], []
        for _ in range(steps):
            dec, h = self.decoder(self.embed(y), h)  # (B, 1, d)
            probs, index = self.step_fn(dec[:, 0], enc, self.score, valid, chosen)
            chosen = chosen | nn.functional.one_hot(index, n).bool()
            y = src.gather(1, index[:, None])  # the pointed-to token is the next input
            pointers.append(index)
            dists.append(probs)
        return torch.stack(pointers, 1), torch.stack(dists, 1)

    def predict(self, batch: SequenceBatch):
        """Greedy output tokens ``(B, L)`` (``PAD`` past each length) and pointer distributions ``(B, L, L)``."""
        pointers, dists = self.decode(batch.src, batch.lengths, batch.src.shape[1])
        return batch.src.gather(1, pointers).masked_fill(~batch.mask, PAD), dists
