"""Tests for attnlib.seq2seq: the attention step, Luong local attention, the GRU encoder-decoder."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib import seq2seq
from attnlib.data.sequences import PAD, reversal_task
from attnlib.seq2seq import (
    ATTENTIONS,
    Seq2SeqGRU,
    alignment_scores,
    attend,
    copy_accuracy,
    decoder_inputs,
    fit,
    local_attention_weights,
    local_window,
)

F = torch.nn.functional


# ---------------------------------------------------------------- attend
@settings(max_examples=40, deadline=None)
@given(lead=st.integers(1, 3), T=st.integers(1, 9), S=st.integers(1, 9), d=st.integers(1, 6),
       seed=st.integers(0, 10_000))
def test_attend_matches_torch_sdpa(lead, T, S, d, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(lead, L, d, generator=g, dtype=torch.float64) for L in (T, S, S))
    mask = torch.rand(lead, T, S, generator=g) > 0.4
    mask[..., 0] = True  # torch's SDPA gives NaN on fully masked rows; attnlib's zeros are tested below
    ctx, w = attend(q @ k.transpose(-2, -1), v, mask)
    torch.testing.assert_close(ctx, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0))
    torch.testing.assert_close(w.sum(-1), torch.ones(lead, T, dtype=torch.float64))
    assert (w[~mask] == 0).all()


def test_attend_fully_masked_row_is_zero_and_has_finite_grad():
    scores = torch.randn(2, 3, 4, requires_grad=True)
    values = torch.randn(2, 4, 5)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 2] = False
    ctx, w = attend(scores, values, mask)
    assert torch.equal(w[1, 2], torch.zeros(4)) and torch.equal(ctx[1, 2], torch.zeros(5))
    ctx.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_attend_bad_input():
    with pytest.raises(ValueError, match="values"):
        attend(torch.randn(2, 3), torch.randn(4, 5))
    with pytest.raises(TypeError, match="mask"):
        attend(torch.randn(2, 3), torch.randn(3, 5), torch.ones(2, 3))
    with pytest.raises(TypeError, match="scores"):
        attend(torch.ones(2, 3, dtype=torch.int64), torch.randn(3, 5))


# ---------------------------------------------------------------- local attention
def _naive_local(scores, centers, D):
    """Luong et al.'s local-p weights, written out one (row, position) at a time."""
    *lead, T, S = scores.shape
    out = torch.zeros_like(scores)
    sigma = D / 2
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in (*lead, T)]).reshape(-1, len(lead) + 1).tolist():
        idx = tuple(idx)
        p = float(centers[idx])
        window = [s for s in range(S) if abs(s - p) <= D]
        if not window:
            continue
        z = sum(math.exp(float(scores[idx + (s,)])) for s in window)
        for s in window:
            out[idx + (s,)] = math.exp(float(scores[idx + (s,)])) / z * math.exp(-((s - p) ** 2) / (2 * sigma**2))
    return out


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 6), S=st.integers(1, 11), D=st.sampled_from([0.5, 1, 1.5, 2, 3.7]),
       seed=st.integers(0, 10_000))
def test_local_weights_match_their_definition(B, T, S, D, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, T, S, generator=g, dtype=torch.float64) * 3
    centers = torch.rand(B, T, generator=g, dtype=torch.float64) * (S - 1)
    centers[0, 0] = round(float(centers[0, 0]))  # an integer centre: the boundary |s - p| = D counts as inside
    w = local_attention_weights(scores, centers, D)
    torch.testing.assert_close(w, _naive_local(scores, centers, D))
    window = local_window(centers, S, D)
    assert (w[~window] == 0).all()
    assert (w.sum(-1) <= 1 + 1e-12).all()
    assert ((w > 0) == window).all()  # every position in the window gets some weight


def test_local_window_boundaries():
    w = local_window(torch.tensor([2.0, 0.0, 5.5]), 7, 2)
    assert w.tolist() == [
        [True, True, True, True, True, False, False],
        [True, True, True, False, False, False, False],
        [False, False, False, False, True, True, True],
    ]


