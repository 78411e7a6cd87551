"""Each lab's check cells must pass every *correct* answer, not only the instructor's (a check that fails
correct code is as much a defect as one that cannot fail).

``ALTERNATIVES`` holds, per lab, correct answers written another natural way (the default dtype float32,
another valid formula, another loop order), in the shape of ``tests/test_checks_catch_bugs.py``: the text
in the solution and the text that replaces it; the exercise's checks must PASS with it. Every covered lab
has at least one.

Every run here also enforces the exercise cells' ``forbidden`` metadata the way the grader does: each
forbidden attnlib name raises while code defined in an exercise cell that forbids it is on the stack (the
checks themselves may still call the reference). So the solutions and the alternatives are shown not to
call the references they are compared with.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import types

import pytest
from helpers import _code_cells

KERNEL_LABS = {"lab15_triton_basics", "lab16_flash_forward", "lab17_flash_backward",
               "lab18_decoding_and_sparse_kernels"}

ALTERNATIVES = {  # lab -> (exercise, text in the solution, a correct alternative)
    "lab14_heads_as_mechanisms": [
        # the induction score with an explicit loop over queries
        ("14.1", "    n = tokens.shape[1]\n    same = tokens[:, :, None] == tokens[:, None, :]  # (B, i, j)\n",
         "    b, h, n, _ = weights.shape\n"
         "    total, count = torch.zeros(h), 0\n"
         "    for bb in range(b):\n"
         "        for i in range(n):\n"
         "            ks = [j + 1 for j in range(i - 1) if tokens[bb, j] == tokens[bb, i]]\n"
         "            if ks:\n"
         "                total += weights[bb, :, i, ks].sum(-1)\n"
         "                count += 1\n"
         "    return total / max(count, 1)\n"),
        # the visible count as a minimum, the context mean as a sum over N
        ("14.4", "    a_ctx = weights[..., :n_context].mean(-1)\n",
         "    visible = torch.minimum(torch.arange(lq) + lk - lq - n_context + 1, torch.tensor(lk - n_context)).clamp(0)\n"
         "    a_ctx = weights[..., :n_context].sum(-1) / n_context\n"),
        ("14.5", "return logits_base + alpha * (logits_base - logits_masked)",
         "return (1 + alpha) * logits_base - alpha * logits_masked"),
        # the gate as a clone with the slices zeroed
        ("14.3", "        def hook(module, args, gate=gate):\n            return (args[0] * gate,)\n",
         "        def hook(module, args, off=off, d=mha.head_dim):\n"
         "            x = args[0].clone()\n"
         "            for head in off:\n"
         "                x[..., head * d:(head + 1) * d] = 0\n"
         "            return (x,) + args[1:]\n"),
    ],
    "lab01_scaled_dot_product": [
        # divide by sqrt(d) instead of multiplying by its inverse, and write the product as an einsum
        ("1.1", "    if scale is None:\n        scale = 1.0 / math.sqrt(q.shape[-1])\n    return (q @ k.transpose(-2, -1)) * scale\n",
         "    s = torch.einsum('...id,...jd->...ij', q, k)\n"
         "    return s / math.sqrt(q.shape[-1]) if scale is None else s * scale\n"),
        # torch.softmax on -inf-filled scores, NaN rows of fully masked entries replaced by zeros
        ("1.3", "    row_max = scores.amax(dim=-1, keepdim=True)\n",
         "    return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)\n"
         "    row_max = scores.amax(dim=-1, keepdim=True)\n"),
        # divide before the matmul (normalise the chunk's weights at the end per row) with a clamp
        ("1.5", "    return torch.where(ell > 0, acc / torch.where(ell > 0, ell, torch.ones_like(ell)), torch.zeros_like(acc))",
         "    return acc / ell.clamp_min(torch.finfo(acc.dtype).tiny)"),
    ],
    "lab02_seq2seq_and_pointers": [
        # the additive score as an einsum over the hidden units, general as q @ (W @ k^T)
        ("2.1", "    return hidden @ w\n", "    return torch.einsum('...ijh,h->...ij', hidden, w)\n"),
        ("2.1", "    return (q @ W) @ k.transpose(-2, -1)\n", "    return q @ (W @ k.transpose(-2, -1))\n"),
        # torch.softmax over -inf-filled scores, fully masked rows zeroed, the context as an einsum
        ("2.2", "    weights = attnlib.core.masked_softmax(scores, mask)\n    return weights @ values, weights\n",
         "    if mask is not None:\n        scores = scores.masked_fill(~mask, float('-inf'))\n"
         "    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)\n"
         "    return torch.einsum('...ts,...sd->...td', weights, values), weights\n"),
        # the Gaussian written as exp(-0.5 ((s - p) / sigma)^2), the softmax by hand
        ("2.3", "    align = attnlib.core.masked_softmax(scores, window)\n    sigma = half_width / 2\n"
         "    return align * torch.exp(-distance**2 / (2 * sigma**2))\n",
         "    e = torch.exp(scores - scores.masked_fill(~window, float('-inf')).amax(-1, keepdim=True)"
         ".nan_to_num(0.0, neginf=0.0)) * window\n"
         "    align = e / e.sum(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)\n"
         "    sigma = 0.5 * half_width\n"
         "    return align * torch.exp(-0.5 * (distance / sigma) ** 2)\n"),
        # probabilities by torch.softmax with -inf on the disallowed positions, NaN rows zeroed
        ("2.4", "    probs = attnlib.core.masked_softmax(scores, valid & ~chosen)\n",
         "    probs = torch.softmax(scores.masked_fill(~(valid & ~chosen), float('-inf')), dim=-1).nan_to_num(0.0)\n"),
    ],
    "lab03_latent_alignment": [
        # the log-sum-exp written out with its max shift, the prior normalised by subtracting its logsumexp
        ("3.1", "    return torch.logsumexp(torch.log_softmax(prior_logits, dim=-1) + emission_logp, dim=-1)\n",
         "    joint = prior_logits - torch.logsumexp(prior_logits, -1, keepdim=True) + emission_logp\n"
         "    top = joint.amax(-1, keepdim=True)\n"
         "    return (top + (joint - top).exp().sum(-1, keepdim=True).log()).squeeze(-1)\n"),
        # the mixture as an einsum and the target picked with take_along_dim
        ("3.2", "    mixed = (p[..., :, None] * emission_logits).sum(-2)  # (..., V)\n"
         "    return torch.log_softmax(mixed, dim=-1).gather(-1, y[..., None]).squeeze(-1)\n",
         "    mixed = torch.einsum('...n,...nv->...v', p, emission_logits)\n"
         "    return torch.take_along_dim(mixed - mixed.logsumexp(-1, keepdim=True), y[..., None], -1)[..., 0]\n"),
        # log p(z) as logit minus logsumexp, gathered before expanding
        ("3.3", "    logp = torch.log_softmax(logits, dim=-1).expand(*z.shape, logits.shape[-1])\n",
         "    logp = (logits - logits.logsumexp(-1, keepdim=True)).expand(*z.shape, logits.shape[-1])\n"),
        # the ELBO as E_q[log p + log p(y|z)] plus the entropy of q (torch.special.entr has 0 log 0 = 0)
        ("3.4", "    return torch.where(q > 0, q * (log_p + emission_logp - log_q), torch.zeros_like(q)).sum(-1)\n",
         "    return (torch.where(q > 0, q * (log_p + emission_logp), 0.0) + torch.special.entr(q)).sum(-1)\n"),
    ],
    "lab04_position": [
        # everything in float32, the default dtype (issue 21: the check once demanded float64 angles)
        ("4.1", "    theta = base ** (-torch.arange(d // 2, dtype=torch.float64) * 2 / d)\n"
         "    angle = positions.double()[:, None] * theta  # (L, d/2)\n"
         "    cos = torch.cat([angle.cos(), angle.cos()], dim=-1).to(x.dtype)\n"
         "    sin = torch.cat([angle.sin(), angle.sin()], dim=-1).to(x.dtype)\n",
         "    theta = 1.0 / base ** (torch.arange(0, d, 2) / d)\n"
         "    angle = torch.outer(positions.float(), theta)  # (L, d/2) float32\n"
         "    cos, sin = angle.cos().repeat(1, 2), angle.sin().repeat(1, 2)\n"),
        # the slopes as one float32 tensor expression
        ("4.2", "    def power_of_two(n):\n        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]\n\n"
         "    p = 2 ** int(math.floor(math.log2(n_heads)))\n"
         "    return torch.tensor(power_of_two(p) + power_of_two(2 * p)[0::2][: n_heads - p])\n",
         "    def power_of_two(n):\n        return 2.0 ** (-8.0 * torch.arange(1, n + 1) / n)\n\n"
         "    p = 1 << (n_heads.bit_length() - 1)\n"
         "    return torch.cat([power_of_two(p), power_of_two(2 * p)[0::2][: n_heads - p]])\n"),
        # queries scaled first, the relative logits picked with take_along_dim, the causal mask by tril
        ("4.3", "    rel_logits = q @ rel_k.T  # (..., L, 2K+1)\n"
         "    scores = q @ k.transpose(-2, -1) + rel_logits.gather(-1, idx.expand(*rel_logits.shape[:-1], length))\n"
         "    scores = scores / math.sqrt(q.shape[-1])\n"
         "    if causal:\n"
         "        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float(\"-inf\"))\n",
         "    qs = q / math.sqrt(q.shape[-1])\n"
         "    scores = qs @ k.mT + torch.take_along_dim(qs @ rel_k.T, idx.expand(*q.shape[:-1], length), dim=-1)\n"
         "    if causal:\n"
         "        scores = torch.where(torch.ones(length, length).tril().bool(), scores, float(\"-inf\"))\n"),
        # suffix sums as total minus prefix plus the own gate, the future zeroed with torch.tril
        ("4.4", "    g = gates * torch.ones(length, length).tril()  # key t > i does not count for query i\n"
         "    return g.flip(-1).cumsum(-1).flip(-1)  # suffix sums: zero above the diagonal too\n",
         "    g = torch.tril(gates)\n"
         "    return torch.tril(g.sum(-1, keepdim=True) - g.cumsum(-1) + g)\n"),
    ],
    "lab05_length_generalization": [
        # kept keys after j counted as total minus prefix; the softmax by torch.softmax with -inf, NaN rows zeroed
        ("5.1", "    dist = kept.flip(-1).cumsum(-1).flip(-1) - kept  # kept keys t with j < t <= i\n"
         "    weights = attnlib.core.masked_softmax(scores - slopes[:, None, None] * dist, keep)\n",
         "    dist = kept.sum(-1, keepdim=True) - kept.cumsum(-1)\n"
         "    logits = (scores - slopes.view(-1, 1, 1) * dist).masked_fill(~keep, float('-inf'))\n"
         "    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)\n"),
        # the Gaussian's log-density (its per-row constant cancels in the softmax), future keys at -inf
        ("5.2", "    logits = -((j - mu[..., None]) ** 2) / (2 * sigma[..., None] ** 2)\n"
         "    return attnlib.core.masked_softmax(logits, torch.ones(length, length, dtype=torch.bool).tril())\n",
         "    logits = torch.distributions.Normal(mu[..., None], sigma[..., None]).log_prob(j)\n"
         "    future = torch.ones(length, length, dtype=torch.bool).triu(1)\n"
         "    return torch.softmax(logits.masked_fill(future, float('-inf')), dim=-1)\n"),
    ],
    "lab06_normalizers": [
        # tau as the largest of the candidate thresholds (cumsum_k - 1) / k, no support size needed
        ("6.1", "    k_z = (1 + k * z_sorted > cumsum).sum(dim=-1, keepdim=True)\n"
         "    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z.to(z.dtype)\n",
         "    tau = ((cumsum - 1) / k).amax(dim=-1, keepdim=True)\n"),
        # the support mean with torch.where and a boolean count
        ("6.2", "    s = (p > 0).to(grad.dtype)\n    mean = (grad * s).sum(-1, keepdim=True) / s.sum(-1, keepdim=True)\n"
         "    return s * (grad - mean)\n",
         "    on = p > 0\n    mean = torch.where(on, grad, 0.0).sum(-1, keepdim=True) / on.sum(-1, keepdim=True)\n"
         "    return torch.where(on, grad - mean, 0.0)\n"),
        # a wider bracket [max x - 1, max x] (the sum is 0 at tau = max x), bisected the same number of times
        ("6.3", "    lo, hi = x_max - 1, x_max - z.shape[-1] ** (1 - alpha)\n", "    lo, hi = x_max - 1, x_max.clone()\n"),
        # the sink folded in with logaddexp: weights exp(z - log(e^sink + sum e^z))
        ("6.4", "    sink = torch.full((*z.shape[:-1], 1), float(sink_logit), dtype=z.dtype)\n"
         "    return torch.softmax(torch.cat([z, sink], dim=-1), dim=-1)[..., :-1]\n",
         "    total = torch.logaddexp(z.logsumexp(-1, keepdim=True), torch.tensor(float(sink_logit), dtype=z.dtype))\n"
         "    return torch.exp(z - total)\n"),
    ],
    "lab07_multi_head_family": [
        # unflatten/permute and permute/flatten instead of view/transpose and reshape
        ("7.1", "    b, l, _ = x.shape\n    return x.view(b, l, n_heads, -1).transpose(1, 2)\n",
         "    return x.unflatten(-1, (n_heads, -1)).permute(0, 2, 1, 3)\n"),
        ("7.1", "    b, h, l, d = x.shape\n    return x.transpose(1, 2).reshape(b, l, h * d)\n",
         "    return x.permute(0, 2, 1, 3).flatten(2)\n"),
        # the kv heads indexed per query head, attention written out in float32 with a tril mask
        ("7.2", "    k = split_heads(x @ w_k.T, n_kv_heads).repeat_interleave(group, dim=1)  # (B, H, L, d_head)\n"
         "    v = split_heads(x @ w_v.T, n_kv_heads).repeat_interleave(group, dim=1)\n"
         "    return merge_heads(scaled_dot_product_attention(q, k, v, causal=causal)) @ w_o.T\n",
         "    kv_of = torch.arange(n_heads) // group\n"
         "    k = split_heads(x @ w_k.T, n_kv_heads)[:, kv_of]\n"
         "    v = split_heads(x @ w_v.T, n_kv_heads)[:, kv_of]\n"
         "    s = q @ k.mT / q.shape[-1] ** 0.5\n"
         "    if causal:\n"
         "        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float('-inf'))\n"
         "    return merge_heads(torch.softmax(s, dim=-1) @ v) @ w_o.T\n"),
        # the same products in another order
        ("7.3", "    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_elem\n",
         "    return bytes_per_elem * head_dim * n_kv_heads * n_layers * 2\n"),
        # each step's best removal by max() over the remaining heads (max keeps the first of equal scores)
        ("7.4", "        best = None\n        for layer in range(n_layers):\n            for head in range(n_heads):\n"
         "                if mask[layer, head] == 0:\n                    continue\n"
         "                trial = mask.clone()\n                trial[layer, head] = 0\n"
         "                score = evaluate(trial)\n"
         "                if best is None or score > best[0]:\n                    best = (score, layer, head)\n"
         "        score, layer, head = best\n",
         "        def removed(lh):\n            trial = mask.clone()\n            trial[lh] = 0\n"
         "            return trial\n"
         "        left = [(l, h) for l in range(n_layers) for h in range(n_heads) if mask[l, h] != 0]\n"
         "        tried = [(evaluate(removed(lh)), lh) for lh in left]\n"
         "        score, (layer, head) = max(tried, key=lambda t: t[0])\n"),
    ],
    "lab10_kv_cache_and_decoding": [
        # nbytes from numel, evict with index_select
        ("10.1", "return 2 * self.k.shape[0] * self.k.shape[1] * self.n * self.k.shape[3] * self.k.element_size()",
         "return (self.keys().numel() + self.values().numel()) * self.k.element_size()"),
        ("10.1", "k, v = self.keys()[:, :, idx], self.values()[:, :, idx]",
         "k, v = self.keys().index_select(2, idx), self.values().index_select(2, idx)"),
        # prefill the prompt one token at a time too
        ("10.2", "logits = model.forward_cached(prompt, caches, 0)[0][:, -1:]  # (B, 1, V)",
         "for s in range(p):\n            logits = model.forward_cached(prompt[:, s:s + 1], caches, s)[0]"),
        # sort the older positions by score and append the recent ones
        ("10.3", "    s = scores.clone()\n    if recent:",
         "    n = scores.shape[-1]\n    top = scores[..., :n - recent].argsort(-1, descending=True)[..., :budget - recent]\n"
         "    recent_idx = torch.arange(n - recent, n).expand(*scores.shape[:-1], recent)\n"
         "    return torch.cat([top, recent_idx], -1).sort(-1).values\n    s = scores.clone()\n    if recent:"),
        # recompute the renormalised output, then subtract
        ("10.4", "    return torch.where(rest[..., None] > 0, factor * (o - values), -o.expand_as(values))",
         "    safe = torch.where(rest > 0, rest, torch.ones_like(rest))[..., None]\n"
         "    return torch.where(rest[..., None] > 0, (o - weights[..., None] * values) / safe - o, -o.expand_as(values))"),
        # the basis from an SVD of the keys instead of eigh of the second moment
        ("10.5", "    u = torch.linalg.eigh(moment).eigenvectors.flip(-1)[..., :rank]  # (..., d, r)",
         "    u = torch.linalg.svd(keys, full_matrices=False).Vh.transpose(-2, -1)[..., :rank]"),
    ],
    "lab11_memory": [
        # the safe softmax as torch.softmax, the NaN of a row with nothing to attend to set to 0
        ("11.1", "    m = s.amax(-1, keepdim=True)\n    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))\n"
         "    e = torch.exp(s - m)\n    total = e.sum(-1, keepdim=True)\n"
         "    w = e / torch.where(total > 0, total, torch.ones_like(total))\n",
         "    w = torch.softmax(s, dim=-1).nan_to_num(0.0)\n"),
        # the write as an einsum outer product
        ("11.2", "return m + eta * err[..., :, None] * k[..., None, :]",
         "return m + eta * torch.einsum('...i,...j->...ij', err, k)"),
        # the gradient by autograd
        ("11.3", "grad = 2 * err.transpose(-2, -1) @ k / k.shape[-2]  # (..., dv, dk)",
         "leaf = m.detach().clone().requires_grad_(True)\n"
         "    grad = torch.autograd.grad(((k @ leaf.transpose(-2, -1) - v) ** 2).sum(-1).mean(-1).sum(), leaf)[0]"),
        # PyTorch's SDPA for the local part (square chunks: top-left causal = bottom-right)
        ("11.4", "out = attnlib.core.scaled_dot_product_attention(qc, kc, vc, causal=True)",
         "out = torch.nn.functional.scaled_dot_product_attention(qc, kc, vc, is_causal=True)"),
    ],
    "lab15_triton_basics": [
        # masked lanes loaded as 0 and the sum stored through tl.where-free masking (other=0.0 on both loads)
        ("15.1", "    x = tl.load(X + offsets, mask=mask)\n    y = tl.load(Y + offsets, mask=mask)\n",
         "    x = tl.load(X + offsets, mask=mask, other=0.0)\n    y = tl.load(Y + offsets, mask=mask, other=0.0)\n"),
        # exp2 with log2(e) folded in, the max taken with tl.max along axis 0 by keyword
        ("15.2", "    e = tl.exp(x - tl.max(x, 0))\n",
         "    e = tl.exp2((x - tl.max(x, axis=0)) * 1.4426950408889634)\n"),
        # pointer blocks advanced by BLOCK_K each step, tl.dot accumulating into acc
        ("15.3", "    for k0 in range(0, K, BLOCK_K):\n"
         "        a = tl.load(A + rows[:, None] * stride_am + (k0 + ks)[None, :],\n"
         "                    mask=(rows[:, None] < M) & ((k0 + ks)[None, :] < K), other=0.0)\n"
         "        b = tl.load(B + (k0 + ks)[:, None] * stride_bk + cols[None, :],\n"
         "                    mask=((k0 + ks)[:, None] < K) & (cols[None, :] < N), other=0.0)\n"
         "        acc += tl.dot(a, b)\n",
         "    a_ptrs = A + rows[:, None] * stride_am + ks[None, :]\n"
         "    b_ptrs = B + ks[:, None] * stride_bk + cols[None, :]\n"
         "    for k0 in range(0, tl.cdiv(K, BLOCK_K)):\n"
         "        k_left = K - k0 * BLOCK_K\n"
         "        a = tl.load(a_ptrs, mask=(rows[:, None] < M) & (ks[None, :] < k_left), other=0.0)\n"
         "        b = tl.load(b_ptrs, mask=(ks[:, None] < k_left) & (cols[None, :] < N), other=0.0)\n"
         "        acc = tl.dot(a, b, acc)\n"
         "        a_ptrs += BLOCK_K\n"
         "        b_ptrs += BLOCK_K * stride_bk\n"),
    ],
    "lab16_flash_forward": [
        # the row normalised by multiplying with the reciprocal of the sum, the product in float32
        ("16.1", "    p = p / tl.sum(p, 1)[:, None]\n    out = tl.dot(p.to(v.dtype), v)  # (BLOCK_M, D)\n",
         "    out = tl.dot(p.to(v.dtype), v) * (1.0 / tl.sum(p, 1))[:, None]\n"),
        # the online update with natural exponentials (log2 units converted back) and acc handed to tl.dot
        ("16.2", "        p = tl.math.exp2(s - m_new[:, None])\n        alpha = tl.math.exp2(m_i - m_new)  # rescales the old sums\n"
         "        l_i = l_i * alpha + tl.sum(p, 1)\n        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)\n",
         "        p = tl.exp((s - m_new[:, None]) * 0.6931471805599453)\n"
         "        alpha = tl.exp((m_i - m_new) * 0.6931471805599453)\n"
         "        l_i = l_i * alpha + tl.sum(p, 1)\n        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])\n"),
        # the visited-tile count stored as the loop bound divided by the tile (the same number as the counter)
        ("16.3", "    tl.store(VISITS + bh * tl.num_programs(0) + pid_m, visits)\n",
         "    tl.store(VISITS + bh * tl.num_programs(0) + pid_m, tl.cdiv(hi, BLOCK_N))\n"),
    ],
    "lab17_flash_backward": [
        # the causal mask applied to the scores (-inf) before the exponential, dS written as P dP - P delta
        ("17.1", "        p_t = tl.exp(s_t - lse[None, :])\n        if CAUSAL:\n"
         "            p_t = tl.where(offs_n[:, None] <= rows[None, :] + LK - LQ, p_t, 0.0)\n",
         "        if CAUSAL:\n"
         "            s_t = tl.where(offs_n[:, None] <= rows[None, :] + LK - LQ, s_t, float(\"-inf\"))\n"
         "        p_t = tl.exp(s_t - lse[None, :])\n"),
        ("17.1", "        ds_t = p_t * (dp_t - delta[None, :])\n", "        ds_t = p_t * dp_t - p_t * delta[None, :]\n"),
        # the two kernels launched in the other order
        ("17.3", "        dk, dv = attention_dkdv(q, k, v, o, do, lse, causal=ctx.causal)\n"
         "        dq = attention_dq(q, k, v, o, do, lse, causal=ctx.causal)\n",
         "        dq = attention_dq(q, k, v, o, do, lse, causal=ctx.causal)\n"
         "        dk, dv = attention_dkdv(q, k, v, o, do, lse, causal=ctx.causal)\n"),
    ],
    "lab18_decoding_and_sparse_kernels": [
        # the chunk weights as torch.softmax of the log-sum-exps, NaN (every chunk empty) replaced by 0
        ("18.1", "    m = lse_parts.amax(dim=-1, keepdim=True)  # (..., 1)\n",
         "    return (torch.softmax(lse_parts, dim=-1).nan_to_num(0.0)[..., None] * o_parts).sum(-2)\n"),
        # the dense window mask built and reduced tile by tile (any entry allowed in the tile)
        ("18.3", "    nb = -(-length // block_size)\n",
         "    nb = -(-length // block_size)\n"
         "    i = torch.arange(nb * block_size)\n"
         "    diff = i[:, None] - i[None, :]\n"
         "    dense = (diff >= 0) & (diff < window) & (i[:, None] < length) & (i[None, :] < length)\n"
         "    return dense.view(nb, block_size, nb, block_size).any(3).any(1)\n"),
    ],
}
CASES = [(lab, *a) for lab, alternatives in ALTERNATIVES.items() for a in alternatives]


def _exercise_file(lab: str, exercise) -> str:
    return f"<{lab} exercise {exercise}>"


def _resolve_parent(dotted: str):
    """(object holding the attribute, attribute name) for an attnlib dotted name."""
    parts = dotted.split(".")
    for n in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ModuleNotFoundError:
            continue
        for name in parts[n:-1]:
            obj = getattr(obj, name)
        return obj, parts[-1]
    raise ImportError(dotted)


@contextlib.contextmanager
def forbidden_guard(lab: str, cells):
    """Make each exercise's forbidden names raise while that exercise's code is on the stack."""
    banned: dict[str, set[str]] = {}  # dotted name -> code filenames of the exercises that forbid it
    for cell in cells:
        if "exercise" in cell.metadata.get("tags", []):
            for name in cell.metadata.get("forbidden", []):
                banned.setdefault(name, set()).add(_exercise_file(lab, cell.metadata["exercise"]))
    undo = []

    def refuse(name: str, files: set) -> None:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename in files:
                raise AssertionError(f"{frame.f_code.co_filename[1:-1]}: calls {name}, which it must not use")
            frame = frame.f_back

    try:
        for name, files in banned.items():
            parent, attr = _resolve_parent(name)
            original = getattr(parent, attr)
            if isinstance(original, type):  # a class: refuse in its constructor
                init = original.__dict__.get("__init__")
                base_init = original.__init__

                def guarded_init(self, *args, __name=name, __files=files, __init=base_init, **kwargs):
                    refuse(__name, __files)
                    __init(self, *args, **kwargs)

                original.__init__ = guarded_init
                undo.append(lambda c=original, i=init: (setattr(c, "__init__", i) if i is not None
                                                        else delattr(c, "__init__")))
            else:
                def guarded(*args, __name=name, __files=files, __fn=original, **kwargs):
                    refuse(__name, __files)
                    return __fn(*args, **kwargs)

                functools.update_wrapper(guarded, original)
                setattr(parent, attr, guarded)
                undo.append(lambda p=parent, a=attr, o=original: setattr(p, a, o))
        yield
    finally:
        for restore in reversed(undo):
            restore()


def run_guarded(lab: str, exercise=None, old: str = "", new: str = "") -> None:
    """Like ``helpers.run_checks`` (setup cell, every exercise cell with ``old`` replaced by ``new`` in
    ``exercise``'s cells, the check cells of ``exercise`` or of all), with the forbidden names guarded."""
    from IPython.core.inputtransformer2 import TransformerManager

    cells = _code_cells(lab)
    transform = TransformerManager().transform_cell
    module = types.ModuleType(f"{lab}_under_test")
    sys.modules[module.__name__] = module
    with forbidden_guard(lab, cells):
        exec(compile(transform(cells[0].source), f"{lab}:setup", "exec"), module.__dict__)
        for cell in cells[1:]:
            tags, which = cell.metadata.get("tags", []), cell.metadata.get("exercise")
            source = cell.source
            if "exercise" in tags:
                if old and which == exercise:
                    assert old in source, f"alternative's target not found in {lab} {which}: {old}"
                    source = source.replace(old, new)
                filename = _exercise_file(lab, which)
            elif "check" in tags and exercise in (None, which):
                filename = f"{lab}:check {which}"
            else:
                continue
            exec(compile(transform(source), filename, "exec"), module.__dict__)


def _needs_triton(lab: str) -> None:
    if lab in KERNEL_LABS:
        pytest.importorskip("triton")


@pytest.mark.parametrize("lab", ALTERNATIVES)
def test_the_solution_passes_without_its_forbidden_references(lab):
    _needs_triton(lab)
    run_guarded(lab)


@pytest.mark.parametrize("lab, exercise, old, new", CASES, ids=[f"{c[0][:5]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_a_correct_alternative_passes_its_checks(lab, exercise, old, new):
    _needs_triton(lab)
    run_guarded(lab, exercise, old, new)


def test_the_guard_refuses_a_call_to_the_reference():
    """Exercise 1.3 answered by calling attnlib's masked_softmax fails, and the guard is undone afterwards."""
    import attnlib

    original = attnlib.core.masked_softmax
    with pytest.raises(AssertionError, match="exercise 1.3: calls attnlib.core.masked_softmax"):
        run_guarded("lab01_scaled_dot_product", "1.3", "    row_max = scores.amax(dim=-1, keepdim=True)\n",
                    "    return attnlib.core.masked_softmax(scores, mask)\n")
    assert attnlib.core.masked_softmax is original
