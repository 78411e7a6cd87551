r"""A seeded LDA-like corpus: documents that mix a few topics, each topic with its own words.

*How Do Transformers Learn Topic Structure: Towards a Mechanistic Understanding* trains on
synthetic data modelled by Latent Dirichlet Allocation and reports higher average attention
between same-topic words. We generate the simplest such corpus (our choice of constants; the
paper's are in its body): ``n_topics`` topics with **disjoint** vocabularies of
``words_per_topic`` words, word ``w`` belongs to topic ``w // words_per_topic``, and each topic
is uniform over its words. A document draws topic proportions
:math:`\theta \sim \operatorname{Dirichlet}(\alpha \mathbf{1})`, then each of its ``length`` words
draws a topic :math:`z \sim \theta` and a word uniformly from topic :math:`z`.

Shapes: ``tokens`` ``(N, L)`` int64 in ``[0, n_topics * words_per_topic)``, ``doc_topics``
``(N, n_topics)`` (each row sums to 1), ``word_topic`` ``(V,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..validation import check_positive_int
from ._seed import Seed, as_generator as _generator

__all__ = ["TopicCorpus", "lda_corpus"]


@dataclass(frozen=True)
class TopicCorpus:
    """``tokens`` ``(N, L)``, ``doc_topics`` ``(N, K)``, ``word_topic`` ``(V,)``, ``vocab_size = K * words_per_topic``."""

    tokens: torch.Tensor
    doc_topics: torch.Tensor
    word_topic: torch.Tensor
    vocab_size: int


def lda_corpus(n_docs: int, length: int, *, n_topics: int = 4, words_per_topic: int = 8, alpha: float = 0.3,
               seed: Seed = 0) -> TopicCorpus:
    """``n_docs`` documents of ``length`` words from the LDA model above (smaller ``alpha``: fewer topics per doc)."""
    n = check_positive_int(n_docs, "n_docs")
    length = check_positive_int(length, "length")
    k = check_positive_int(n_topics, "n_topics")
    w = check_positive_int(words_per_topic, "words_per_topic")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    g = _generator(seed)
    # Dirichlet(alpha) as normalised Gamma(alpha) draws (torch's Gamma sampler takes no generator: _gamma does).
    gammas = _gamma(torch.full((n, k), float(alpha), dtype=torch.float64), g)  # (N, K)
    theta = gammas / gammas.sum(-1, keepdim=True)
    topics = torch.multinomial(theta, length, replacement=True, generator=g)  # (N, L)
    tokens = topics * w + torch.randint(w, (n, length), generator=g)
    return TopicCorpus(tokens, theta, torch.arange(k * w) // w, k * w)


def _gamma(shape_param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Gamma(a, 1) draws with a seeded generator (Marsaglia-Tsang, with the a < 1 boost a -> a + 1)."""
    a = shape_param
    boost = a < 1
    a1 = torch.where(boost, a + 1, a)
    d = a1 - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while todo.any():
        x = torch.randn(a.shape, generator=g, dtype=a.dtype)
        u = torch.rand(a.shape, generator=g, dtype=a.dtype)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * x ** 2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    u = torch.rand(a.shape, generator=g, dtype=a.dtype)
    return torch.where(boost, out * u ** (1.0 / a), out).clamp_min(1e-300)