def test_local_weights_at_center_and_wide_window():
    # With a window wider than the sequence, local-p is the global softmax times the Gaussian.
    scores = torch.randn(2, 3, 5, dtype=torch.float64)
    centers = torch.tensor([[0.0, 2.0, 4.0], [1.3, 2.7, 3.1]], dtype=torch.float64)
    D = 10.0
    s = torch.arange(5, dtype=torch.float64)
    gauss = torch.exp(-((s - centers[..., None]) ** 2) / (2 * (D / 2) ** 2))
    torch.testing.assert_close(local_attention_weights(scores, centers, D), scores.softmax(-1) * gauss)
    # At an integer centre the Gaussian is 1 there.
    w = local_attention_weights(scores, centers, 1.0)
    torch.testing.assert_close(w[0, 1, 2], torch.softmax(scores[0, 1, 1:4], -1)[1])


def test_local_weights_respect_mask_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    centers = (torch.rand(2, 4, generator=g, dtype=torch.float64) * 5).requires_grad_()
    mask = torch.ones(2, 1, 6, dtype=torch.bool)
    mask[1, :, 3:] = False  # sequence 1 has length 3
    w = local_attention_weights(scores, centers, 1.5, mask)
    assert (w[1, :, 3:] == 0).all()
    # A fully masked window gives zeros, not NaN.
    far = torch.full((1, 1), 5.0, dtype=torch.float64)
    assert torch.equal(local_attention_weights(torch.randn(1, 1, 6, dtype=torch.float64), far, 1.0,
                                               torch.tensor([[[True, True, False, False, False, False]]])),
                       torch.zeros(1, 1, 6, dtype=torch.float64))
    # The Gaussian makes the centre differentiable; the window is piecewise constant.
    assert torch.autograd.gradcheck(lambda s, c: local_attention_weights(s, c, 1.5, mask), (scores, centers))


def test_local_weights_bad_input():
    with pytest.raises(ValueError, match="centers"):
        local_attention_weights(torch.randn(2, 3, 4), torch.rand(2, 4), 1.0)
    with pytest.raises(ValueError, match="half_width"):
        local_attention_weights(torch.randn(2, 3, 4), torch.rand(2, 3), 0.0)
    with pytest.raises(TypeError, match="half_width"):
        local_attention_weights(torch.randn(2, 3, 4), torch.rand(2, 3), "2")
    with pytest.raises(TypeError, match="centers"):
        local_window(torch.tensor([1, 2]), 4, 1.0)


# ---------------------------------------------------------------- the model
def _batch(seed=0, n=5, min_len=2, max_len=7, vocab=11):
    return reversal_task(n, min_len=min_len, max_len=max_len, vocab_size=vocab, seed=seed)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_model_shapes_and_weights(attention):
    torch.manual_seed(0)
    batch = _batch()
    model = Seq2SeqGRU(11, 8, attention, window=1.5)
    out = model(batch.src, batch.lengths, decoder_inputs(batch.tgt))
    B, L = batch.src.shape
    assert out.logits.shape == (B, L, 11)
    if attention == "none":
        assert out.weights is None and out.centers is None
        return
    assert out.weights.shape == (B, L, L)
    keys_real = batch.mask[:, None, :].expand(B, L, L)
    assert (out.weights[~keys_real] == 0).all()  # never attends to source padding
    if attention == "local":
        assert out.centers.shape == (B, L)
        assert ((out.centers >= 0) & (out.centers <= (batch.lengths - 1)[:, None])).all()
        far = (torch.arange(L)[None, None, :] - out.centers[..., None]).abs() > 1.5
        assert (out.weights[far] == 0).all()
        assert (out.weights.sum(-1) <= 1 + 1e-6).all()
    else:
        torch.testing.assert_close(out.weights.sum(-1), torch.ones(B, L))


