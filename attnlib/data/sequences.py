r"""Seeded sequence-to-sequence tasks with a known alignment: reversal and sorting.

Both tasks map a source sequence of tokens to a target of the same length in
which every target token is a copy of one source token. The source position
it copies is the **gold alignment** ``a[t]``:

* reversal: ``tgt[t] = src[n - 1 - t]``, so ``a[t] = n - 1 - t`` (the anti-diagonal);
* sorting: ``tgt`` is ``src`` in ascending order and ``a`` is the (stable) argsort,
  ``tgt[t] = src[a[t]]``. This is the target of a pointer network (seed
  *Pointer Networks*, whose abstract names sorting variable-sized sequences).

Token ids: ``PAD = 0`` fills positions past a sequence's length, ``BOS = 1``
starts the decoder input, content tokens are ``N_SPECIAL .. vocab_size - 1``.

Shapes (``B`` sequences, ``L = max_len``; every tensor is padded to ``L``):

=============  ===========  ==============================================
``src``        ``(B, L)``   int64 tokens, ``PAD`` at ``t >= lengths[b]``
``tgt``        ``(B, L)``   int64 tokens, ``PAD`` at ``t >= lengths[b]``
``alignment``  ``(B, L)``   int64 source position copied by ``tgt[:, t]``, ``-1`` at padding
``lengths``    ``(B,)``     int64 in ``[min_len, max_len]``
=============  ===========  ==============================================

The same ``seed`` (an int, or a ``torch.Generator`` in a given state) always
gives the same batch, on every platform: all randomness comes from one CPU
generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..validation import check_positive_int
from ._seed import Seed, as_generator as _generator

__all__ = ["PAD", "BOS", "N_SPECIAL", "SequenceBatch", "reversal_task", "sorting_task"]

PAD, BOS = 0, 1
N_SPECIAL = 2


@dataclass(frozen=True)
class SequenceBatch:
    """A padded batch of a copy-like task; see the module docstring for the shapes."""

    src: torch.Tensor  # (B, L) int64
    tgt: torch.Tensor  # (B, L) int64
    alignment: torch.Tensor  # (B, L) int64, -1 at padding
    lengths: torch.Tensor  # (B,) int64

    @property
    def mask(self) -> torch.Tensor:
        """``(B, L)`` boolean, True at real (non-padding) positions."""
        return torch.arange(self.src.shape[1], device=self.src.device)[None, :] < self.lengths[:, None]

    def alignment_matrix(self) -> torch.Tensor:
        """Gold alignment as a ``(B, L, L)`` 0/1 float matrix: ``[b, t, s] = 1`` iff ``tgt[b, t]`` copies ``src[b, s]``."""
        L = self.src.shape[1]
        gold = torch.zeros(self.src.shape[0], L, L)
        valid = self.alignment >= 0
        b, t = valid.nonzero(as_tuple=True)
        gold[b, t, self.alignment[b, t]] = 1.0
        return gold


def _check_sizes(n: int, min_len: int, max_len: int, vocab_size: int) -> None:
    check_positive_int(n, "n")
    check_positive_int(min_len, "min_len")
    check_positive_int(max_len, "max_len")
    check_positive_int(vocab_size, "vocab_size")
    if min_len > max_len:
        raise ValueError(f"min_len must be <= max_len, got min_len={min_len}, max_len={max_len}")
    if vocab_size <= N_SPECIAL:
        raise ValueError(
            f"vocab_size must exceed the {N_SPECIAL} special tokens (PAD, BOS), got vocab_size={vocab_size}"
        )


def _random_sources(n, min_len, max_len, vocab_size, g, distinct):
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)  # (B,)
    n_content = vocab_size - N_SPECIAL
    if distinct:
        # Sample without replacement: the first max_len entries of a random permutation per row.
        keys = torch.rand(n, n_content, generator=g)  # (B, V')
        src = keys.argsort(dim=1)[:, :max_len] + N_SPECIAL  # (B, L)
    else:
        src = torch.randint(N_SPECIAL, vocab_size, (n, max_len), generator=g)  # (B, L)
    valid = torch.arange(max_len)[None, :] < lengths[:, None]  # (B, L)
    return src.masked_fill(~valid, PAD), lengths, valid


def reversal_task(n: int, *, min_len: int, max_len: int, vocab_size: int, seed: Seed = 0) -> SequenceBatch:
    """``n`` random sequences and their reversals; the gold alignment is the anti-diagonal.

    Lengths are uniform in ``[min_len, max_len]``, tokens uniform over the
    ``vocab_size - N_SPECIAL`` content tokens (repeats allowed).
    """
    _check_sizes(n, min_len, max_len, vocab_size)
    g = _generator(seed)
    src, lengths, valid = _random_sources(n, min_len, max_len, vocab_size, g, distinct=False)
    t = torch.arange(max_len)[None, :]  # (1, L)
    alignment = torch.where(valid, lengths[:, None] - 1 - t, torch.full_like(src, -1))  # (B, L)
    tgt = torch.where(valid, src.gather(1, alignment.clamp(min=0)), torch.full_like(src, PAD))
    return SequenceBatch(src, tgt, alignment, lengths)


def sorting_task(n: int, *, min_len: int, max_len: int, vocab_size: int, seed: Seed = 0,
                 distinct: bool = True) -> SequenceBatch:
    """``n`` random sequences and their ascending sort; ``alignment`` is the stable argsort (pointer targets).

    With ``distinct=True`` (default) the tokens of a sequence are all different,
    so the pointer target is unique; this needs ``vocab_size - N_SPECIAL >= max_len``.
    """
    _check_sizes(n, min_len, max_len, vocab_size)
    if distinct and vocab_size - N_SPECIAL < max_len:
        raise ValueError(
            f"distinct=True needs at least max_len={max_len} content tokens, but vocab_size={vocab_size} "
            f"gives {vocab_size - N_SPECIAL}"
        )
    g = _generator(seed)
    src, lengths, valid = _random_sources(n, min_len, max_len, vocab_size, g, distinct=distinct)
    big = torch.iinfo(torch.int64).max
    order = src.masked_fill(~valid, big).argsort(dim=1, stable=True)  # (B, L), padding sorts last
    alignment = torch.where(valid, order, torch.full_like(src, -1))
    tgt = torch.where(valid, src.gather(1, order), torch.full_like(src, PAD))
    return SequenceBatch(src, tgt, alignment, lengths)
