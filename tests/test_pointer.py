"""Tests for attnlib.pointer: the pointer distribution, no-repeat decoding, the pointer network."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.data.sequences import sorting_task
from attnlib.pointer import PointerNet, no_repeat_mask, pointer_distribution, pointer_step
from attnlib.scores import AdditiveScore, DotScore
from attnlib.seq2seq import decoder_inputs


def _naive_pointer(query, enc, score: AdditiveScore, mask):
    """u_ij = v^T tanh(W_1 e_j + W_2 d_i), softmax over allowed j; one (i, j) pair at a time."""
    *lead, T, _ = query.shape
    n = enc.shape[-2]
    W2, W1, v = score.W_q.weight, score.W_k.weight, score.w.weight[0]
    probs = torch.zeros(*lead, T, n, dtype=query.dtype)
    for b in range(lead[0]):
        for i in range(T):
            allowed = [j for j in range(n) if mask[b, i, j]]
            if not allowed:
                continue
            u = torch.stack([v @ torch.tanh(W1 @ enc[b, j] + W2 @ query[b, i]) for j in allowed])
            probs[b, i, allowed] = torch.softmax(u, 0)
    return probs


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 5), n=st.integers(1, 9), d=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_pointer_distribution_matches_naive_and_sums_to_one(B, T, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    score = AdditiveScore(d, d, 4).double()
    query = torch.randn(B, T, d, generator=g, dtype=torch.float64)
    enc = torch.randn(B, n, d, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, n, generator=g) > 0.3
    mask[0, 0] = False  # one row with nowhere to point
    p = pointer_distribution(query, enc, score, mask)
    assert p.shape == (B, T, n)
    torch.testing.assert_close(p, _naive_pointer(query, enc, score, mask))
    torch.testing.assert_close(p.sum(-1), mask.any(-1).double())  # 1, or 0 when nothing is allowed
    assert (p[~mask] == 0).all()
    assert torch.isfinite(p).all()
    # Without a mask every row sums to one.
    torch.testing.assert_close(pointer_distribution(query, enc, score).sum(-1), torch.ones(B, T, dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 5), n=st.integers(1, 9), seed=st.integers(0, 10_000),
       use_mask=st.booleans())
def test_pointer_distribution_is_permutation_equivariant(B, T, n, seed, use_mask):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    score = AdditiveScore(5, 5, 7).double()
    query = torch.randn(B, T, 5, generator=g, dtype=torch.float64)
    enc = torch.randn(B, n, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, 1, n, generator=g) > 0.3) if use_mask else None
    perm = torch.randperm(n, generator=g)
    p = pointer_distribution(query, enc, score, mask)
    p_perm = pointer_distribution(query, enc[:, perm], score, None if mask is None else mask[..., perm])
    torch.testing.assert_close(p_perm, p[..., perm])


def test_pointer_distribution_large_scores_and_fp16():
    q = torch.randn(2, 3, 4) * 1e4
    enc = torch.randn(2, 6, 4) * 1e4
    p = pointer_distribution(q, enc, DotScore())
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 3))
    p16 = pointer_distribution(q[..., :1].half() / 1e4, enc.half()[..., :1] / 1e4, DotScore())
    assert p16.dtype == torch.float16 and torch.isfinite(p16).all()


def test_pointer_step_never_repeats_or_points_at_padding():
    g = torch.Generator().manual_seed(0)
    score = AdditiveScore(4, 4, 4)
    enc = torch.randn(3, 7, 4, generator=g)
    valid = torch.arange(7)[None, :] < torch.tensor([[7], [4], [1]])
    chosen = torch.zeros(3, 7, dtype=torch.bool)
    picks = []
    for _ in range(4):
        probs, index = pointer_step(torch.randn(3, 4, generator=g), enc, score, valid, chosen)
        allowed = valid & ~chosen
        assert (probs[~allowed] == 0).all()
        rows = allowed.any(-1)
        torch.testing.assert_close(probs.sum(-1), rows.float())
        assert allowed[rows, index[rows]].all()
        assert torch.equal(index, probs.argmax(-1))
        chosen = chosen | torch.nn.functional.one_hot(index, 7).bool() & allowed
        picks.append(index)
    picks = torch.stack(picks, 1)
    assert len(set(picks[0].tolist())) == 4 and len(set(picks[1].tolist())) == 4
    assert picks[2, 0] == 0


def test_pointer_step_bad_input():
    score = AdditiveScore(4, 4, 4)
    enc = torch.randn(2, 5, 4)
    ok = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(TypeError, match="valid"):
        pointer_step(torch.randn(2, 4), enc, score, ok.float(), ok)
    with pytest.raises(TypeError, match="chosen"):
        pointer_step(torch.randn(2, 4), enc, score, ok, ok[:, :3])
    with pytest.raises(ValueError, match="enc"):
        pointer_step(torch.randn(2, 4), enc[0], score, ok, ok)
    with pytest.raises(TypeError, match="query"):
        pointer_distribution([1.0], enc, score)


def test_no_repeat_mask_matches_loop():
    targets = torch.tensor([[2, 0, 1, -1], [3, 1, 0, 2]])
    valid = torch.arange(4)[None, :] < torch.tensor([[3], [4]])
    allowed = no_repeat_mask(targets, valid)
    for b in range(2):
        for i in range(4):
            seen = {int(t) for t in targets[b, :i] if t >= 0}
            expected = [bool(valid[b, j]) and j not in seen for j in range(4)]
            assert allowed[b, i].tolist() == expected


def _sorting(seed=0, n=6):
    return sorting_task(n, min_len=2, max_len=7, vocab_size=12, seed=seed)


def test_pointer_net_shapes_and_normalisation():
    torch.manual_seed(0)
    batch = _sorting()
    model = PointerNet(12, 8)
    logp = model(batch.src, batch.lengths, decoder_inputs(batch.tgt))
    B, L = batch.src.shape
    assert logp.shape == (B, L, L)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(B, L))
    assert (logp.exp()[~batch.mask[:, None, :].expand(B, L, L)] == 0).all()  # never points at padding
    # The loss is finite and so is its gradient, padded steps included.
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_pointer_net_decodes_permutations():
    torch.manual_seed(0)
    batch = _sorting(seed=2, n=8)
    model = PointerNet(12, 8).eval()
    pointers, dists = model.decode(batch.src, batch.lengths, batch.src.shape[1])
    for b in range(8):
        L = int(batch.lengths[b])
        assert sorted(pointers[b, :L].tolist()) == list(range(L))
    tokens, _ = model.predict(batch)
    assert torch.equal(tokens[batch.mask], batch.src.gather(1, pointers)[batch.mask])
    # Teacher forcing with the decoded pointers reproduces the decoding distributions.
    allowed = no_repeat_mask(pointers.masked_fill(~batch.mask, -1), batch.mask)
    logp = model(batch.src, batch.lengths, decoder_inputs(tokens), allowed)
    torch.testing.assert_close(logp.exp()[batch.mask], dists[batch.mask])


def test_pointer_net_uses_step_fn():
    calls = []

    def my_step(*args):
        calls.append(1)
        return pointer_step(*args)

    batch = _sorting()
    PointerNet(12, 8, step_fn=my_step).decode(batch.src, batch.lengths, 3)
    assert len(calls) == 3


def test_pointer_net_bad_input():
    with pytest.raises(TypeError, match="vocab_size"):
        PointerNet(12.0)
    model = PointerNet(12, 8)
    batch = _sorting()
    with pytest.raises(ValueError, match="lengths"):
        model(batch.src, batch.lengths * 0, batch.tgt)
    with pytest.raises(TypeError, match="steps"):
        model.decode(batch.src, batch.lengths, 2.5)
