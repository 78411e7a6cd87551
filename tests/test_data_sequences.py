"""Tests for attnlib.data.sequences: shapes, the task definitions, determinism, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.data.sequences import BOS, N_SPECIAL, PAD, SequenceBatch, reversal_task, sorting_task

TASKS = [reversal_task, sorting_task]


def _check_common(batch: SequenceBatch, n, min_len, max_len, vocab_size):
    for name in ("src", "tgt", "alignment"):
        t = getattr(batch, name)
        assert t.shape == (n, max_len), name
        assert t.dtype == torch.int64, name
    assert batch.lengths.shape == (n,) and batch.lengths.dtype == torch.int64
    assert ((batch.lengths >= min_len) & (batch.lengths <= max_len)).all()
    mask = batch.mask
    assert mask.dtype == torch.bool and mask.shape == (n, max_len)
    assert torch.equal(mask.sum(1), batch.lengths)
    # Real tokens are content tokens; padding is PAD, alignment -1.
    assert ((batch.src[mask] >= N_SPECIAL) & (batch.src[mask] < vocab_size)).all()
    assert (batch.src[~mask] == PAD).all() and (batch.tgt[~mask] == PAD).all()
    assert (batch.alignment[~mask] == -1).all()
    # Every target token copies the source token its alignment points to, inside the sequence.
    a = batch.alignment.clamp(min=0)
    assert (batch.alignment[mask] < batch.lengths[:, None].expand_as(mask)[mask]).all()
    assert torch.equal(batch.src.gather(1, a)[mask], batch.tgt[mask])
    # The alignment of each sequence is a permutation of 0..n-1.
    for b in range(n):
        L = int(batch.lengths[b])
        assert sorted(batch.alignment[b, :L].tolist()) == list(range(L))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), min_len=st.integers(1, 7), extra=st.integers(0, 6), vocab=st.integers(3, 20),
       seed=st.integers(0, 2**31 - 1))
def test_reversal_definition(n, min_len, extra, vocab, seed):
    max_len = min_len + extra
    batch = reversal_task(n, min_len=min_len, max_len=max_len, vocab_size=vocab, seed=seed)
    _check_common(batch, n, min_len, max_len, vocab)
    for b in range(n):
        L = int(batch.lengths[b])
        assert batch.tgt[b, :L].tolist() == batch.src[b, :L].tolist()[::-1]
        assert batch.alignment[b, :L].tolist() == list(range(L - 1, -1, -1))  # the anti-diagonal


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), min_len=st.integers(1, 7), extra=st.integers(0, 6), vocab=st.integers(16, 30),
       distinct=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_sorting_definition(n, min_len, extra, vocab, distinct, seed):
    max_len = min_len + extra
    batch = sorting_task(n, min_len=min_len, max_len=max_len, vocab_size=vocab, seed=seed, distinct=distinct)
    _check_common(batch, n, min_len, max_len, vocab)
    for b in range(n):
        L = int(batch.lengths[b])
        src, tgt = batch.src[b, :L].tolist(), batch.tgt[b, :L].tolist()
        assert tgt == sorted(src)
        if distinct:
            assert len(set(src)) == L
        # Stable: equal tokens keep their source order.
        a = batch.alignment[b, :L].tolist()
        for t in range(L - 1):
            if tgt[t] == tgt[t + 1]:
                assert a[t] < a[t + 1]


def test_sorting_with_repeats_is_stable():
    batch = sorting_task(200, min_len=8, max_len=8, vocab_size=4, seed=3, distinct=False)
    assert (batch.src[:, :, None] == batch.src[:, None, :]).sum() > 200 * 8  # repeats happen
    _check_common(batch, 200, 8, 8, 4)


def test_alignment_matrix_is_one_hot_gold():
    batch = reversal_task(5, min_len=2, max_len=6, vocab_size=9, seed=1)
    gold = batch.alignment_matrix()
    assert gold.shape == (5, 6, 6)
    assert torch.equal(gold.sum(-1), batch.mask.float())  # one 1 per real target step, none at padding
    for b in range(5):
        L = int(batch.lengths[b])
        assert torch.equal(gold[b, :L, :L], torch.eye(L).flip(1))


@pytest.mark.parametrize("task", TASKS)
def test_determinism(task):
    kw = dict(min_len=2, max_len=11, vocab_size=24)
    a, b = task(16, seed=7, **kw), task(16, seed=7, **kw)
    c = task(16, seed=8, **kw)
    for name in ("src", "tgt", "alignment", "lengths"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.src, c.src)
    # A generator gives the same stream as the int seed, and advances between calls.
    g = torch.Generator().manual_seed(7)
    first, second = task(16, seed=g, **kw), task(16, seed=g, **kw)
    assert torch.equal(first.src, a.src)
    assert not torch.equal(second.src, a.src)


@pytest.mark.parametrize("task", TASKS)
def test_seed_does_not_touch_global_rng(task):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    task(4, min_len=1, max_len=5, vocab_size=12, seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("task", TASKS)
def test_bad_input(task):
    kw = dict(min_len=2, max_len=5, vocab_size=12)
    with pytest.raises(ValueError, match="min_len"):
        task(4, min_len=6, max_len=5, vocab_size=12)
    with pytest.raises(ValueError, match="vocab_size"):
        task(4, min_len=2, max_len=5, vocab_size=N_SPECIAL)
    with pytest.raises(ValueError, match="n must"):
        task(0, **kw)
    with pytest.raises(TypeError, match="max_len"):
        task(4, min_len=2, max_len=5.0, vocab_size=12)
    with pytest.raises(TypeError, match="seed"):
        task(4, seed="1", **kw)


def test_sorting_distinct_needs_enough_tokens():
    with pytest.raises(ValueError, match="distinct"):
        sorting_task(4, min_len=2, max_len=10, vocab_size=N_SPECIAL + 9)
    sorting_task(4, min_len=2, max_len=10, vocab_size=N_SPECIAL + 10)  # exactly enough is fine
    sorting_task(4, min_len=2, max_len=10, vocab_size=N_SPECIAL + 3, distinct=False)


def test_special_tokens():
    assert PAD == 0 and BOS == 1 and N_SPECIAL == 2
