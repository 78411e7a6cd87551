r"""Probabilistic attention: the alignment ``z`` as a latent variable.

One idea: *which key does the output come from?* Let ``z in {1..n}`` pick a
source position, with prior ``p(z | x) = softmax(a)`` (``a`` are attention
scores, ``prior_logits``) and emission ``p(y | x, z)``. Then

* the **posterior** over keys is ``p(z | x, y) ∝ p(z | x) p(y | x, z)``;
  with a Gaussian emission ``q ~ N(k_z, sigma^2 I)``, a uniform prior and keys
  of equal norm it is exactly ``softmax(q . K^T / sigma^2)``: softmax attention
  with temperature ``sigma^2`` (derived here, background; the seed *Attention:
  Marginal Probability is All You Need?* proposes the Bayesian reading, its
  abstract gives no formula);
* the **exact marginal** ``log p(y | x) = logsumexp_z [log p(z | x) + log p(y | x, z)]``
  enumerates ``z`` (cheap when ``n`` is small);
* **soft attention** feeds the *expected* input to the output layer,
  ``log softmax(sum_z p(z) logits_z)[y]``: ``f(E[x])``, not the marginal
  ``log E[p(y | x_z)]``. It does not marginalise over the alignment (seed:
  *Latent Alignment and Variational Attention*);
* **hard attention** samples ``z ~ p(z | x)`` and maximises
  ``E_{p(z)}[log p(y | x, z)] <= log p(y | x)`` with the score-function
  (REINFORCE) gradient; a baseline ``b`` lowers its variance without bias
  (seed: *Show, Attend and Tell*);
* **variational attention** uses an inference network ``q(z | x, y)`` and the
  ELBO ``E_q[log p(y | x, z)] - KL(q || p) <= log p(y | x)``, with equality
  iff ``q`` is the exact posterior (seed: *Latent Alignment and Variational
  Attention*).

Shapes: ``prior_logits`` and ``post_logits`` are ``(..., n)``;
``emission_logp`` is ``(..., n)`` (``log p(y | x, z)`` for each ``z`` at the observed ``y``);
``emission_logits`` is ``(..., n, V)``; ``y`` is an integer tensor ``(...)``.
"""

from __future__ import annotations

from typing import Optional

import torch

from .validation import check_tensor

__all__ = [
    "gaussian_key_posterior",
    "posterior_mean",
    "gather_emission_logp",
    "log_marginal",
    "alignment_posterior",
    "soft_attention_logp",
    "expected_emission_logp",
    "elbo",
    "sample_alignment",
    "reinforce_surrogate",
    "score_function_grads",
    "kl_categorical",
    "variational_surrogate",
]


