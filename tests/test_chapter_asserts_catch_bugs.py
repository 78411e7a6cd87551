"""Every assert in a chapter must be able to fail (an assert true by construction is not a check).

Each mutation breaks one step of a chapter (an attnlib function it calls or the experiment's key line) the way
a careless author might; running the chapter up to the cell named by ``stop_after`` must then raise an
AssertionError. The unbroken chapters run under nbval (``pytest chapters/``). Mutations that break an attnlib
function do it in the chapter's setup cell (e.g. replace ``import attnlib`` with that import followed by an
assignment), so the library on disk is never touched; ``run_chapter`` puts every attnlib module back afterwards,
so a patched attribute does not leak into later tests (rebinding the name the chapter imported is clearer still).
"""

import pytest
from helpers import run_chapter

# chapter -> list of (old text, broken text, stop_after: text of the cell whose assert must fail).
# One block per chapter; keep each block's lines together.
MUTATIONS = {
    "01_attention_as_lookup": [
        ('"MEM": "ch. 02-03, lab 11"', '"MEM": "ch. 02-03, lab 21"', "the map names"),  # a lab the book lacks
        # soft lookup: the softmax of minus the scores (a sign slip) is no longer a lookup of the best key
        ("weights = torch.softmax(scores, dim=0)", "weights = torch.softmax(-scores, dim=0)", "assert hard_index == 2"),
        # Nadaraya-Watson: forgetting to leave the sample out makes the cross-validation pick the smallest bandwidth
        ("scores = scores.masked_fill(torch.eye(len(x), dtype=torch.bool), float(\"-inf\"))", "pass",
         "assert bandwidths[0] < h_star"),
        # Nadaraya-Watson as attention: a sign slip in the key feature -x_i^2/2
        ("k_nw = torch.stack([x_train, -x_train**2 / 2], -1)", "k_nw = torch.stack([x_train, x_train**2 / 2], -1)",
         "assert bandwidths[0] < h_star"),
        # attnlib's attention with the softmax over the query axis instead of the key axis
        ("seed_everything(0)\n", "seed_everything(0)\nscaled_dot_product_attention = lambda q, k, v, *a, **kw: "
         "torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2) @ v\n", "attnlib matches torch"),
        # self-attention that adds a (learned-looking) position bias to its input: no longer equivariant
        ("return scaled_dot_product_attention(X @ W_Q, X @ W_K, X @ W_V, causal=causal)",
         "X = X + torch.arange(len(X))[:, None] / len(X)\n    "
         "return scaled_dot_product_attention(X @ W_Q, X @ W_K, X @ W_V, causal=causal)", "perm_x, perm_y"),
        # the scale 1/d instead of 1/sqrt(d)
        ("logits / math.sqrt(d)", "logits / d", "raw, scaled = stats"),
        # a padding mask combined with | instead of &: the padding queries see keys
        ("mask = mask & causal_mask(L, L)", "mask = mask | causal_mask(L, L)", "nothing leaks through the mask"),
        # a seed paper lost when loading the list
        ("papers = load_seed_papers()", "papers = load_seed_papers()[1:]", "len(papers) == 201"),
    ],

    "02_sparse_distributed_memory": [
        # the literal SDM read with the radius off by one
        ("literal = sdm_neuron_read(queries, neurons, patterns, contents, r_small)",
         "literal = sdm_neuron_read(queries, neurons, patterns, contents, r_small + 1)", "literal SDM read equals"),
        # the ball-intersection count with the distance off by one
        ("g = seed_everything(0)", "_hbi = hamming_ball_intersection\nhamming_ball_intersection = "
         "lambda n, r, d: _hbi(n, r, min(d + 1, n))\ng = seed_everything(0)", "brute_force(6, r, d), (r, d)"),
        # the exponential fit on the counts in the wrong order: a growing "decay"
        ("fits[r] = fit_exponential_decay(ds, counts)", "fits[r] = fit_exponential_decay(ds, counts[::-1])",
         "assert r2 > 0.97"),
        # Hamming distance from (n + 1 - q.k)/2: the old cell compared it with the same formula and passed
        ("g = seed_everything(0)", "hamming_distance = lambda a, b: (a.shape[-1] + 1 - a @ b.transpose(-2, -1)) / 2\n"
         "g = seed_everything(0)", "mismatching coordinates"),
        # exp(+beta * hamming): the sign of the exponent
        ("g = seed_everything(0)", "exp_hamming_weights = lambda q, p, beta: torch.softmax(beta * hamming_distance(q, p), -1)"
         "\ng = seed_everything(0)", "mismatching coordinates"),
        # the attention read without the 1/2 of beta/2: sharper than the fit says
        ("w_att = scaled_dot_product_attention(q, P, eye, scale=beta / 2)",
         "w_att = scaled_dot_product_attention(q, P, eye, scale=beta)", "Against the baseline"),
        # the SDM read with the wrong radius in the weight comparison
        ("w_sdm = sdm_intersection_read(q, P, eye, r)", "w_sdm = sdm_intersection_read(q, P, eye, r + 4)",
         "Against the baseline"),
    ],

    "03_pavlovian_conditioning": [
        # Hebbian write with keys and values swapped in the outer product
        ("g = seed_everything(0)", "hebbian_write = lambda k, v: k.transpose(-2, -1) @ v\ng = seed_everything(0)",
         "M is the sum of one outer product per pair"),
        # Hebbian read that averages over the stored pairs instead of summing them
        ("g = seed_everything(0)", "hebbian_read = lambda m, q: q @ m.transpose(-2, -1) / 6\ng = seed_everything(0)",
         "M is the sum of one outer product per pair"),
        # orthonormal keys taken from the columns of a non-orthogonal matrix
        ("K_t = basis.T[:N_t]  # (N, d_k) orthonormal rows", "K_t = (basis + 0.1).T[:N_t]",
         "exact retrieval for every N"),
        # keys not normalised: the crosstalk prediction (N-1)/d_k no longer holds
        ("K = F.normalize(torch.randn(trials, n_pairs, d_k, generator=generator, dtype=dtype), dim=-1)",
         "K = torch.randn(trials, n_pairs, d_k, generator=generator, dtype=dtype) / 2", "within 4 standard errors"),
        # a blunt softmax (beta = 1) instead of a sharp one
        ("THRESHOLD, BETA_SHARP = 0.9, 16.0", "THRESHOLD, BETA_SHARP = 0.9, 1.0", "sse_log < sse_lin"),
        # a "capacity" that is exactly linear by construction: the knee measured on N/d_k scaled by a fixed 0.8
        ("knees[d_k_t] = math.exp(", "knees[d_k_t] = 0.8 * d_k_t + 0 * math.exp(", "sse_log < sse_lin"),
        # Taylor feature map missing the 1/n! (a plausible slip): recurrence no longer softmax
        ("g = seed_everything(0)", "_tfm = taylor_feature_map\ntaylor_feature_map = lambda P, s: _tfm(P, 2 * s)"
         "\ng = seed_everything(0)", "Check 1: for every order P"),
        # a recurrent form that drops the normaliser z_t update at every other step would be a bug; here: the bound
        ("err8 < bound and err8 < 1e-6", "err8 < bound / 1e3 and err8 < 1e-6", "Check 2: with the full exponential"),
    ],

    "04_bayesian_attention": [
        # the Gaussian posterior without its -||k||^2 / 2 sigma^2 term: unequal key norms stop mattering
        ("seed_everything\n", "seed_everything\n"
         "gaussian_key_posterior = lambda q, k, sigma: torch.softmax(q @ k.T / sigma**2, -1)\n",
         "assert gap > 1e-3"),
        # the Gaussian likelihood without its factor 2: exp(-||q - k||^2 / sigma^2), a temperature of sigma^2 / 2
        ("seed_everything\n", "seed_everything\n"
         "gaussian_key_posterior = lambda q, k, sigma, _g=gaussian_key_posterior: _g(q, k, sigma / 2**0.5)\n",
         "torch.testing.assert_close(post, torch.softmax(q @ k.T / sigma**2"),
        # queries simulated with twice the noise the posterior assumes: miscalibrated on average
        ("queries = keys[z] + sigma * torch.randn", "queries = keys[z] + 2 * sigma * torch.randn",
         "assert abs(acc.mean() - conf.mean())"),
        # sigma for sigma^2 as the temperature in the reliability diagram (a cold softmax)
        ('("tau = sigma^2", sigma**2)', '("tau = sigma^2", sigma)', "assert e_true <"),
        # soft attention computed as the exact marginal: no Jensen gap left to find
        ("seed_everything\n", "seed_everything\n"
         "soft_attention_logp = lambda p, e, y: log_marginal(p, gather_emission_logp(e, y))\n",
         "assert (jensen > 0).any()"),
        # an ELBO that forgets its KL term is not tight at the posterior
        ("seed_everything\n", "seed_everything\n"
         "elbo = lambda p, q, e: (torch.softmax(q, -1) * e).sum(-1)\n",
         "torch.testing.assert_close(elbo(prior, post.log()"),
    ],

    "05_rank_limits": [
        # a rank tolerance far too loose: small singular values of QK^T are counted as zero
        ("seed_everything\n", "seed_everything\nlogit_rank = lambda q, k, tol=None, _lr=logit_rank: _lr(q, k, tol=10.0)\n",
         "assert ranks == [min(d_h, n)"),
        # an under-trained pattern fit (a few steps): the full-width head no longer reaches the dense target
        ("steps = 120 if FAST else 200", "steps = 3 if FAST else 200", 'assert kl["dense softmax(G)"][-1] < 0.05'),
        # Eckart-Young with an off-by-one: the tail sum starts one singular value late
        ("seed_everything\n", "seed_everything\n"
         "eckart_young_error = lambda s, r, _ey=eckart_young_error: _ey(s, r + 1)\n",
         "torch.testing.assert_close(svd_err, bound)"),
        # an under-trained low-rank fit does not come within 1% of the bound
        ("steps=200 if FAST else 400, lr=0.05, seed=r", "steps=20 if FAST else 400, lr=0.05, seed=r",
         "assert err <= 1.01 * bound"),
        # the "head size n" arm of the sweep built with d/H like the other
        ("fit_head_patterns(x_sweep, sweep_targets[:h], n_sweep)", "fit_head_patterns(x_sweep, sweep_targets[:h], d_model // h)",
         "assert kl_split[-1] > 100 * kl_seq[-1]"),
        # softmax over the wrong axis in the sweep's heads: rows no longer fit
        ("logp = torch.log_softmax((x @ wq) @ (x @ wk).transpose(-2, -1), dim=-1)",
         "logp = torch.log_softmax((x @ wq) @ (x @ wk).transpose(-2, -1), dim=-2)", "assert max(kl_seq) < 0.01"),
        # keys computed with the query map: symmetric logits cannot fit the full-rank target
        ("a = torch.softmax((xh @ q) @ (xh @ k).transpose(-2, -1), dim=-1)",
         "a = torch.softmax((xh @ q) @ (xh @ q).transpose(-2, -1), dim=-1)", "assert rel_err[(1, 8)] < 0.02"),
        # the old demo: whole-matrix (Frobenius) rescaling makes attention uniform from layer 2
        ('norm="rms", return_entropy=True', 'norm="frobenius", return_entropy=True',
         "assert entropies[False][:, 1].mean()"),
        # skip connections dropped from the "with skip" arm
        ("attention_stack(x0, depth, skip=skip,", "attention_stack(x0, depth, skip=False,",
         "assert with_skip[:, -1].min() > 1e-2"),
        # the narrow layer built with wider heads: the W_O cap is no longer 4 x 8
        ("MultiHeadAttention(64, 4, head_dim=8)", "MultiHeadAttention(64, 4, head_dim=16)",
         "assert dims_for_variance(out, 1.0) == 4 * 8"),
        # a learning rate 1000x too small: the toy never learns the task
        ("opt = torch.optim.Adam(model.parameters(), lr=3e-3)", "opt = torch.optim.Adam(model.parameters(), lr=3e-6)",
         "assert acc > 0.5"),
    ],

    "06_normalization_limits": [
        # informative scores whose spread grows with k (unbounded logits): the gap no longer shrinks
        ("s[:k] = delta + (torch.linspace(-spread / 2, spread / 2, k)", "s[:k] = delta + (k * torch.linspace(-spread / 2, spread / 2, k)",
         "assert all(a > b for a, b in zip(gap_within[1:]"),
        # the top token taken as the lowest-scored one when reading it back
        ("tops.append(s[:, :k].argmax(-1))", "tops.append(s[:, :k].argmin(-1))", "assert read_b[0] > 0.95"),
        # the bounded arm given growing logits too
        ("bounded = [distinguishability(k, 1.0) for k in ks_v]",
         "bounded = [distinguishability(k, max(1.0, 2 * math.log(k))) for k in ks_v]", "assert read_b[0] > 0.95"),
        # a softmax Jacobian that forgets the temperature
        ("seed_everything\n", "seed_everything\n"
         "softmax_jacobian = lambda s, temperature=1.0, _sj=softmax_jacobian: _sj(s, 1.0)\n",
         "torch.testing.assert_close(softmax_jacobian(tied, t), auto)"),
        # log-n logit scaling slipped into the dilution cell: the closed form no longer holds
        ("    p = torch.softmax(s, -1)\n    relevant_mass", "    p = torch.softmax(s * math.log(n_ctx), -1)\n    relevant_mass",
         "assert all(a > b for a, b in zip(relevant_mass"),
        # sparsemax replaced by softmax: no exact zeros
        ("seed_everything\n", "seed_everything\nsparsemax = lambda x, dim=-1: torch.softmax(x, dim)\n",
         "assert (sparsemax(rows / t) == 0).any()"),
        # every normalizer silently falls back to softmax: the sink and sigmoid spend a full unit
        ("seed_everything\n", "seed_everything\n"
         "normalize = lambda s, normalizer='softmax', **kw: torch.softmax(s, -1)\n",
         'assert total["softmax + sink (z0 = 0)"] < 1'),
        # the float32 underflow threshold misremembered as about 110
        ("torch.tensor([-103.0, -105.0], dtype=torch.float32)", "torch.tensor([-108.0, -110.0], dtype=torch.float32)",
         "assert e32[0] > 0 and e32[1] == 0"),
    ],

    "07_expressivity_and_dynamics": [
        # A wrong lambda (the prefix's share of the mass scaled by 0.9): the prefix identity must fail.
        ("from attnlib.utils import fast_mode, seed_everything\n",
         "from attnlib.utils import fast_mode, seed_everything\n"
         "prefix_decomposition = (lambda f: lambda *a, **k: (lambda r: (0.9 * r[0], r[1], r[2]))(f(*a, **k)))("
         "prefix_decomposition)\n",
         "largest deviation from the identity"),
        # Lambda from the wrong normaliser (Z_P / Z_C instead of Z_P / (Z_P + Z_C)): still caught.
        ("from attnlib.utils import fast_mode, seed_everything\n",
         "from attnlib.utils import fast_mode, seed_everything\n"
         "prefix_decomposition = (lambda f: lambda *a, **k: (lambda r: (r[0] / (1 - r[0]), r[1], r[2]))(f(*a, **k)))("
         "prefix_decomposition)\n",
         "largest deviation from the identity"),
        # The learning rates swapped (attention faster in both runs): the "no winner-takes-all" assert must fail.
        ("lr_attention=1.0, lr_decoder=ratio", "lr_attention=1.0, lr_decoder=min(ratio, 1 / ratio)",
         "Snap, not winner-takes-all"),
        # The topic measure forgets to separate copies of the query's word: the topic checks must fail.
        ("a[same_topic & ~equal]", "a[same_topic]", "every position makes copies"),
        # The counting feature with a causal mask shifted by one (attends to the next token too).
        ("causal = torch.ones(L, L, dtype=torch.bool).tril()", "causal = torch.ones(L, L, dtype=torch.bool).tril(1)",
         "running fraction of a's exactly"),
    ],
}

CASES = [(chapter, *m) for chapter, ms in MUTATIONS.items() for m in ms]


@pytest.mark.parametrize("chapter", MUTATIONS)
def test_every_part_one_chapter_has_mutations(chapter):
    assert len(MUTATIONS[chapter]) >= 2, f"{chapter}: add mutations that its asserts must catch"


@pytest.mark.slow
@pytest.mark.parametrize("chapter, old, new, stop_after", CASES,
                         ids=[f"{c[0][:2]}:{c[2][:40]}" for c in CASES])
def test_a_broken_chapter_fails_an_assert(chapter, old, new, stop_after):
    with pytest.raises(AssertionError):
        run_chapter(chapter, old, new, stop_after=stop_after)
