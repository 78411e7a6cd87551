"""attnlib.prob against closed forms and properties: posterior, marginal, ELBO, REINFORCE."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlib import core, prob

DT = torch.float64


def randn(*shape, g, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=DT) * scale


@settings(max_examples=30, deadline=None)
@given(lq=st.integers(1, 6), lk=st.integers(1, 9), d=st.integers(1, 8), sigma=st.floats(0.2, 5.0),
       norm=st.floats(0.1, 3.0), seed=st.integers(0, 2**31 - 1))
def test_gaussian_posterior_is_softmax_attention(lq, lk, d, sigma, norm, seed):
    """Check T3: uniform prior, equal-norm keys: p(z | q) = softmax(q.K^T / sigma^2), to 1e-10."""
    g = torch.Generator().manual_seed(seed)
    q = randn(lq, d, g=g)
    k = torch.nn.functional.normalize(randn(lk, d, g=g), dim=-1) * norm
    v = randn(lk, 3, g=g)
    post = prob.gaussian_key_posterior(q, k, sigma)
    torch.testing.assert_close(post, torch.softmax(q @ k.T / sigma**2, -1), rtol=0, atol=1e-10)
    # the read-out is a posterior mean, i.e. attention with scale 1/sigma^2
    torch.testing.assert_close(prob.posterior_mean(post, v),
                               core.scaled_dot_product_attention(q, k, v, scale=1 / sigma**2), rtol=0, atol=1e-10)


def test_gaussian_posterior_with_prior_and_unequal_norms():
    g = torch.Generator().manual_seed(0)
    q, k = randn(3, 4, g=g), randn(5, 4, g=g)  # unequal norms: the -||k||^2/2sigma^2 term matters
    log_prior = torch.log_softmax(randn(5, g=g), -1)
    sigma = 0.8
    logits = (q @ k.T - 0.5 * (k**2).sum(-1)) / sigma**2 + log_prior
    torch.testing.assert_close(prob.gaussian_key_posterior(q, k, sigma, log_prior), torch.softmax(logits, -1))
    with pytest.raises(ValueError, match="sigma"):
        prob.gaussian_key_posterior(q, k, 0.0)


def test_posterior_sharpens_as_noise_shrinks():
    g = torch.Generator().manual_seed(1)
    k = randn(6, 4, g=g)
    q = k[2:3] + 0.05 * randn(1, 4, g=g)
    peaks = [prob.gaussian_key_posterior(q, k, s)[0, 2].item() for s in (3.0, 1.0, 0.3, 0.1)]
    assert all(b > a for a, b in zip(peaks, peaks[1:]))
    assert peaks[-1] > 0.99


def cases(seed, batch=(4,), n=7, vocab=5):
    g = torch.Generator().manual_seed(seed)
    prior = randn(*batch, n, g=g, scale=2)
    post = randn(*batch, n, g=g, scale=2)
    em_logits = randn(*batch, n, vocab, g=g, scale=2)
    y = torch.randint(0, vocab, batch, generator=g)
    return prior, post, em_logits, y


def test_log_marginal_enumerates_alignments():
    prior, _, em_logits, y = cases(0)
    emission = prob.gather_emission_logp(em_logits, y)
    p = torch.softmax(prior, -1)
    py = torch.softmax(em_logits, -1)[torch.arange(4), :, y]  # (4, n) p(y | z)
    torch.testing.assert_close(emission, py.log())
    torch.testing.assert_close(prob.log_marginal(prior, emission), (p * py).sum(-1).log())
    # summing the marginal over every y gives 1
    total = sum(prob.log_marginal(prior, prob.gather_emission_logp(em_logits, torch.full((4,), c))).exp()
                for c in range(5))
    torch.testing.assert_close(total, torch.ones(4, dtype=DT))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), vocab=st.integers(2, 6), batch=st.sampled_from([(), (3,), (2, 3)]),
       seed=st.integers(0, 2**31 - 1))
def test_elbo_bounds_the_log_marginal(n, vocab, batch, seed):
    """Check L3(a): ELBO <= log p(y) for any q, with equality (1e-6) at the exact posterior;
    and the hard-attention objective E_p[log p(y|z)] (q = prior) is a bound too."""
    prior, post, em_logits, y = cases(seed, batch, n, vocab)
    emission = prob.gather_emission_logp(em_logits, y)
    exact = prob.log_marginal(prior, emission)
    assert bool((prob.elbo(prior, post, emission) <= exact + 1e-12).all())
    best = prob.alignment_posterior(prior, emission)
    torch.testing.assert_close(prob.elbo(prior, best.log(), emission), exact, rtol=0, atol=1e-6)
    torch.testing.assert_close(prob.elbo(prior, prior, emission), prob.expected_emission_logp(prior, emission))
    assert bool((prob.expected_emission_logp(prior, emission) <= exact + 1e-12).all())


def test_elbo_gap_is_the_kl_to_the_posterior():
    prior, post, em_logits, y = cases(2)
    emission = prob.gather_emission_logp(em_logits, y)
    q = torch.softmax(post, -1)
    p = prob.alignment_posterior(prior, emission)
    kl = (q * (q.log() - p.log())).sum(-1)
    torch.testing.assert_close(prob.log_marginal(prior, emission) - prob.elbo(prior, post, emission), kl)


def test_elbo_is_finite_when_q_puts_zero_mass_somewhere():
    prior = torch.zeros(4, dtype=DT)
    post = torch.tensor([0.0, -math.inf, 0.0, 0.0], dtype=DT)
    emission = torch.log(torch.tensor([0.5, 0.1, 0.2, 0.3], dtype=DT))
    assert torch.isfinite(prob.elbo(prior, post, emission))


def test_soft_attention_is_not_the_marginal():
    """Soft attention is f(E[x]) with f = log softmax o linear; it equals the marginal when the
    prior is one-hot, and differs in general (the Jensen gap)."""
    prior, _, em_logits, y = cases(3)
    emission = prob.gather_emission_logp(em_logits, y)
    soft = prob.soft_attention_logp(prior, em_logits, y)
    assert (soft - prob.log_marginal(prior, emission)).abs().max() > 1e-3
    one_hot = torch.full_like(prior, -1e4)
    one_hot[:, 1] = 0.0
    torch.testing.assert_close(prob.soft_attention_logp(one_hot, em_logits, y),
                               prob.log_marginal(one_hot, emission), rtol=0, atol=1e-8)
    # with a linear output layer, averaging logits = applying it to the averaged source
    g = torch.Generator().manual_seed(4)
    x, w = randn(4, 7, 6, g=g), randn(5, 6, g=g)
    p = torch.softmax(prior, -1)
    ctx = (p[..., None] * x).sum(-2)
    torch.testing.assert_close(prob.soft_attention_logp(prior, x @ w.T, y),
                               torch.log_softmax(ctx @ w.T, -1).gather(-1, y[:, None]).squeeze(-1))


def test_sample_alignment_frequencies():
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], dtype=DT)
    z = prob.sample_alignment(logits, 40000, torch.Generator().manual_seed(5))
    assert z.shape == (40000, 2) and z.dtype == torch.long
    freq = torch.nn.functional.one_hot(z, 3).to(DT).mean(0)
    p = torch.softmax(logits, -1)
    assert ((freq - p).abs() < 4 * (p * (1 - p) / 40000).sqrt() + 1e-9).all()


@pytest.mark.parametrize("baseline", [0.0, -1.5])
def test_reinforce_mean_matches_exact_gradient(baseline):
    """Check L3(b): the mean REINFORCE gradient over 1e5 samples lies within 3 standard errors of
    the exact gradient of E_p[f(z)] (computed by enumeration and autograd)."""
    g = torch.Generator().manual_seed(6)
    n = 6
    logits = randn(n, g=g).requires_grad_()
    reward = randn(n, g=g) - 1.0  # f(z) = log p(y | z), fixed here
    exact, = torch.autograd.grad((torch.softmax(logits, -1) * reward).sum(), logits)
    z = prob.sample_alignment(logits, 100_000, g)
    grads = prob.score_function_grads(logits, reward, z, baseline)  # (S, n)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(grads.shape[0])
    assert ((mean - exact).abs() <= 3 * se).all(), (mean, exact, se)
    # the surrogate's autograd gradient is the same per-sample estimate
    surrogate = prob.reinforce_surrogate(logits, reward, z[:50], baseline)
    auto, = torch.autograd.grad(surrogate.sum(), logits)
    torch.testing.assert_close(auto, grads[:50].sum(0))
    torch.testing.assert_close(surrogate.detach(), reward[z[:50]])


def test_baseline_reduces_variance_without_bias():
    g = torch.Generator().manual_seed(7)
    logits = randn(5, g=g)
    reward = randn(5, g=g) * 0.3 - 4.0  # rewards far from 0: the baseline matters
    z = prob.sample_alignment(logits, 50_000, g)
    b = (torch.softmax(logits, -1) * reward).sum()
    plain, based = prob.score_function_grads(logits, reward, z), prob.score_function_grads(logits, reward, z, b)
    assert based.var(0).sum() < 0.2 * plain.var(0).sum()
    torch.testing.assert_close(plain.mean(0), based.mean(0), rtol=0, atol=0.05)


def test_reinforce_surrogate_passes_pathwise_gradient_through_reward():
    g = torch.Generator().manual_seed(8)
    logits = randn(4, g=g)
    theta = randn(4, g=g).requires_grad_()
    z = torch.tensor([[1], [1], [3]])[:, 0]
    s = prob.reinforce_surrogate(logits, theta * 2, z)
    grad, = torch.autograd.grad(s.sum(), theta)
    torch.testing.assert_close(grad, torch.tensor([0.0, 4.0, 0.0, 2.0], dtype=DT))


def test_kl_and_variational_surrogate_are_unbiased():
    g = torch.Generator().manual_seed(9)
    n = 5
    prior, emission = randn(n, g=g), randn(n, g=g) - 2
    post = randn(n, g=g).requires_grad_()
    q, p = torch.softmax(post, -1), torch.softmax(prior, -1)
    torch.testing.assert_close(prob.kl_categorical(post, prior), (q * (q.log() - p.log())).sum())
    exact_value = prob.elbo(prior, post, emission)
    exact_grad, = torch.autograd.grad(exact_value, post)
    S = 100_000
    z = prob.sample_alignment(post, S, g)
    rep = post.detach().expand(S, n).clone().requires_grad_()  # one copy per sample: per-sample gradients
    sur = prob.variational_surrogate(prior, rep, emission, z[None, :], baseline=exact_value.detach())
    grads, = torch.autograd.grad(sur.sum(), rep)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(S)
    assert ((mean - exact_grad).abs() <= 3 * se).all(), (mean, exact_grad, se)
    values = sur.detach().flatten()
    assert abs(values.mean() - exact_value.detach()) < 3 * values.std() / math.sqrt(S)


def test_lab03_solution_agrees_with_attnlib():
    """The lab's solutions and attnlib.prob compute the same things on fresh random inputs."""
    from helpers import exercise_namespace

    ns = exercise_namespace("lab03_latent_alignment")
    for seed, shape in enumerate([(1,), (7,), (3, 5), (2, 2, 9)]):
        prior, post, em_logits, y = cases(100 + seed, shape[:-1], shape[-1], 6)
        e = prob.gather_emission_logp(em_logits, y)
        torch.testing.assert_close(ns["log_marginal"](prior, e), prob.log_marginal(prior, e))
        torch.testing.assert_close(ns["soft_attention_logp"](prior, em_logits, y),
                                   prob.soft_attention_logp(prior, em_logits, y))
        torch.testing.assert_close(ns["elbo"](prior, post, e), prob.elbo(prior, post, e))
        z = prob.sample_alignment(post, 4, torch.Generator().manual_seed(seed))
        for name, ours, ref, args in [
            ("reinforce", ns["reinforce_surrogate"], prob.reinforce_surrogate, (post, e, z, -1.0)),
            ("variational", ns["variational_surrogate"], prob.variational_surrogate, (prior, post, e, z, -1.0)),
        ]:
            a = [x.clone().requires_grad_() if x.is_floating_point() else x for x in args[:-1]]
            b = [x.clone().requires_grad_() if x.is_floating_point() else x for x in args[:-1]]
            va, vb = ours(*a, args[-1]), ref(*b, args[-1])
            torch.testing.assert_close(va, vb, msg=name)
            ga = torch.autograd.grad(va.sum(), [x for x in a if x.requires_grad])
            gb = torch.autograd.grad(vb.sum(), [x for x in b if x.requires_grad])
            for x, y_ in zip(ga, gb):
                torch.testing.assert_close(x, y_, msg=name)
