"""Tests for attnlib.interp: rollout and flow (against a closed form and a brute-force min cut),
gradient x input and integrated gradients (against captum, same model and baseline), occlusion,
rank agreement (against pair counting), the impermissible penalty, and the two classifiers."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnlib.interp import (BiGRUAttentionClassifier, EncoderClassifier, IG_METHODS, attention_flow,
                            attention_rollout, average_ranks, grad_x_input, impermissible_mass, impermissible_penalty,
                            integrated_gradients, occlusion_importance, rank_agreement, residual_attention)


def _random_attns(n_layers, b, h, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(3 * torch.randn(b, h, n, n, generator=g, dtype=dtype), -1) for _ in range(n_layers)]


# --- rollout ---------------------------------------------------------------------------------------------------

@settings(max_examples=10)
@given(n_layers=st.integers(1, 4), b=st.integers(1, 3), h=st.integers(1, 3), n=st.integers(1, 7),
       residual=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_rollout_is_the_product_latest_layer_left_and_rows_sum_to_one(n_layers, b, h, n, residual, seed):
    attns = _random_attns(n_layers, b, h, n, seed)
    r = attention_rollout(attns, residual)
    expected = torch.eye(n, dtype=torch.float64).expand(b, n, n)
    for a in attns:  # a loop over layers with explicit per-batch matrices, not a reduction
        step = residual * torch.eye(n, dtype=torch.float64) + (1 - residual) * sum(a[:, i] for i in range(h)) / h
        expected = torch.stack([step[i] @ expected[i] for i in range(b)])
    torch.testing.assert_close(r, expected)
    torch.testing.assert_close(r.sum(-1), torch.ones(b, n, dtype=torch.float64))


def test_single_layer_rollout_is_half_attention_half_identity():
    (a,) = _random_attns(1, 2, 3, 5)
    torch.testing.assert_close(attention_rollout([a]), 0.5 * a.mean(1) + 0.5 * torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(attention_rollout([a], residual=1.0), torch.eye(5, dtype=torch.float64).expand(2, 5, 5))


def test_rollout_gradcheck():
    attns = [a.requires_grad_(True) for a in _random_attns(3, 1, 2, 4)]
    assert torch.autograd.gradcheck(lambda *xs: attention_rollout(list(xs), 0.3), attns)


@pytest.mark.parametrize("bad, error", [
    (torch.ones(1, 1, 3, 3), TypeError),  # a tensor, not a list
    ([], TypeError),
    ([torch.ones(1, 3, 3)], ValueError),  # no head dim
    ([torch.ones(1, 1, 3, 4)], ValueError),  # not square
    ([torch.ones(1, 1, 3, 3), torch.ones(1, 1, 4, 4)], ValueError),  # layers disagree
    ([torch.ones(1, 1, 3, 3, dtype=torch.long)], TypeError),
])
def test_rollout_rejects_bad_attns(bad, error):
    with pytest.raises(error, match="attns"):
        attention_rollout(bad)


@pytest.mark.parametrize("residual", [-0.1, 1.5, "0.5", True])
def test_rollout_rejects_bad_residual(residual):
    with pytest.raises((TypeError, ValueError), match="residual"):
        attention_rollout(_random_attns(1, 1, 1, 2), residual)


# --- flow ------------------------------------------------------------------------------------------------------

def _brute_force_flow(layers, source, sink):
    """Max-flow = min cut: enumerate every cut of the layered graph that separates source from sink.

    layers: list of (n, n) capacity matrices, layers[l][i, j] = capacity (l, j) -> (l + 1, i).
    """
    n, depth = layers[0].shape[0], len(layers)
    middle = [(l, i) for l in range(depth + 1) for i in range(n) if (l, i) not in ((0, source), (depth, sink))]
    best = math.inf
    for bits in itertools.product((False, True), repeat=len(middle)):
        s_side = {(0, source)} | {node for node, keep in zip(middle, bits) if keep}
        cut = sum(float(layers[l][i, j]) for l in range(depth) for i in range(n) for j in range(n)
                  if (l, j) in s_side and (l + 1, i) not in s_side)
        best = min(best, cut)
    return best


@pytest.mark.parametrize("n_layers, n", [(2, 2), (3, 2), (2, 3), (3, 3)])
def test_flow_equals_a_brute_force_min_cut(n_layers, n):
    attns = _random_attns(n_layers, 1, 2, n, seed=n_layers * 10 + n)
    flow = attention_flow(attns, 0.4)
    layers = [residual_attention(a, 0.4)[0] for a in attns]
    for i, j in itertools.product(range(n), range(n)):
        assert flow[0, i, j].item() == pytest.approx(_brute_force_flow(layers, j, i), abs=1e-9), (i, j)


def test_flow_on_one_layer_is_the_edge_and_on_two_layers_the_sum_of_bottlenecks():
    (a,) = _random_attns(1, 2, 3, 4)
    torch.testing.assert_close(attention_flow([a]), residual_attention(a))
    a1, a2 = _random_attns(2, 2, 2, 5, seed=3)
    e1, e2 = residual_attention(a1), residual_attention(a2)
    # Paths j -> k -> i share no edge, so the max-flow is the sum over k of each path's bottleneck.
    expected = torch.minimum(e2[:, :, :, None], e1[:, None, :, :]).sum(2)  # (B, i, k, j) summed over k
    torch.testing.assert_close(attention_flow([a1, a2]), expected)
    torch.testing.assert_close(attention_flow([a1, a2], output=3), expected[:, 3])
    torch.testing.assert_close(attention_flow([a1, a2], output=-1), expected[:, 4])


def test_flow_is_bounded_by_every_cut_and_keeps_dtype():
    attns = _random_attns(3, 2, 2, 4, dtype=torch.float32)
    flow = attention_flow(attns)
    assert flow.dtype == torch.float32 and flow.shape == (2, 4, 4)
    first = residual_attention(attns[0])
    # The cut around the source (its out-edges) and around the sink (its in-edges, one row of the top layer).
    assert (flow <= first.sum(-2)[:, None, :] + 1e-5).all()
    assert (flow <= residual_attention(attns[-1]).sum(-1)[:, :, None] + 1e-5).all()


def test_flow_rejects_a_bad_output():
    with pytest.raises(ValueError, match="output"):
        attention_flow(_random_attns(1, 1, 1, 3), output=3)


# --- gradient x input and integrated gradients, against captum --------------------------------------------------

def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 3)).double()


def test_grad_x_input_equals_captum():
    captum = pytest.importorskip("captum.attr")
    model = _mlp()
    x = torch.randn(6, 5, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    ours = grad_x_input(model, x, target=target)
    theirs = captum.InputXGradient(model).attribute(x.clone().requires_grad_(True), target=target)
    torch.testing.assert_close(ours, theirs.detach())
    torch.testing.assert_close(grad_x_input(model, x, target=1),
                               captum.InputXGradient(model).attribute(x.clone().requires_grad_(True), target=1).detach())


@pytest.mark.parametrize("method", IG_METHODS)
def test_integrated_gradients_equals_captum(method):
    captum = pytest.importorskip("captum.attr")
    model = _mlp(1)
    x, base = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    target = torch.tensor([2, 0, 1, 2])
    ours = integrated_gradients(model, x, base, target=target, steps=17, method=method)
    theirs = captum.IntegratedGradients(model).attribute(x, baselines=base, target=target, n_steps=17, method=method)
    # captum builds its alphas with a float32 linspace: agreement to ~1e-8, not to float64 rounding.
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_integrated_gradients_on_the_encoder_equals_captum():
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = EncoderClassifier(7, 3, d_model=8, n_layers=2, n_heads=2, max_len=6).double().eval()
    tokens = torch.randint(0, 7, (3, 6))
    emb = model.embed(tokens).detach()
    target = torch.tensor([0, 2, 1])
    ours = integrated_gradients(model.forward_embeddings, emb, target=target, steps=9)
    theirs = captum.IntegratedGradients(model.forward_embeddings).attribute(
        emb, baselines=torch.zeros_like(emb), target=target, n_steps=9, method="riemann_middle")
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_integrated_gradients_completeness_error_shrinks_with_steps():
    model = _mlp(2)
    x, base = 2 * torch.randn(3, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64)
    gap = model(x)[:, 1] - model(base)[:, 1]
    errors = []
    for steps in (4, 16, 64):
        errors.append((integrated_gradients(model, x, base, target=1, steps=steps).sum(-1) - gap).abs().max().item())
    assert errors[2] < errors[1] < errors[0] and errors[2] < 1e-3, errors
    # Midpoint rule: O(1/m^2); four times the steps cuts the error by about 16 (at least 8 here).
    assert errors[1] < errors[0] / 8 and errors[2] < errors[1] / 8, errors


def test_attributions_of_a_linear_model_are_exact():
    w = torch.randn(5, dtype=torch.float64)
    x, base = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    f = lambda z: z @ w  # noqa: E731 - (B,) scores
    torch.testing.assert_close(grad_x_input(f, x), x * w)
    torch.testing.assert_close(integrated_gradients(f, x, base, steps=3), (x - base) * w)
    # Occluding position l (set to 0) of a linear model removes exactly its term x_l w_l.
    torch.testing.assert_close(occlusion_importance(lambda z: z[..., 0] @ w, x[..., None]), x * w)


def test_occlusion_on_tokens_equals_a_loop():
    torch.manual_seed(0)
    model = BiGRUAttentionClassifier(9, 2, d_emb=4, d_hidden=5).eval()
    tokens = torch.randint(1, 9, (3, 7))
    imp = occlusion_importance(model, tokens, baseline=0, target=1)
    with torch.no_grad():
        full = model(tokens)[:, 1]
        for l in range(7):
            t = tokens.clone()
            t[:, l] = 0
            torch.testing.assert_close(imp[:, l], full - model(t)[:, 1])


@pytest.mark.parametrize("call, error", [
    (lambda f, x: grad_x_input(f, x, target=0), ValueError),  # (B,) scores with a target
    (lambda f, x: integrated_gradients(f, x, steps=0), ValueError),
    (lambda f, x: integrated_gradients(f, x, method="gausslegendre"), ValueError),
    (lambda f, x: integrated_gradients(f, x, torch.zeros(3)), ValueError),  # baseline does not broadcast
    (lambda f, x: grad_x_input(f, x.long()), TypeError),
])
def test_attribution_bad_inputs(call, error):
    with pytest.raises(error, match="target|steps|method|baseline|inputs"):
        call(lambda z: z.sum(-1), torch.randn(2, 4))


def test_a_two_dim_output_needs_a_target():
    with pytest.raises(ValueError, match="target"):
        grad_x_input(_mlp(), torch.randn(2, 5, dtype=torch.float64))


# --- rank agreement --------------------------------------------------------------------------------------------

def _pairs(a, b):
    """Kendall tau-b and Spearman by definition: counting pairs, and ranks by counting smaller/equal values."""
    n = len(a)
    conc = disc = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0:
                ties_a += 1
            if db == 0:
                ties_b += 1
            if da * db > 0:
                conc += 1
            elif da * db < 0:
                disc += 1
    n0 = n * (n - 1) / 2
    tau = (conc - disc) / math.sqrt((n0 - ties_a) * (n0 - ties_b))
    rank = lambda v: [sum(u < x for u in v) + (sum(u == x for u in v) + 1) / 2 for x in v]  # noqa: E731
    ra, rb = rank(a), rank(b)
    ma, mb = sum(ra) / n, sum(rb) / n
    rho = sum((x - ma) * (y - mb) for x, y in zip(ra, rb)) / math.sqrt(
        sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return rho, tau


@settings(max_examples=30)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=3, max_size=9))
def test_rank_agreement_equals_counting_with_ties(pairs):
    a = torch.tensor([float(p[0]) for p in pairs])
    b = torch.tensor([float(p[1]) for p in pairs])
    if len(set(a.tolist())) < 2 or len(set(b.tolist())) < 2:
        assert rank_agreement(a, b).isnan() and rank_agreement(a, b, "kendall").isnan()  # no ranking
        return
    rho, tau = _pairs(a.tolist(), b.tolist())
    assert rank_agreement(a, b).item() == pytest.approx(rho, abs=1e-12)
    assert rank_agreement(a, b, "kendall").item() == pytest.approx(tau, abs=1e-12)


def test_rank_agreement_batch_mask_and_extremes():
    a = torch.randn(3, 2, 6, dtype=torch.float64)
    assert torch.allclose(rank_agreement(a, 2 * a + 1), torch.ones(3, 2, dtype=torch.float64))
    assert torch.allclose(rank_agreement(a, -a, "kendall"), -torch.ones(3, 2, dtype=torch.float64))
    assert torch.allclose(rank_agreement(a, a.exp()), torch.ones(3, 2, dtype=torch.float64))  # only ranks count
    b = torch.randn(3, 2, 6, dtype=torch.float64)
    mask = torch.rand(3, 2, 6) > 0.3
    mask[..., :2] = True
    got = rank_agreement(a, b, mask=mask)
    for i, j in itertools.product(range(3), range(2)):
        m = mask[i, j]
        assert got[i, j].item() == pytest.approx(rank_agreement(a[i, j, m], b[i, j, m]).item())
    torch.testing.assert_close(average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])),
                               torch.tensor([3.5, 1.0, 3.5, 2.0], dtype=torch.float64))


def test_rank_agreement_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        rank_agreement(torch.ones(3), torch.ones(3), "pearson")
    with pytest.raises(ValueError, match="broadcast"):
        rank_agreement(torch.ones(3), torch.ones(4))
    with pytest.raises(TypeError, match="mask"):
        rank_agreement(torch.ones(3), torch.ones(3), mask=torch.ones(3))


# --- impermissible penalty -------------------------------------------------------------------------------------

def test_penalty_is_minus_log_of_the_permitted_mass_and_zero_iff_no_mass():
    weights = torch.tensor([[0.2, 0.5, 0.3], [0.0, 0.9, 0.1]], dtype=torch.float64)
    mask = torch.tensor([[True, False, False], [True, False, True]])
    torch.testing.assert_close(impermissible_mass(weights, mask), torch.tensor([0.2, 0.1], dtype=torch.float64))
    torch.testing.assert_close(impermissible_penalty(weights, mask),
                               torch.tensor(-(math.log(0.8) + math.log(0.9)) / 2, dtype=torch.float64))
    zero_mass = torch.tensor([[0.0, 0.5, 0.5], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert impermissible_penalty(zero_mass, mask).item() == 0.0
    tiny = torch.tensor([[1e-9, 0.5, 0.5 - 1e-9], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert impermissible_penalty(tiny, mask).item() > 0.0
    full = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]], dtype=torch.float64)
    assert math.isfinite(impermissible_penalty(full, mask).item())


def test_penalty_gradient_moves_mass_away_and_broadcasts_over_heads():
    logits = torch.randn(2, 2, 2, 4, dtype=torch.float64, requires_grad=True)  # (B, H, Lq, Lk)
    mask = torch.zeros(2, 1, 1, 4, dtype=torch.bool)
    mask[..., 2] = True  # key 2 is impermissible for every head and query
    weights = torch.softmax(logits, -1)
    penalty = impermissible_penalty(weights, mask)
    torch.testing.assert_close(penalty, -torch.log1p(-weights[..., 2]).mean())
    (grad,) = torch.autograd.grad(penalty, logits)
    assert (grad[..., 2] > 0).all()  # gradient descent lowers the impermissible logit
    assert torch.autograd.gradcheck(lambda z: impermissible_penalty(torch.softmax(z, -1), mask), (logits,))


def test_penalty_bad_inputs():
    with pytest.raises(TypeError, match="mask"):
        impermissible_penalty(torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask"):
        impermissible_penalty(torch.ones(2, 3), torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="weights"):
        impermissible_penalty(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))


# --- the classifiers -------------------------------------------------------------------------------------------

def test_encoder_classifier_shapes_and_attention():
    torch.manual_seed(0)
    model = EncoderClassifier(11, 2, d_model=16, n_layers=4, n_heads=2, max_len=9)
    tokens = torch.randint(0, 11, (3, 9))
    logits, attns = model(tokens, return_attention=True)
    assert logits.shape == (3, 2) and len(attns) == 4
    for a in attns:
        assert a.shape == (3, 2, 9, 9)
        torch.testing.assert_close(a.sum(-1), torch.ones(3, 2, 9))
    torch.testing.assert_close(model.forward_embeddings(model.embed(tokens)), logits)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.full((1, 3), 11))


def test_bigru_classifier_attention_and_mask():
    torch.manual_seed(0)
    model = BiGRUAttentionClassifier(10, 3)
    tokens = torch.randint(0, 10, (4, 7))
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[:, 5:] = False
    logits, alpha = model(tokens, mask, return_attention=True)
    assert logits.shape == (4, 3) and alpha.shape == (4, 7)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(4))
    assert (alpha[:, 5:] == 0).all()
    with pytest.raises(TypeError, match="tokens"):
        model(torch.randn(4, 7))


def test_attnlib_imports_without_networkx(monkeypatch):
    import importlib

    import attnlib.interp.explain as explain
    monkeypatch.setitem(__import__("sys").modules, "networkx", None)  # `import networkx` now fails
    try:
        module = importlib.reload(explain)  # the module itself imports without networkx
        torch.testing.assert_close(module.attention_rollout(_random_attns(2, 1, 1, 3)).sum(-1),
                                   torch.ones(1, 3, dtype=torch.float64))
        with pytest.raises(ImportError, match=r"attnlib\[interp\]"):
            module.attention_flow(_random_attns(1, 1, 1, 3))
    finally:
        monkeypatch.undo()
        importlib.reload(explain)
