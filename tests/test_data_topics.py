"""Tests for attnlib.data.topics: shapes, determinism, the disjoint topic vocabularies, and the LDA law
(Dirichlet moments in closed form; the Gamma sampler against torch.distributions.Gamma's quantiles)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib.data import lda_corpus
from attnlib.data.topics import _gamma


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), length=st.integers(1, 12), k=st.integers(1, 5), w=st.integers(1, 6),
       alpha=st.floats(0.05, 5.0), seed=st.integers(0, 10**6))
def test_shapes_ranges_and_determinism(n, length, k, w, alpha, seed):
    c = lda_corpus(n, length, n_topics=k, words_per_topic=w, alpha=alpha, seed=seed)
    assert c.tokens.shape == (n, length) and c.tokens.dtype == torch.int64 and c.vocab_size == k * w
    assert c.tokens.min() >= 0 and c.tokens.max() < k * w
    assert c.doc_topics.shape == (n, k) and (c.doc_topics >= 0).all()
    torch.testing.assert_close(c.doc_topics.sum(-1), torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(c.word_topic, torch.arange(k * w) // w)
    assert torch.equal(lda_corpus(n, length, n_topics=k, words_per_topic=w, alpha=alpha, seed=seed).tokens, c.tokens)


def test_word_frequencies_follow_the_document_topics():
    c = lda_corpus(20, 20000, n_topics=3, words_per_topic=4, alpha=1.0, seed=0)
    topic_freq = torch.nn.functional.one_hot(c.word_topic[c.tokens], 3).double().mean(1)  # (20, 3)
    torch.testing.assert_close(topic_freq, c.doc_topics, atol=0.02, rtol=0)
    word_freq = torch.nn.functional.one_hot(c.tokens, 12).double().mean(1).view(20, 3, 4)
    torch.testing.assert_close(word_freq, (c.doc_topics / 4)[:, :, None].expand(20, 3, 4), atol=0.01, rtol=0)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.5])
def test_dirichlet_moments_and_gamma_quantiles(alpha):
    k = 4
    theta = lda_corpus(40000, 1, n_topics=k, words_per_topic=1, alpha=alpha, seed=1).doc_topics
    mean, var = 1 / k, (alpha * (k * alpha - alpha)) / ((k * alpha) ** 2 * (k * alpha + 1))
    torch.testing.assert_close(theta.mean(0), torch.full((k,), mean, dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(theta.var(0), torch.full((k,), var, dtype=torch.float64), rtol=0.06, atol=0)
    ours = _gamma(torch.full((50000,), alpha, dtype=torch.float64), torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    theirs = torch.distributions.Gamma(torch.tensor(alpha, dtype=torch.float64), 1.0).sample((50000,))
    p = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    torch.testing.assert_close(torch.quantile(ours, p), torch.quantile(theirs, p), rtol=0.05, atol=0.005)


def test_validation():
    with pytest.raises(ValueError, match="alpha"):
        lda_corpus(2, 3, alpha=0)
    with pytest.raises(TypeError, match="n_docs"):
        lda_corpus(2.0, 3)
