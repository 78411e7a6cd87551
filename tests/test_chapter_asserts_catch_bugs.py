"""Every assert in a chapter must be able to fail (an assert true by construction is not a check).

Each mutation breaks one step of a chapter (an attnlib function it calls or the experiment's key line) the way
a careless author might; running the chapter up to the cell named by ``stop_after`` must then raise an
AssertionError. The unbroken chapters run under nbval (``pytest chapters/``). Mutations that break an attnlib
function do it in the chapter's setup cell (e.g. replace ``import attnlib`` with that import followed by an
assignment), so the library on disk is never touched.
"""

import pytest
from helpers import run_chapter

# chapter -> list of (old text, broken text, stop_after: text of the cell whose assert must fail).
# One block per chapter; keep each block's lines together.
MUTATIONS = {
    "01_attention_as_lookup": [
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
    ],

    "05_rank_limits": [
    ],

    "06_normalization_limits": [
    ],

    "07_expressivity_and_dynamics": [
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
