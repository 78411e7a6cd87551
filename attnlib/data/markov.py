r"""A seeded synthetic language-model corpus: a Markov chain with in-context triggers.

Every sequence starts with ``BOS = 0``; content tokens are ``1 .. vocab_size - 1``. The
next token follows one fixed Markov chain (a row-stochastic matrix drawn once from
``chain_seed``, each row a softmax of Gaussian logits with standard deviation ``sharpness``,
so a few successors are likely), except after a **trigger**: each sequence gives each of the ``n_triggers``
trigger tokens its own random successor, which follows the trigger every time it occurs
in that sequence. The first occurrence of a trigger cannot be predicted; later ones can,
by looking back at the token after its previous occurrence (an induction head). This is
the global-bigram-plus-in-context setup of Bietti et al., *Birth of a Transformer: A Memory
Viewpoint* (background, not a seed), in a small seeded form.

Shapes: ``tokens`` ``(N, L)`` int64, ``tokens[:, 0] == BOS``; :func:`lm_batch` turns them into
``(x, y) = (tokens[:, :-1], tokens[:, 1:])``, the next-token targets of
:func:`attnlib.models.train_model`.
"""

from __future__ import annotations

import torch

from ..validation import check_positive_int
from ._seed import Seed, as_generator as _generator

__all__ = ["BOS", "markov_chain", "markov_corpus", "lm_batch"]

BOS = 0


def markov_chain(vocab_size: int, *, sharpness: float = 3.0, chain_seed: int = 0) -> torch.Tensor:
    """The fixed transition matrix ``(V, V)`` float64; row ``i`` is ``P(next | i)``, zero on ``BOS``.

    Row ``BOS`` is the distribution of the first content token. Each row is the softmax of Gaussian
    logits with standard deviation ``sharpness`` over the content tokens (larger is more predictable).
    """
    v = check_positive_int(vocab_size, "vocab_size")
    if v < 3:
        raise ValueError(f"vocab_size must be >= 3 (BOS and two content tokens), got {v}")
    if isinstance(sharpness, bool) or not isinstance(sharpness, (int, float)) or not sharpness >= 0:
        raise ValueError(f"sharpness must be a number >= 0, got {sharpness!r}")
    logits = torch.randn(v, v - 1, generator=_generator(chain_seed), dtype=torch.float64) * sharpness
    p = torch.zeros(v, v, dtype=torch.float64)
    p[:, 1:] = torch.softmax(logits, dim=-1)  # (V, V-1) over the content tokens
    return p


def markov_corpus(n: int, length: int, *, vocab_size: int = 32, n_triggers: int = 4, sharpness: float = 3.0,
                  chain_seed: int = 0, seed: Seed = 0) -> torch.Tensor:
    """``n`` sequences of ``length`` tokens (``BOS`` first), int64 ``(n, length)``.

    Triggers are tokens ``1 .. n_triggers`` (0 triggers: a plain Markov chain). Each sequence draws
    each trigger's successor uniformly from the other content tokens. The chain comes from
    ``chain_seed``, the sequences from ``seed``, so corpora of one chain can differ in size and sample.
    """
    n, length = check_positive_int(n, "n"), check_positive_int(length, "length")
    if isinstance(n_triggers, bool) or not isinstance(n_triggers, int) or not 0 <= n_triggers < vocab_size - 1:
        raise ValueError(f"n_triggers must be an int in [0, vocab_size - 1), got {n_triggers!r}")
    chain = markov_chain(vocab_size, sharpness=sharpness, chain_seed=chain_seed)
    g = _generator(seed)
    tokens = torch.zeros(n, length, dtype=torch.int64)  # column 0 stays BOS
    # successor[b, t] for trigger t in 1..n_triggers: a content token other than t
    successor = torch.randint(1, vocab_size - 1, (n, n_triggers + 1), generator=g)
    successor = successor + (successor >= torch.arange(n_triggers + 1))  # skip the trigger itself
    for t in range(1, length):
        prev = tokens[:, t - 1]
        nxt = torch.multinomial(chain[prev], 1, generator=g).squeeze(1)  # (n,)
        is_trigger = (prev >= 1) & (prev <= n_triggers)
        tokens[:, t] = torch.where(is_trigger, successor.gather(1, prev.clamp(max=n_triggers)[:, None])[:, 0], nxt)
    return tokens


def lm_batch(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token pairs ``(x, y) = (tokens[:, :-1], tokens[:, 1:])`` of a corpus ``(N, L)``."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
        raise ValueError(f"tokens must be an integer tensor (N, L), got {getattr(tokens, 'shape', type(tokens))}")
    if tokens.shape[1] < 2:
        raise ValueError(f"tokens need at least 2 positions, got shape {tuple(tokens.shape)}")
    return tokens[:, :-1], tokens[:, 1:]
