r"""Seeded strings of counting languages, framed as next-token prediction.

The seed *Evaluating Transformer's Ability to Learn Mildly Context-Sensitive
Languages* reports that Transformers generalize to unseen in-distribution strings
but extrapolate to longer strings worse than LSTMs. We generate two small
languages of that kind (our choice; the paper's exact language set and training
protocol are in its body):

* ``"anbncn"``: :math:`a^n b^n c^n` (three counts that must agree);
* ``"anbmcndm"``: :math:`a^n b^m c^n d^m` (two *crossing* dependencies, the
  pattern that makes a language mildly context-sensitive rather than context-free).

Framing (the usual next-character prediction setup; background, not a seed): a row is
``BOS w EOS``; ``inputs`` is it without the last token and ``targets[t]`` the next
token, scored only where the next token is *determined* by the prefix: after the
first ``b`` in ``anbncn`` (every ``b``, ``c`` input), and after the first ``c`` in
``anbmcndm`` (every ``c``, ``d`` input). A model that gets every scored target of a
row right has recognised it.

Token ids: ``PAD = 0``, ``BOS = 1``, ``EOS = 2``, ``a, b, c, d = 3, 4, 5, 6``.
Shapes: ``inputs``, ``targets`` ``(B, L)`` int64 padded with ``PAD``/``-100`` to the
longest row, ``lengths`` ``(B,)`` the number of real input tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..validation import check_positive_int
from ._seed import Seed, as_generator as _generator
from .recall import IGNORE

__all__ = ["PAD", "BOS", "EOS", "LANGUAGES", "LanguageBatch", "mcsl", "mcsl_vocab_size"]

PAD, BOS, EOS = 0, 1, 2
A = 3
LANGUAGES = ("anbncn", "anbmcndm")


def mcsl_vocab_size() -> int:
    """Number of token ids: PAD, BOS, EOS and a-d."""
    return 7


@dataclass(frozen=True)
class LanguageBatch:
    """``inputs``/``targets`` ``(B, L)`` (``-100`` = not scored), ``lengths`` ``(B,)``; ``x, y = batch``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor
    vocab_size: int = 7

    def __iter__(self):
        return iter((self.inputs, self.targets))


def mcsl(n: int, n_min: int, n_max: int, *, language: str = "anbncn", seed: Seed = 0) -> LanguageBatch:
    """``n`` strings of ``language`` with every count drawn uniformly from ``[n_min, n_max]``.

    ``anbncn`` with count ``k`` has ``3k + 1`` input tokens (``BOS`` and ``3k`` letters);
    ``anbmcndm`` with counts ``k, m`` has ``2k + 2m + 1``.
    """
    check_positive_int(n, "n")
    check_positive_int(n_min, "n_min")
    check_positive_int(n_max, "n_max")
    if n_min > n_max:
        raise ValueError(f"n_min={n_min} must be <= n_max={n_max}")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    g = _generator(seed)
    counts = torch.randint(n_min, n_max + 1, (n, 2), generator=g)
    rows = []
    for k, m in counts.tolist():
        if language == "anbncn":
            blocks, first_scored = [(0, k), (1, k), (2, k)], A + 1  # scored after inputs b, c
        else:
            blocks, first_scored = [(0, k), (1, m), (2, k), (3, m)], A + 2  # after inputs c, d
        word = [A + letter for letter, count in blocks for _ in range(count)]
        rows.append(([BOS] + word + [EOS], first_scored))
    width = max(len(r) for r, _ in rows) - 1
    inputs = torch.full((n, width), PAD, dtype=torch.long)
    targets = torch.full((n, width), IGNORE, dtype=torch.long)
    lengths = torch.empty(n, dtype=torch.long)
    for b, (row, first_scored) in enumerate(rows):
        x, y = torch.tensor(row[:-1]), torch.tensor(row[1:])
        inputs[b, : len(x)] = x
        targets[b, : len(x)] = torch.where(x >= first_scored, y, torch.full_like(y, IGNORE))
        lengths[b] = len(x)
    return LanguageBatch(inputs, targets, lengths)