def test_local_center_is_predictive_position():
    # p_t = (S - 1) * sigmoid(v_p . tanh(W_p h_t)) with each sequence's own S: v_p = 0 puts p_t at (S - 1) / 2,
    # and a huge v_p . tanh(...) pushes it to an end of the sequence.
    torch.manual_seed(3)
    batch = _batch(seed=5)
    model = Seq2SeqGRU(11, 8, "local")
    with torch.no_grad():
        model.v_p.weight.zero_()
    out = model(batch.src, batch.lengths, decoder_inputs(batch.tgt))
    expected = ((batch.lengths - 1) / 2)[:, None].expand_as(out.centers)
    torch.testing.assert_close(out.centers, expected.float())
    with torch.no_grad():
        model.W_p.weight.zero_()
        model.W_p.weight[:, 0] = 1e3  # tanh(W_p h) is +-1 per row
        model.v_p.weight.fill_(1e3)
    out = model(batch.src, batch.lengths, decoder_inputs(batch.tgt))
    ends = torch.stack([torch.zeros_like(expected), 2 * expected], 0).float()
    assert ((out.centers[None] - ends).abs().amin(0) < 1e-4).all()


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_padding_does_not_change_outputs(attention):
    torch.manual_seed(1)
    batch = _batch(seed=3)
    model = Seq2SeqGRU(11, 8, attention)
    tgt_in = decoder_inputs(batch.tgt)
    out = model(batch.src, batch.lengths, tgt_in)
    src_padded = torch.cat([batch.src, torch.full((batch.src.shape[0], 4), PAD)], 1)
    out_padded = model(src_padded, batch.lengths, tgt_in)
    torch.testing.assert_close(out_padded.logits, out.logits)
    if out.weights is not None:
        torch.testing.assert_close(out_padded.weights[..., : batch.src.shape[1]], out.weights)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_greedy_decode_agrees_with_teacher_forcing(attention):
    # Without input feeding, feeding the greedy tokens back as teacher-forcing inputs reproduces them.
    torch.manual_seed(2)
    batch = _batch(seed=4)
    model = Seq2SeqGRU(11, 8, attention).eval()
    tokens, weights = model.greedy_decode(batch.src, batch.lengths, 6)
    out = model(batch.src, batch.lengths, decoder_inputs(tokens))
    assert torch.equal(out.logits.argmax(-1), tokens)
    if weights is not None:
        torch.testing.assert_close(weights, out.weights)


def test_student_functions_are_used():
    calls = []

    def my_attend(scores, values, mask):
        calls.append("attend")
        return attend(scores, values, mask)

    def my_local(scores, centers, D, mask):
        calls.append("local")
        return local_attention_weights(scores, centers, D, mask)

    batch = _batch()
    Seq2SeqGRU(11, 8, "dot", attend_fn=my_attend)(batch.src, batch.lengths, decoder_inputs(batch.tgt))
    Seq2SeqGRU(11, 8, "local", local_fn=my_local)(batch.src, batch.lengths, decoder_inputs(batch.tgt))
    assert calls == ["attend", "local"]


def test_model_bad_input():
    with pytest.raises(ValueError, match="attention"):
        Seq2SeqGRU(11, 8, "bahdanau")
    with pytest.raises(TypeError, match="d_model"):
        Seq2SeqGRU(11, 8.0)
    model = Seq2SeqGRU(11, 8)
    batch = _batch()
    with pytest.raises(TypeError, match="src"):
        model(batch.src.float(), batch.lengths, batch.tgt)
    with pytest.raises(ValueError, match="lengths"):
        model(batch.src, batch.lengths + 10, batch.tgt)
    with pytest.raises(TypeError, match="lengths"):
        model(batch.src, batch.lengths[:2], batch.tgt)


# ---------------------------------------------------------------- metrics and training
def test_metrics_on_gold():
    batch = _batch(n=7)
    acc, exact = copy_accuracy(batch.tgt, batch)
    assert (acc == 1).all() and exact.all()
    wrong = batch.tgt.clone()
    wrong[0, 0] = (wrong[0, 0] + 1) % 11
    acc, exact = copy_accuracy(wrong, batch)
    assert not exact[0] and exact[1:].all()
    torch.testing.assert_close(acc[0], 1 - 1 / batch.lengths[0])
    hit, mass = alignment_scores(batch.alignment_matrix(), batch)
    assert (hit == 1).all() and (mass == 1).all()
    uniform = batch.mask[:, None, :].float().expand(-1, batch.src.shape[1], -1)
    uniform = uniform / batch.lengths[:, None, None]
    _, mass = alignment_scores(uniform, batch)
    torch.testing.assert_close(mass, 1 / batch.lengths.float())
    with pytest.raises(ValueError, match="weights"):
        alignment_scores(torch.rand(7, 3, 3), batch)


