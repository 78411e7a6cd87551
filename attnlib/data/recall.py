r"""Seeded next-token tasks that need *where* and *what* to look back at.

Each generator returns a :class:`TaskBatch` for a causal model: ``inputs`` and
``targets`` are both ``(B, L)`` int64, and ``targets[b, t]`` is the token the model
must predict after reading ``inputs[b, :t+1]``, or ``-100`` where nothing is scored
(the ``ignore_index`` of ``F.cross_entropy`` and of :func:`attnlib.models.train_model`).
``x, y = batch`` unpacks it; ``batch.vocab_size`` is the number of token ids used.

===========================  =====================================================  ==================
task                         one row (``|`` separates the scored answer)            ``L``
===========================  =====================================================  ==================
:func:`selective_copy`       ``_ 5 _ _ 3 _ 7 _ SEP | 5 3 7``: copy the non-blank    ``length + n_tokens``
                             tokens in order, ignoring the blanks
:func:`counting`             ``2 1 2 3 2 Q 2 | 3``: how often does the queried      ``length + 2``
                             symbol occur?
:func:`flip_flop`            ``w 1 i 0 r | 1 w 0 r | 0``: after ``r``, repeat the   ``2 * length - 1``
                             bit of the last ``w`` (ignore ``i``)
:func:`associative_recall`   ``k1 v1 k2 v2 k3 v3 k2 | v2``: look the key up         ``2 * n_pairs + 1``
===========================  =====================================================  ==================

Selective copy, counting and Flip-Flop are the three tasks on which the seed
*Contextual Position Encoding: Learning to Count What's Important* reports that
CoPE succeeds where popular position embeddings fail; the row formats here are
our small versions, not the paper's exact ones. Flip-Flop's ``w/i/r`` language is
from Liu et al. (2023, "Exposing Attention Glitches with Flip-Flop Language
Modeling"; background, not a seed). Associative recall is the classic fast-weights
lookup task (background, not a seed).

Determinism: the same ``seed`` (an int, or a ``torch.Generator`` in a given state)
gives the same batch; all randomness comes from one CPU generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..validation import check_positive_int
from ._seed import Seed, as_generator as _generator

__all__ = ["IGNORE", "TaskBatch", "selective_copy", "counting", "flip_flop", "associative_recall"]

IGNORE = -100


@dataclass(frozen=True)
class TaskBatch:
    """``inputs`` and ``targets``, both ``(B, L)`` int64 (``-100`` = not scored), and the vocabulary size."""

    inputs: torch.Tensor
    targets: torch.Tensor
    vocab_size: int

    def __iter__(self):  # x, y = batch
        return iter((self.inputs, self.targets))


def _rand_positions(n: int, length: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``(n, k)`` sorted distinct positions in ``[0, length)`` per row."""
    return torch.rand(n, length, generator=g).argsort(dim=-1)[:, :k].sort(dim=-1).values


def selective_copy(n: int, length: int, n_tokens: int, *, n_symbols: int = 8, seed: Seed = 0) -> TaskBatch:
    """Copy the ``n_tokens`` non-blank tokens, in order, out of ``length`` slots of blanks.

    Token ids: ``BLANK = 0``, ``SEP = 1``, symbols ``2 .. n_symbols + 1``.
    ``inputs = [context (length), SEP, answer[:-1]]``, ``targets = [-100] * length + answer``;
    ``L = length + n_tokens``. Positions of the tokens are uniform, their order kept.
    """
    check_positive_int(n, "n")
    check_positive_int(length, "length")
    check_positive_int(n_tokens, "n_tokens")
    check_positive_int(n_symbols, "n_symbols")
    if n_tokens > length:
        raise ValueError(f"n_tokens={n_tokens} must be <= length={length}")
    g = _generator(seed)
    answer = torch.randint(2, n_symbols + 2, (n, n_tokens), generator=g)  # (n, k)
    context = torch.zeros(n, length, dtype=torch.long)
    context.scatter_(1, _rand_positions(n, length, n_tokens, g), answer)
    sep = torch.ones(n, 1, dtype=torch.long)
    inputs = torch.cat([context, sep, answer[:, :-1]], dim=1)  # (n, length + k)
    targets = torch.cat([torch.full((n, length), IGNORE), answer], dim=1)
    return TaskBatch(inputs, targets, n_symbols + 2)