def gaussian_key_posterior(q: torch.Tensor, k: torch.Tensor, sigma: float,
                           log_prior: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``p(z = j | q) ∝ prior_j * exp(-||q - k_j||^2 / (2 sigma^2))``: ``q`` (..., Lq, d), ``k`` (..., Lk, d) -> (..., Lq, Lk)."""
    check_tensor(q, "q", min_dim=2)
    check_tensor(k, "k", min_dim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dimension: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    sq = ((q[..., :, None, :] - k[..., None, :, :]) ** 2).sum(-1)  # (..., Lq, Lk)
    logits = -sq / (2 * sigma**2)
    if log_prior is not None:
        logits = logits + log_prior
    return torch.softmax(logits, dim=-1)


def posterior_mean(weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``E_{p(z)}[v_z] = weights @ v``: attention's read-out is a posterior mean."""
    return weights @ v


def gather_emission_logp(emission_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log p(y | x, z)`` for every ``z``: ``(..., n, V)`` logits and ``(...)`` targets -> ``(..., n)``."""
    logp = torch.log_softmax(emission_logits, dim=-1)
    idx = y[..., None, None].expand(*logp.shape[:-1], 1)
    return logp.gather(-1, idx).squeeze(-1)


def _check_same(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    check_tensor(a, na)
    check_tensor(b, nb)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{na} and {nb} must have the same number n of alignments (last dim): "
                         f"{na} {tuple(a.shape)}, {nb} {tuple(b.shape)}")


def log_marginal(prior_logits: torch.Tensor, emission_logp: torch.Tensor) -> torch.Tensor:
    """Exact ``log p(y | x) = logsumexp_z [log softmax(prior_logits)_z + emission_logp_z]``, shape ``(...)``."""
    _check_same(prior_logits, emission_logp, "prior_logits", "emission_logp")
    return torch.logsumexp(torch.log_softmax(prior_logits, -1) + emission_logp, dim=-1)


def alignment_posterior(prior_logits: torch.Tensor, emission_logp: torch.Tensor) -> torch.Tensor:
    """Exact posterior ``p(z | x, y) = softmax(log p(z | x) + log p(y | x, z))``, shape ``(..., n)``."""
    _check_same(prior_logits, emission_logp, "prior_logits", "emission_logp")
    return torch.softmax(torch.log_softmax(prior_logits, -1) + emission_logp, dim=-1)


def soft_attention_logp(prior_logits: torch.Tensor, emission_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Soft attention's ``log softmax(sum_z p(z) logits_z)[y]``: the output layer sees the expected input.

    ``prior_logits`` (..., n), ``emission_logits`` (..., n, V) (a *linear* output
    layer applied to each source, so averaging logits = applying it to the
    averaged source), ``y`` (...) -> (...).
    """
    check_tensor(prior_logits, "prior_logits")
    check_tensor(emission_logits, "emission_logits", min_dim=2)
    if emission_logits.shape[-2] != prior_logits.shape[-1]:
        raise ValueError(f"emission_logits (..., n, V) must have n = prior_logits.shape[-1]: "
                         f"{tuple(emission_logits.shape)} vs {tuple(prior_logits.shape)}")
    p = torch.softmax(prior_logits, -1)
    mixed = (p[..., :, None] * emission_logits).sum(-2)  # (..., V)
    return torch.log_softmax(mixed, -1).gather(-1, y[..., None]).squeeze(-1)


def expected_emission_logp(prior_logits: torch.Tensor, emission_logp: torch.Tensor) -> torch.Tensor:
    """Hard attention's objective ``E_{p(z)}[log p(y | x, z)]`` (a lower bound on the log-marginal), exact."""
    _check_same(prior_logits, emission_logp, "prior_logits", "emission_logp")
    return (torch.softmax(prior_logits, -1) * emission_logp).sum(-1)


def elbo(prior_logits: torch.Tensor, post_logits: torch.Tensor, emission_logp: torch.Tensor) -> torch.Tensor:
    """``E_q[log p(z) + log p(y | z) - log q(z)]`` with ``q = softmax(post_logits)``, enumerated exactly, shape ``(...)``.

    ``elbo <= log_marginal``, with equality iff ``q`` is :func:`alignment_posterior`.
    """
    _check_same(prior_logits, emission_logp, "prior_logits", "emission_logp")
    _check_same(post_logits, emission_logp, "post_logits", "emission_logp")
    log_q = torch.log_softmax(post_logits, -1)
    log_p = torch.log_softmax(prior_logits, -1)
    q = log_q.exp()
    # 0 * log 0 = 0: where q underflows to 0 the term contributes nothing.
    terms = torch.where(q > 0, q * (log_p + emission_logp - log_q), torch.zeros_like(q))
    return terms.sum(-1)


def sample_alignment(logits: torch.Tensor, n_samples: int,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``n_samples`` draws ``z ~ softmax(logits)``: ``(..., n)`` -> ``(n_samples, ...)`` (long)."""
    probs = torch.softmax(logits.detach(), -1)
    flat = probs.reshape(-1, probs.shape[-1])
    z = torch.multinomial(flat, n_samples, replacement=True, generator=generator)  # (B, S)
    return z.T.reshape(n_samples, *probs.shape[:-1])


def reinforce_surrogate(logits: torch.Tensor, reward: torch.Tensor, z: torch.Tensor,
                        baseline=0.0) -> torch.Tensor:
    """A surrogate whose *value* is ``reward[z]`` and whose *gradient* is the REINFORCE estimate.

    ``surrogate = f(z) + (f(z) - b).detach() * (log p(z) - log p(z).detach())``
    with ``p = softmax(logits)`` (..., n), ``f = reward`` (..., n) (may itself
    depend on parameters: its pathwise gradient flows through the first term),
    ``z`` (S, ...) samples and a baseline ``b`` (a number or a tensor
    broadcastable to (S, ...), treated as a constant). Averaging over the S samples
    gives an unbiased estimate of ``E_{p(z)}[f(z)]`` and of its gradient.
    Returns shape ``(S, ...)``.
    """
    _check_same(logits, reward, "logits", "reward")
    logp = torch.log_softmax(logits, -1).expand(*z.shape, logits.shape[-1])
    f = reward.expand(*z.shape, reward.shape[-1]).gather(-1, z[..., None]).squeeze(-1)
    logp_z = logp.gather(-1, z[..., None]).squeeze(-1)
    b = baseline.detach() if isinstance(baseline, torch.Tensor) else baseline
    return f + (f - b).detach() * (logp_z - logp_z.detach())


def score_function_grads(logits: torch.Tensor, reward: torch.Tensor, z: torch.Tensor,
                         baseline=0.0) -> torch.Tensor:
    """Per-sample REINFORCE gradients of ``E_{p(z)}[f(z)]`` w.r.t. ``logits`` (``f`` held fixed).

    ``grad_s = (f(z_s) - b) * (onehot(z_s) - softmax(logits))``, shape ``(S, ..., n)``,
    because ``d log softmax(a)_z / d a = onehot(z) - softmax(a)``.
    """
    _check_same(logits, reward, "logits", "reward")
    p = torch.softmax(logits.detach(), -1)
    f = reward.detach().expand(*z.shape, reward.shape[-1]).gather(-1, z[..., None])  # (S, ..., 1)
    onehot = torch.nn.functional.one_hot(z, logits.shape[-1]).to(p.dtype)
    return (f - baseline) * (onehot - p)


def kl_categorical(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(q_logits) || softmax(p_logits))`` over the last dimension, shape ``(...)`` (0 log 0 = 0)."""
    _check_same(q_logits, p_logits, "q_logits", "p_logits")
    log_q, log_p = torch.log_softmax(q_logits, -1), torch.log_softmax(p_logits, -1)
    q = log_q.exp()
    return torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q)).sum(-1)


def variational_surrogate(prior_logits: torch.Tensor, post_logits: torch.Tensor, emission_logp: torch.Tensor,
                          z: torch.Tensor, baseline=0.0) -> torch.Tensor:
    """Sampled ELBO for variational attention: ``z ~ q = softmax(post_logits)``, shape ``(S, ...)``.

    ``surrogate_s = reinforce_surrogate(post_logits, emission_logp, z_s, b) - KL(q || p)``:
    the expected log-likelihood is estimated from samples of ``q`` (score function for
    ``q``, pathwise for the emission model) and the KL is computed exactly. Its mean
    over samples is an unbiased estimate of :func:`elbo` and of its gradient.
    """
    _check_same(prior_logits, emission_logp, "prior_logits", "emission_logp")
    return reinforce_surrogate(post_logits, emission_logp, z, baseline) - kl_categorical(post_logits, prior_logits)
