r"""Passkey retrieval: find one marked token hidden at a chosen depth in a long filler context.

One row of length ``L``::

    f f f f KEY v f f f ... f f QUERY | v

``f`` are random filler tokens, ``KEY v`` (the "pass key is v") sits at position
``p`` and ``p + 1``, and the last input token ``QUERY`` asks for ``v``: the only
scored target is at the last position. The *depth* is the key's relative position,
``p / (L - 3)`` in ``[0, 1]`` (0: at the start, 1: right before the query), so the
distance the answer must travel is ``L - 2 - p`` tokens.

Passkey retrieval is the long-context probe named in the seed *PowerAttention:
Exponentially Scaling of Receptive Fields for Effective Sparse Attention* (its
abstract reports gains "on tasks demanding long-range dependencies like Passkey
Retrieval"); this row format is our small version, not a paper's exact one.

Token ids: filler ``0 .. n_filler - 1``, ``KEY = n_filler``, ``QUERY = n_filler + 1``,
values ``n_filler + 2 .. n_filler + 1 + n_values``; ``vocab_size = n_filler + 2 + n_values``.
Determinism: the same ``seed`` (an int, or a ``torch.Generator`` in a given state)
gives the same batch.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional

import torch

from ..validation import check_positive_int
from ._seed import Seed, as_generator as _generator

__all__ = ["PasskeyBatch", "passkey_task", "passkey_vocab"]

IGNORE = -100


@dataclass(frozen=True)
class PasskeyBatch:
    """``inputs``/``targets`` ``(B, L)`` int64 (``-100`` = not scored), the key's position ``(B,)``, vocab size."""

    inputs: torch.Tensor
    targets: torch.Tensor
    position: torch.Tensor
    vocab_size: int

    def __iter__(self):  # x, y = batch
        return iter((self.inputs, self.targets))


def passkey_vocab(n_filler: int = 16, n_values: int = 10) -> dict:
    """The token ids of :func:`passkey_task`: ``{"KEY", "QUERY", "values": range, "vocab_size"}``."""
    check_positive_int(n_filler, "n_filler")
    check_positive_int(n_values, "n_values")
    return {"KEY": n_filler, "QUERY": n_filler + 1, "values": range(n_filler + 2, n_filler + 2 + n_values),
            "vocab_size": n_filler + 2 + n_values}


def passkey_task(n: int, length: int, *, depth: Optional[float] = None, n_filler: int = 16, n_values: int = 10,
                 seed: Seed = 0) -> PasskeyBatch:
    """``n`` rows of passkey retrieval of total length ``length`` (at least 4).

    Args:
        depth: the key's relative position in ``[0, 1]`` for every row (position
            ``round(depth * (length - 3))``), or ``None`` for a uniform random position per row.
        n_filler, n_values: sizes of the filler alphabet and of the passkey alphabet.
    """
    check_positive_int(n, "n")
    check_positive_int(length, "length")
    if length < 4:
        raise ValueError(f"length must be >= 4 (filler, KEY, value, QUERY), got {length}")
    ids = passkey_vocab(n_filler, n_values)
    g = _generator(seed)
    last = length - 3  # the latest key position: KEY at last, value at last + 1, then >= 0 filler, QUERY
    if depth is None:
        pos = torch.randint(0, last + 1, (n,), generator=g)
    else:
        if isinstance(depth, bool) or not isinstance(depth, numbers.Real) or not 0.0 <= float(depth) <= 1.0:
            raise ValueError(f"depth must be a number in [0, 1] or None, got {depth!r}")
        pos = torch.full((n,), round(float(depth) * last), dtype=torch.long)
    values = torch.randint(n_filler + 2, n_filler + 2 + n_values, (n,), generator=g)  # (n,)
    inputs = torch.randint(0, n_filler, (n, length), generator=g)  # (n, L) filler
    rows = torch.arange(n)
    inputs[rows, pos] = ids["KEY"]
    inputs[rows, pos + 1] = values
    inputs[:, -1] = ids["QUERY"]
    targets = torch.full_like(inputs, IGNORE)
    targets[:, -1] = values
    return PasskeyBatch(inputs, targets, pos, ids["vocab_size"])
