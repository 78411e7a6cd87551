"""Tests for attnlib.models: the tiny Transformer, its pluggable parts and the training loop."""

import pytest
import torch

from attnlib.core import scaled_dot_product_attention
from attnlib.data.recall import associative_recall
from attnlib.models import (
    LSTMLanguageModel,
    TinyTransformer,
    TransformerConfig,
    evaluate,
    softmax_attention,
    train_model,
)
from attnlib.position import POSITION_SCHEMES, NoPosition
from attnlib.utils import seed_everything


def _model(position="rope", **kw):
    seed_everything(0)
    cfg = dict(vocab_size=11, d_model=16, n_layers=2, n_heads=2, max_len=32)
    cfg.update(kw)
    return TinyTransformer(TransformerConfig(position=position, **cfg))


@pytest.mark.parametrize("position", POSITION_SCHEMES)
def test_shapes_and_causality(position):
    model = _model(position).eval()
    x = torch.randint(0, 11, (3, 9))
    logits, maps = model(x, return_attention=True)
    assert logits.shape == (3, 9, 11)
    assert len(maps) == 2 and maps[0].shape == (3, 2, 9, 9)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(3, 2, 9))
    assert (maps[0].triu(1) == 0).all()
    # changing a future token leaves earlier logits unchanged
    y = x.clone()
    y[:, 6] = (y[:, 6] + 1) % 11
    torch.testing.assert_close(model(y)[:, :6], logits[:, :6])
    assert not torch.allclose(model(y)[:, 6:], logits[:, 6:])


def test_default_attention_equals_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g) for _ in range(3))
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    out, w = softmax_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, causal=True))
    out2, _ = softmax_attention(q, k, v, mask=mask, normalizer=torch.softmax)
    torch.testing.assert_close(out2, out)


def test_nope_is_permutation_equivariant_without_causal_order_cues():
    # With no position and no mask, permuting tokens permutes outputs: the reason position encodings exist.
    model = _model("none").eval()
    attn = model.blocks[0].attn
    x = torch.randn(1, 5, 16)
    perm = torch.tensor([3, 0, 4, 1, 2])
    q, k, v = attn.qkv(x).view(1, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    out, _ = softmax_attention(q, k, v)
    qp, kp, vp = attn.qkv(x[:, perm]).view(1, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    out_p, _ = softmax_attention(qp, kp, vp)
    torch.testing.assert_close(out_p, out[:, :, perm])


def test_pluggable_normalizer_and_attention_are_used():
    calls = []

    def normalizer(scores, dim=-1):
        calls.append(scores.shape)
        return torch.softmax(scores, dim=dim)

    model = TinyTransformer(_model("none").config, normalizer=normalizer)
    model(torch.randint(0, 11, (2, 4)))
    assert len(calls) == 2 and calls[0] == (2, 2, 4, 4)

    def uniform_attention(q, k, v, *, bias, mask, normalizer, scale):
        w = mask.float() / mask.sum(-1, keepdim=True)
        return w @ v, w.expand(*q.shape[:-1], -1)

    model = TinyTransformer(TransformerConfig(vocab_size=11, d_model=16, n_heads=2), attention=uniform_attention,
                            position=NoPosition())
    _, maps = model(torch.randint(0, 11, (1, 4)), return_attention=True)
    torch.testing.assert_close(maps[0][0, 0, 3], torch.full((4,), 0.25))


@pytest.mark.parametrize("norm", ["layer", "rms", "none"])
def test_norm_choices(norm):
    assert _model("alibi", norm=norm)(torch.randint(0, 11, (1, 3))).shape == (1, 3, 11)


def test_training_is_seeded_and_learns():
    def batch(g):
        return associative_recall(32, 3, n_keys=4, n_values=4, seed=g)

    def run(steps):
        seed_everything(0)
        model = TinyTransformer(TransformerConfig(vocab_size=8, d_model=32, n_heads=2, position="rope"))
        return model, train_model(model, batch, steps=steps, lr=1e-2, seed=0, progress=False)

    assert run(5)[1]["loss"] == run(5)[1]["loss"]  # bitwise reproducible
    test = associative_recall(256, 3, n_keys=4, n_values=4, seed=99)
    seed_everything(0)
    before = evaluate(TinyTransformer(TransformerConfig(vocab_size=8, d_model=32, n_heads=2, position="rope")), *test)
    model, history = run(100)
    assert len(history["loss"]) == 100
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    after = evaluate(model, *test)
    assert after["token"] > before["token"] + 0.3, (before, after)


def test_lstm_baseline_and_evaluate():
    model = LSTMLanguageModel(8, d_model=16)
    x, y = associative_recall(4, 2, n_keys=4, n_values=4, seed=0)
    assert model(x).shape == (4, 5, 8)
    res = evaluate(model, x, y)
    assert set(res) == {"token", "sequence", "loss"}
    assert 0 <= res["sequence"] <= 1 and 0 <= res["token"] <= 1


def test_evaluate_counts_exactly():
    class Oracle(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x.clamp(max=3), 4).float()

    x = torch.tensor([[0, 1, 2], [3, 3, 3]])
    y = torch.tensor([[0, -100, 1], [3, -100, -100]])  # row 0: one of two right; row 1: right
    res = evaluate(Oracle(), x, y)
    assert res["token"] == pytest.approx(2 / 3) and res["sequence"] == pytest.approx(0.5)


def test_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(vocab_size=5, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="norm"):
        TransformerConfig(vocab_size=5, norm="batch")
    with pytest.raises(TypeError, match="config"):
        TinyTransformer({"vocab_size": 5})
    model = _model()
    with pytest.raises(ValueError, match="tokens"):
        model(torch.tensor([[0, 11]]))
    with pytest.raises(ValueError, match="tokens"):
        model(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="batch_fn"):
        train_model(model, None, steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_model(model, lambda g: None, steps=0)