def test_fit_learns_and_is_deterministic():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny GRUs: one thread is faster than two on a busy machine
    try:
        _fit_twice()
    finally:
        torch.set_num_threads(threads)


def _fit_twice():
    sample = lambda g: reversal_task(16, min_len=2, max_len=4, vocab_size=6, seed=g)  # noqa: E731
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Seq2SeqGRU(6, 12, "dot")
        runs.append(fit(model, sample, steps=40, lr=3e-2, seed=5))
    assert runs[0] == runs[1]
    assert sum(runs[0][-10:]) / 10 < 0.5 * sum(runs[0][:10]) / 10
    assert not model.training


def test_module_names():
    assert set(seq2seq.__all__) >= {"attend", "local_attention_weights", "Seq2SeqGRU", "fit"}


# ---------------------------------------------------------------- the lab's solutions agree with attnlib
def test_lab02_solution_agrees_with_attnlib():
    from helpers import exercise_namespace

    from attnlib.pointer import pointer_step
    from attnlib.scores import AdditiveScore, GeneralScore

    ns = exercise_namespace("lab02_seq2seq_and_pointers")
    g = torch.Generator().manual_seed(2002)
    torch.manual_seed(2002)
    for trial in range(6):
        B, T, S, d = 1 + trial % 3, 1 + (2 * trial) % 7, 1 + (3 * trial) % 11, 1 + trial % 5
        q, k, v = (torch.randn(B, L, d, generator=g, dtype=torch.float64) for L in (T, S, S))
        mask = torch.rand(B, T, S, generator=g) > 0.3
        mask[0, 0] = False
        torch.testing.assert_close(ns["dot_score"](q, k), q @ k.transpose(-2, -1))
        general, additive = GeneralScore(d, d).double(), AdditiveScore(d, d, 3).double()
        with torch.no_grad():
            torch.testing.assert_close(ns["general_score"](q, k, general.W), general(q, k))
            torch.testing.assert_close(
                ns["additive_score"](q, k, additive.W_q.weight, additive.W_k.weight, additive.w.weight[0]),
                additive(q, k))
        scores = q @ k.transpose(-2, -1)
        for mine, ref in zip(ns["attend"](scores, v, mask), attend(scores, v, mask)):
            torch.testing.assert_close(mine, ref)
        centers = torch.rand(B, T, generator=g, dtype=torch.float64) * S
        for D in (0.5, 1.0, 2.5):
            torch.testing.assert_close(ns["local_attention_weights"](scores, centers, D, mask),
                                       local_attention_weights(scores, centers, D, mask))
        valid = torch.arange(S)[None, :] < torch.randint(1, S + 1, (B,), generator=g)[:, None]
        chosen = (torch.rand(B, S, generator=g) > 0.5) & valid
        with torch.no_grad():
            probs, index = ns["pointer_step"](q[:, 0], k, additive, valid, chosen)
            ref_probs, ref_index = pointer_step(q[:, 0], k, additive, valid, chosen)
        torch.testing.assert_close(probs, ref_probs)
        assert torch.equal(index, ref_index)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_attention_steps_with_large_logits(dtype):
    scores = (torch.randn(2, 3, 7) * 1e4).to(dtype)
    values = torch.randn(2, 7, 4).to(dtype)
    mask = torch.ones(2, 1, 7, dtype=torch.bool)
    mask[1, :, 4:] = False
    ctx, w = attend(scores, values, mask)
    assert torch.isfinite(ctx).all() and torch.isfinite(w).all()
    torch.testing.assert_close(w.float().sum(-1), torch.ones(2, 3), rtol=1e-3, atol=1e-3)
    centers = torch.tensor([[0.0, 3.0, 6.0], [1.0, 2.5, 3.0]], dtype=dtype)
    lw = local_attention_weights(scores, centers, 2.0, mask)
    assert lw.dtype == dtype and torch.isfinite(lw).all()
    ref = local_attention_weights(scores.double(), centers.double(), 2.0, mask)
    torch.testing.assert_close(lw.double(), ref, rtol=1e-3, atol=1e-3)
