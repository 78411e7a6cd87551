"""Tests for the task generators in attnlib.data.recall and attnlib.data.languages:
documented shapes, determinism, and that every target is the task's answer, recomputed by a loop."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.data.languages import BOS, EOS, PAD, mcsl
from attnlib.data.recall import IGNORE, associative_recall, counting, flip_flop, selective_copy

SETTINGS = dict(max_examples=20, deadline=None)

GENERATORS = {
    "selective_copy": lambda seed: selective_copy(5, 9, 3, seed=seed),
    "counting": lambda seed: counting(5, 9, 4, seed=seed),
    "flip_flop": lambda seed: flip_flop(5, 9, p_write=0.3, p_read=0.3, seed=seed),
    "associative_recall": lambda seed: associative_recall(5, 4, seed=seed),
    "mcsl": lambda seed: mcsl(5, 1, 6, seed=seed),
    "mcsl_crossing": lambda seed: mcsl(5, 1, 6, language="anbmcndm", seed=seed),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_determinism(name):
    make = GENERATORS[name]
    a, b, c = make(7), make(7), make(8)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not (torch.equal(a.inputs, c.inputs) and torch.equal(a.targets, c.targets))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(make(g1).inputs, make(g2).inputs)
    assert torch.equal(make(g1).inputs, make(g2).inputs)  # generators advance in step
    x, y = a  # unpacks as (inputs, targets)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape
    assert x.min() >= 0 and x.max() < a.vocab_size
    assert ((y == IGNORE) | ((y >= 0) & (y < a.vocab_size))).all()


@settings(**SETTINGS)
@given(length=st.integers(1, 12), k=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_selective_copy_answers(length, k, seed):
    if k > length:
        with pytest.raises(ValueError, match="n_tokens"):
            selective_copy(3, length, k, seed=seed)
        return
    x, y = selective_copy(3, length, k, seed=seed)
    assert x.shape == (3, length + k)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        context = row_x[:length]
        assert row_x[length] == 1  # SEP
        data = [t for t in context if t != 0]
        assert len(data) == k and min(data) >= 2
        assert row_y == [IGNORE] * length + data
        assert row_x[length + 1:] == data[:-1]  # teacher forcing


@settings(**SETTINGS)
@given(length=st.integers(1, 12), max_count=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_counting_answers(length, max_count, seed):
    if max_count > length:
        with pytest.raises(ValueError, match="max_count"):
            counting(3, length, max_count, seed=seed)
        return
    batch = counting(4, length, max_count, n_symbols=3, seed=seed)
    x, y = batch
    assert x.shape == (4, length + 2) and batch.vocab_size == 3 + 2 + max_count
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        s = row_x[-1]
        assert row_x[-2] == 0 and 1 <= s <= 3
        assert all(1 <= t <= 3 for t in row_x[:length])
        assert row_y[:-1] == [IGNORE] * (length + 1)
        c = row_x[:length].count(s)
        assert c <= max_count and row_y[-1] == 3 + 1 + c


def test_counting_covers_every_count():
    x, y = counting(400, 6, 4, seed=0)
    assert set(y[:, -1].tolist()) == {5 + c for c in range(5)}


@settings(**SETTINGS)
@given(length=st.integers(2, 15), pw=st.floats(0, 0.5), pr=st.floats(0, 0.5), seed=st.integers(0, 10**6))
def test_flip_flop_answers(length, pw, pr, seed):
    x, y = flip_flop(3, length, p_write=pw, p_read=pr, seed=seed)
    assert x.shape == (3, 2 * length - 1)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        seq = row_x + [None]
        assert seq[0] == 0  # starts with a write
        assert row_x[-1] == 2  # ends with a read, whose bit is the last target
        memory, reads = None, 0
        for t in range(0, 2 * length, 2):
            instr = seq[t]
            assert instr in (0, 1, 2)
            if instr == 0:
                memory = seq[t + 1]
            if instr == 2:
                reads += 1
                assert row_y[t] == memory
                if t + 1 < len(row_x):
                    assert row_x[t + 1] == memory
            else:
                assert row_y[t] == IGNORE
            if t + 1 < len(row_x):
                assert row_x[t + 1] in (3, 4) and row_y[t + 1] == IGNORE
        assert reads >= 1


@settings(**SETTINGS)
@given(pairs=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_associative_recall_answers(pairs, seed):
    x, y = associative_recall(3, pairs, n_keys=8, n_values=5, seed=seed)
    assert x.shape == (3, 2 * pairs + 1)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        keys, values = row_x[0:-1:2], row_x[1:-1:2]
        assert len(set(keys)) == pairs and all(k < 8 for k in keys)
        assert all(8 <= v < 13 for v in values)
        assert row_y[:-1] == [IGNORE] * (2 * pairs)
        assert row_y[-1] == values[keys.index(row_x[-1])]


@settings(**SETTINGS)
@given(lo=st.integers(1, 5), span=st.integers(0, 4), crossing=st.booleans(), seed=st.integers(0, 10**6))
def test_mcsl_strings_and_scored_targets(lo, span, crossing, seed):
    language = "anbmcndm" if crossing else "anbncn"
    batch = mcsl(6, lo, lo + span, language=language, seed=seed)
    x, y = batch
    assert x.shape[0] == 6 and batch.lengths.shape == (6,)
    for row_x, row_y, n in zip(x.tolist(), y.tolist(), batch.lengths.tolist()):
        assert all(t == PAD for t in row_x[n:]) and all(t == IGNORE for t in row_y[n:])
        word = row_x[1:n]
        assert row_x[0] == BOS
        letters = "".join("abcd"[t - 3] for t in word)
        runs = [(ch, letters.count(ch)) for ch in "abcd" if ch in letters]
        if crossing:
            (_, ka), (_, kb), (_, kc), (_, kd) = runs
            assert letters == "a" * ka + "b" * kb + "c" * kc + "d" * kd and ka == kc and kb == kd
            assert lo <= ka <= lo + span and lo <= kb <= lo + span
        else:
            (_, ka), (_, kb), (_, kc) = runs
            assert letters == "a" * ka + "b" * kb + "c" * kc and ka == kb == kc
        full = row_x[:n] + [EOS]
        scored_from = "c" if crossing else "b"
        for t in range(n):
            determined = t >= 1 and "abcd"[row_x[t] - 3] >= scored_from
            assert row_y[t] == (full[t + 1] if determined else IGNORE)


def test_mcsl_fixed_length_and_bad_input():
    batch = mcsl(3, 4, 4, seed=0)
    assert batch.inputs.shape == (3, 13) and (batch.lengths == 13).all()
    with pytest.raises(ValueError, match="language"):
        mcsl(2, 1, 2, language="anbn")
    with pytest.raises(ValueError, match="n_min"):
        mcsl(2, 3, 2)
    with pytest.raises(TypeError, match="seed"):
        flip_flop(2, 4, seed=1.5)
    with pytest.raises(ValueError, match="p_write"):
        flip_flop(2, 4, p_write=0.8, p_read=0.5)
    with pytest.raises(ValueError, match="n_pairs"):
        associative_recall(2, 5, n_keys=4)