def counting(n: int, length: int, max_count: int, *, n_symbols: int = 4, seed: Seed = 0) -> TaskBatch:
    """How many times does the queried symbol occur in the context?

    Token ids: ``QUERY = 0``, symbols ``1 .. n_symbols``, the answer ``c`` is the token
    ``n_symbols + 1 + c``. Each row draws a symbol ``s`` and a count ``c`` uniform in
    ``[0, max_count]``, puts ``s`` at ``c`` random slots and other symbols elsewhere.
    ``inputs = [context (length), QUERY, s]``, the only target is at the last position;
    ``L = length + 2``. The answer range does not grow with ``length``.
    """
    check_positive_int(n, "n")
    check_positive_int(length, "length")
    check_positive_int(max_count, "max_count")
    check_positive_int(n_symbols, "n_symbols")
    if max_count > length:
        raise ValueError(f"max_count={max_count} must be <= length={length}")
    if n_symbols < 2:
        raise ValueError(f"n_symbols must be >= 2 (the queried symbol and another), got {n_symbols}")
    g = _generator(seed)
    s = torch.randint(1, n_symbols + 1, (n, 1), generator=g)  # (n, 1) queried symbol
    c = torch.randint(0, max_count + 1, (n,), generator=g)  # (n,) its count
    other = torch.randint(1, n_symbols, (n, length), generator=g)  # symbols != s: skip s
    other = other + (other >= s).long()
    order = torch.rand(n, length, generator=g).argsort(dim=-1)  # a random permutation per row
    is_s = torch.zeros(n, length, dtype=torch.bool).scatter_(1, order, torch.arange(length)[None, :] < c[:, None])
    context = torch.where(is_s, s, other)
    inputs = torch.cat([context, torch.zeros(n, 1, dtype=torch.long), s], dim=1)  # (n, length + 2)
    targets = torch.full_like(inputs, IGNORE)
    targets[:, -1] = n_symbols + 1 + c
    return TaskBatch(inputs, targets, n_symbols + 2 + max_count)


def flip_flop(n: int, length: int, *, p_write: float = 0.1, p_read: float = 0.1, seed: Seed = 0) -> TaskBatch:
    """Flip-Flop: ``length`` instruction/bit pairs; after each read ``r``, predict the last written bit.

    Token ids: ``W = 0``, ``I = 1``, ``R = 2``, bits ``3`` (0) and ``4`` (1). The first
    instruction is ``W``, the last is ``R`` (every row has a read); the others are
    ``W``/``R``/``I`` with probabilities ``p_write``/``p_read``/the rest. Bits after ``W``
    and ``I`` are uniform; the bit after ``R`` is the last written one. ``inputs`` is the
    sequence without its last token, ``targets[t]`` is the next bit where ``inputs[t] == R``;
    ``L = 2 * length - 1``.
    """
    check_positive_int(n, "n")
    check_positive_int(length, "length")
    if length < 2:
        raise ValueError(f"length must be >= 2 (a write and a read), got {length}")
    for name, p in (("p_write", p_write), ("p_read", p_read)):
        if not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    if p_write + p_read > 1:
        raise ValueError(f"p_write + p_read must be <= 1, got {p_write} + {p_read}")
    g = _generator(seed)
    u = torch.rand(n, length, generator=g)
    instr = torch.where(u < p_write, 0, torch.where(u < p_write + p_read, 2, 1))  # (n, length)
    instr[:, 0], instr[:, -1] = 0, 2
    bits = torch.randint(0, 2, (n, length), generator=g)
    is_write = instr == 0
    # index of the last write at or before each step, then copy its bit to the reads
    last = torch.where(is_write, torch.arange(length)[None, :], 0).cummax(dim=1).values
    bits = torch.where(instr == 2, bits.gather(1, last), bits)
    seq = torch.stack([instr, bits + 3], dim=-1).reshape(n, 2 * length)  # (n, 2*length)
    inputs = seq[:, :-1]
    targets = torch.where(inputs == 2, seq[:, 1:], torch.full_like(inputs, IGNORE))
    return TaskBatch(inputs.contiguous(), targets, 5)


def associative_recall(n: int, n_pairs: int, *, n_keys: int = 16, n_values: int = 16, seed: Seed = 0) -> TaskBatch:
    """Key-value pairs, then a key: predict its value.

    Token ids: keys ``0 .. n_keys - 1``, values ``n_keys .. n_keys + n_values - 1``.
    Keys in a row are distinct; the query is one of them, uniform.
    ``inputs = [k_1, v_1, ..., k_P, v_P, k_q]``, the only target (at the last position) is
    ``v_q``; ``L = 2 * n_pairs + 1``.
    """
    check_positive_int(n, "n")
    check_positive_int(n_pairs, "n_pairs")
    check_positive_int(n_keys, "n_keys")
    check_positive_int(n_values, "n_values")
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs={n_pairs} must be <= n_keys={n_keys} (keys are distinct)")
    g = _generator(seed)
    keys = torch.rand(n, n_keys, generator=g).argsort(dim=-1)[:, :n_pairs]  # (n, P) distinct
    values = torch.randint(n_keys, n_keys + n_values, (n, n_pairs), generator=g)
    q = torch.randint(0, n_pairs, (n, 1), generator=g)
    inputs = torch.cat([torch.stack([keys, values], dim=-1).reshape(n, 2 * n_pairs), keys.gather(1, q)], dim=1)
    targets = torch.full_like(inputs, IGNORE)
    targets[:, -1] = values.gather(1, q)[:, 0]
    return TaskBatch(inputs, targets, n_keys + n_values)
