"""Each lab's check cells must fail on wrong answers (a check that cannot fail is a defect).

Covered: labs 01-10, 11, 12, 13, 14, the kernel labs 15-18 and lab 19; every exercise of a covered lab has at least one mutation.
Each mutation breaks one exercise of a lab's solution the way a student might (the comments say how);
running that exercise's check cells must then raise an AssertionError naming the exercise, before any
kernel writes outside a buffer. Every unbroken solution passes all of its checks. The kernel labs
(15-18) run in Triton's interpreter here, as on any CPU.
"""

import pytest
from helpers import _code_cells, run_checks

MUTATIONS = {  # lab -> (exercise, text in the solution, the broken text)
    "lab01_scaled_dot_product": [
        ("1.1", "scale = 1.0 / math.sqrt(q.shape[-1])", "scale = 1.0"),  # forgot the default scale
        ("1.1", "q @ k.transpose(-2, -1)) * scale", "q @ k.transpose(-1, -2).contiguous()) * scale * 1.001"),
        ("1.2", "return j <= i + (lk - lq)", "return j <= i"),  # top-left instead of bottom-right
        ("1.2", "< lengths[:, None]", "<= lengths[:, None]"),  # off by one
        ("1.3", "e = torch.exp(scores - row_max)", "e = torch.exp(scores)"),  # overflows
        ("1.3", "return e / torch.where(total > 0, total, torch.ones_like(total))", "return e / total"),  # NaN rows
        ("1.4", "mask = c if mask is None else mask & c", "mask = c"),  # causal drops the user's mask
        ("1.4", "return (weights @ v.float()).to(q.dtype), weights",
         "return (weights @ v.float()).to(q.dtype), weights.mT"),
        ("1.5", "correction = torch.exp(m - shift)", "correction = torch.ones_like(m)"),  # no rescaling
        ("1.5", "s = s.masked_fill(key_pos > query_pos",
         "s = s.masked_fill(key_pos > query_pos + 1"),  # causal off by one
    ],
    "lab02_seq2seq_and_pointers": [
        ("2.1", "return q @ k.transpose(-2, -1)\n",
         "return q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5\n"),  # Luong's dot score has no scale
        ("2.1", "hidden = torch.tanh(", "hidden = ("),  # forgot the tanh: additive becomes linear
        ("2.1", "(q @ W_q.T)[..., :, None, :] + (k @ W_k.T)[..., None, :, :]",
         "(q @ W_q.T)[..., None, :, :] + (k @ W_k.T)[..., :, None, :]"),  # (Lk, Lq) instead of (Lq, Lk)
        ("2.2", "weights = attnlib.core.masked_softmax(scores, mask)",
         "weights = torch.softmax(scores, -1)"),  # forgot the mask: padding attended
        ("2.2", "return weights @ values, weights", "return weights, weights @ values"),  # returned in the wrong order
        ("2.3", "sigma = half_width / 2", "sigma = half_width"),  # sigma = D instead of D/2
        ("2.3", "window = distance.abs() <= half_width", "window = distance.abs() < half_width"),  # edge left out
        ("2.3", "align = attnlib.core.masked_softmax(scores, window)",
         "align = torch.softmax(scores, -1) * window"),  # softmax over all positions, then cut the window
        ("2.3", "(2 * sigma**2)", "sigma**2"),  # Gaussian without the 2
        ("2.3", "window = window & mask", "window = window"),  # padding inside the window attended
        ("2.3", "distance = s - centers[..., None]", "distance = s - centers[..., None].detach()"),  # no grad to p_t
        ("2.4", "valid & ~chosen", "valid"),  # may point twice at the same position
        ("2.4", "return probs, probs.argmax(-1)", "return probs, scores.argmax(-1)"),  # argmax of unmasked scores
        ("2.4", "return probs, probs.argmax(-1)", "return probs.argmax(-1), probs"),  # returned in the wrong order
    ],
    "lab03_latent_alignment": [
        ("3.1", "torch.log_softmax(prior_logits, dim=-1) + emission_logp", "prior_logits + emission_logp"),  # no prior
        ("3.1", "torch.log_softmax(prior_logits, dim=-1) + emission_logp, dim=-1)",
         "torch.log_softmax(prior_logits, dim=-1) + emission_logp, dim=0)"),  # logsumexp over the wrong axis
        ("3.1", "torch.logsumexp(torch.log_softmax(prior_logits, dim=-1) + emission_logp, dim=-1)",
         "torch.log((torch.softmax(prior_logits, dim=-1) * emission_logp.exp()).sum(-1))"),  # underflows
        ("3.1", "torch.logsumexp(torch.log_softmax(prior_logits, dim=-1) + emission_logp, dim=-1)",
         "torch.log(torch.exp(torch.log_softmax(prior_logits, dim=-1) + emission_logp).sum(-1))"),  # no max shift
        ("3.2", "p = torch.softmax(prior_logits, dim=-1)", "p = prior_logits"),  # prior logits used as weights
        ("3.2", "torch.log_softmax(mixed, dim=-1).gather", "mixed.gather"),  # the logit, not the log-probability
        ("3.2", "(p[..., :, None] * emission_logits).sum(-2)",
         "(p[..., :, None] * emission_logits.softmax(-1)).sum(-2).log()"),  # mixes probabilities (latent, not soft)
        ("3.3", "(f - b).detach()", "f.detach()"),  # baseline ignored
        ("3.3", "(f - b).detach()", "(f + b).detach()"),  # baseline added
        ("3.3", "return f + (f - b)", "return f.detach() + (f - b)"),  # reward's own gradient dropped
        ("3.3", "return f + (f - b).detach() * (logp_z - logp_z.detach())",
         "return (f - b).detach() * logp_z"),  # textbook surrogate: right gradient, wrong value
        ("3.3", "logp = torch.log_softmax(logits, dim=-1)", "logp = logits"),  # logits are not log-probabilities
        ("3.4", "q * (log_p + emission_logp - log_q)", "q * (log_p + emission_logp)"),  # entropy of q left out
        ("3.4", "torch.where(q > 0, q * (log_p + emission_logp - log_q), torch.zeros_like(q)).sum(-1)",
         "(q * (log_p + emission_logp - log_q)).sum(-1)"),  # 0 * log 0 gives NaN
        ("3.4", ") - attnlib.prob.kl_categorical(", ") + attnlib.prob.kl_categorical("),  # KL added
        ("3.4", "post_logits, prior_logits)", "prior_logits, post_logits)"),  # KL(p || q) instead of KL(q || p)
    ],
    "lab04_position": [
        ("4.1", "* 2 / d)", "/ d)"),  # theta_i = base^(-i/d)
        ("4.1", "torch.cat([-x2, x1], dim=-1)", "torch.cat([x2, -x1], dim=-1)"),  # rotates the wrong way
        ("4.1", "cos = torch.cat([angle.cos(), angle.cos()], dim=-1)",
         "cos = angle.cos().repeat_interleave(2, dim=-1)"),  # interleaved cos with half-split rotate_half
        ("4.1", "positions.double()[:, None]", "(positions.double()[:, None] + 1)"),  # positions start at 1
        ("4.2", "for h in range(1, n + 1)]", "for h in range(n)]"),  # first slope 1
        ("4.2", "power_of_two(2 * p)[0::2]", "power_of_two(2 * p)[1::2]"),  # the other half of 2p's slopes
        ("4.2", "return -alibi_slopes", "return alibi_slopes"),  # bias rewards distance
        ("4.2", "i = torch.arange(lq)[:, None] + (lk - lq)", "i = torch.arange(lq)[:, None]"),  # top-left queries
        ("4.2", "(i - j).float()", "(i - j).abs().float()"),  # symmetric: future keys penalised too
        ("4.3", "scores = scores / math.sqrt(q.shape[-1])", "scores = scores"),  # forgot the scale
        ("4.3", "return weights @ v + buckets @ rel_v", "return weights @ v"),  # forgot rel_v
        ("4.3", "rel_logits.gather(-1, idx.expand", "rel_logits.gather(-1, idx.T.expand"),  # i - j instead of j - i
        ("4.3", ".triu(1), float", ".tril(-1), float"),  # masks the past instead of the future
        ("4.3", "buckets.scatter_add(-1, idx.expand_as(weights)",
         "buckets.scatter_add(-1, idx.T.expand_as(weights)"),  # rel_v bucketed by i - j
        ("4.4", "g = gates * torch.ones(length, length).tril()", "g = gates"),  # future gates counted
        ("4.4", "g.flip(-1).cumsum(-1).flip(-1)", "g.cumsum(-1)"),  # prefix sums instead of suffix sums
        ("4.4", "torch.ones(length, length).tril()", "torch.ones(length, length).tril(-1)"),  # own gate left out
    ],
    "lab05_length_generalization": [
        ("5.1", "torch.ones(length, length, dtype=torch.bool).tril() & (scores > tau)", "(scores > tau)"),  # not causal
        ("5.1", "(scores > tau)", "(scores >= tau)"),  # keeps keys exactly at tau
        ("5.1", "dist = kept.flip(-1).cumsum(-1).flip(-1) - kept",
         "dist = (torch.arange(length)[:, None] - torch.arange(length)).to(scores.dtype)"),  # counts every token
        ("5.1", "scores - slopes[:, None, None] * dist", "scores + slopes[:, None, None] * dist"),  # sign error
        ("5.1", "weights = attnlib.core.masked_softmax(scores - slopes[:, None, None] * dist, keep)",
         "weights = torch.softmax(scores - slopes[:, None, None] * dist, -1)"),  # dropped keys still attended
        ("5.2", "(2 * sigma[..., None] ** 2)", "(2 * sigma[..., None])"),  # sigma not squared
        ("5.2", "return attnlib.core.masked_softmax(logits, torch.ones(length, length, dtype=torch.bool).tril())",
         "return torch.softmax(logits, -1)"),  # not causal
        ("5.2", "dtype=torch.bool).tril())", "dtype=torch.bool).triu())"),  # masks the past instead of the future
        ("5.2", "logits = -((j - mu[..., None]) ** 2)", "logits = ((j - mu[..., None]) ** 2)"),  # sign error
    ],
    "lab06_normalizers": [
        ("6.1", "    z = z - z.amax(dim=-1, keepdim=True)\n", ""),  # no max shift: loses precision on huge scores
        ("6.1", "/ k_z.to(z.dtype)", "/ z.shape[-1]"),  # tau averaged over every key, not the support
        ("6.1", "return torch.clamp(z - tau, min=0)", "return z - tau"),  # forgot the clamp: negative weights
        ("6.2", "mean = (grad * s).sum(-1, keepdim=True) / s.sum(-1, keepdim=True)",
         "mean = grad.mean(-1, keepdim=True)"),  # mean over every key, not the support
        ("6.2", "return s * (grad - mean)", "return grad - mean"),  # gradient leaks outside the support
        ("6.2", "return s * (grad - mean)", "return s * grad"),  # forgot the projection
        ("6.3", "p = torch.clamp(x - lo, min=0).pow(1 / (alpha - 1))", "p = torch.clamp(x - lo, min=0)"),  # no power
        ("6.3", "x = (alpha - 1) * z", "x = z"),  # forgot the (alpha - 1) scale
        ("6.3", "lo = torch.where(total >= 1, tau, lo)\n        hi = torch.where(total >= 1, hi, tau)",
         "hi = torch.where(total >= 1, tau, hi)\n        lo = torch.where(total >= 1, lo, tau)"),  # bisects backwards
        ("6.4", "[..., :-1]", "[..., 1:]"),  # drops the first key instead of the sink
        ("6.4", "return torch.softmax(torch.cat([z, sink], dim=-1), dim=-1)[..., :-1]",
         "return z.exp() / (z.exp().sum(-1, keepdim=True) + sink.exp())"),  # no max shift: overflows
        ("6.4", "float(sink_logit)", "-float(sink_logit)"),  # sign error on the sink
    ],
    "lab07_multi_head_family": [
        ("7.1", "x.view(b, l, n_heads, -1)", "x.view(b, l, -1, n_heads)"),  # heads strided, not sliced
        ("7.1", "x.view(b, l, n_heads, -1).transpose(1, 2)", "x.view(b, n_heads, l, -1)"),  # view, no transpose
        ("7.1", "x.transpose(1, 2).reshape(b, l, h * d)", "x.reshape(b, l, h * d)"),  # merge without transpose
        ("7.2", "repeat_interleave(group, dim=1)", "repeat(1, group, 1, 1)"),  # kv heads tiled, not grouped
        ("7.2", "causal=causal)) @ w_o.T", "causal=False)) @ w_o.T"),  # forgot the causal mask
        ("7.2", "k = split_heads(x @ w_k.T", "k = split_heads(x @ w_v.T"),  # copy-paste: keys projected by w_v
        ("7.3", "return 2 * n_layers * n_kv_heads", "return n_layers * n_kv_heads"),  # K only, V forgotten
        ("7.3", "head_dim * bytes_per_elem", "head_dim"),  # counts numbers, not bytes
        ("7.3", "return n_layers * (d_latent + d_rope)", "return n_layers * d_latent"),  # forgot the RoPE key
        ("7.3", "return n_layers * (d_latent + d_rope)", "return 2 * n_layers * (d_latent + d_rope)"),  # latent twice
        ("7.4", "score > best[0]", "score >= best[0]"),  # ties go to the last head
        ("7.4", "score > best[0]", "score < best[0]"),  # removes the most important head
        ("7.4", "if mask[layer, head] == 0:\n                    continue\n", "pass\n"),  # removes a head twice
    ],
    "lab15_triton_basics": [
        ("15.1", "tl.store(OUT + offsets, x + y, mask=mask)", "tl.store(OUT + offsets, x + y)"),  # writes past N
        ("15.1", "mask = offsets < N", "mask = offsets <= N"),  # off by one: writes element N
        ("15.1", "pid = tl.program_id(0)", "pid = tl.program_id(1)"),  # wrong grid axis: every program is 0
        ("15.1", "offsets = pid * BLOCK + tl.arange", "offsets = pid + tl.arange"),  # program id not scaled by BLOCK
        ("15.2", "X + row * x_row_stride + cols", "X + row * N_COLS + cols"),  # assumes contiguous rows
        ("15.2", "e = tl.exp(x - tl.max(x, 0))", "e = tl.exp(x)"),  # overflows for large logits
        ("15.2", "y.to(OUT.dtype.element_ty), mask=cols < N_COLS)", "y.to(OUT.dtype.element_ty))"),  # store unmasked
        ("15.3", "a = tl.load(A + rows[:, None] * stride_am", "a = tl.load(A + rows[:, None] * K"),  # row stride
        ("15.3", "mask=(rows[:, None] < M) & ((k0 + ks)[None, :] < K), other=0.0)",
         "mask=rows[:, None] < M, other=0.0)"),  # reads A past K
        ("15.3", "acc.to(C.dtype.element_ty),\n             mask=(rows[:, None] < M) & (cols[None, :] < N))",
         "acc.to(C.dtype.element_ty))"),  # writes outside M x N
    ],
    "lab16_flash_forward": [
        ("16.1", '    s = tl.where(offs_n[None, :] < LK, s, float("-inf"))\n', ""),  # keys past Lk count
        ("16.1", "s = tl.dot(q, tl.trans(k)) * scale", "s = tl.dot(q, tl.trans(k))"),  # forgot the scale
        ("16.1", "p = p / tl.sum(p, 1)[:, None]", "p = p / tl.sum(p, 0)[None, :]"),  # normalised over the queries
        ("16.1", "p = tl.exp(s - tl.max(s, 1)[:, None])", "p = tl.exp(s)"),  # no max shift: overflows
        ("16.1", "out.to(O.dtype.element_ty),\n             mask=offs_m[:, None] < LQ)",
         "out.to(O.dtype.element_ty))"),  # store unmasked: writes past row Lq
        ("16.2", "        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)\n        m_i = m_new\n        # END",
         "        acc = acc + tl.dot(p.to(v.dtype), v)\n        m_i = m_new\n        # END"),  # no rescaling
        ("16.2", "l_i = l_i * alpha + tl.sum(p, 1)", "l_i = l_i + tl.sum(p, 1)"),  # normaliser not rescaled
        ("16.2", "m_new = tl.maximum(m_i, tl.max(s, 1))", "m_new = tl.max(s, 1)"),  # tile max, not running max
        ("16.2", "p = tl.math.exp2(s - m_new[:, None])\n        alpha = tl.math.exp2(m_i - m_new)",
         "p = tl.exp(s - m_new[:, None])\n        alpha = tl.exp(m_i - m_new)"),  # e^x of log2-scaled scores
        ("16.2", '        s = tl.where(cols[None, :] < LK, s, float("-inf"))\n', ""),  # keys past Lk count
        ("16.3", "allowed = allowed & (cols[None, :] <= offs_m[:, None] + LK - LQ)",
         "allowed = allowed & (cols[None, :] < offs_m[:, None] + LK - LQ)"),  # causal off by one
        ("16.3", "        hi = tl.minimum(tl.maximum((pid_m + 1) * BLOCK_M + LK - LQ, 0), LK)",
         "        hi = LK"),  # right values, no tile skipped
        ("16.3", "(m_i + tl.math.log2(l_safe)) * 0.6931471805599453", "(m_i + tl.math.log2(l_safe))"),  # base 2
        ("16.3", "out.to(O.dtype.element_ty),\n             mask=offs_m[:, None] < LQ)",
         "out.to(O.dtype.element_ty))"),  # O stored unmasked: writes past row Lq
        ("16.3", "tl.store(LSE + bh * LQ + offs_m, lse, mask=offs_m < LQ)",
         "tl.store(LSE + bh * LQ + offs_m, lse)"),  # LSE stored unmasked: writes past row Lq
    ],
    "lab17_flash_backward": [
        ("17.1", "ds_t = p_t * (dp_t - delta[None, :])", "ds_t = p_t * dp_t"),  # dS without delta
        ("17.1", "offs_n[:, None] <= rows[None, :] + LK - LQ",
         "offs_n[:, None] <= rows[None, :]"),  # causal mask without the offset Lk - Lq (top-left)
        ("17.1", "p_t = tl.exp(s_t - lse[None, :])", "p_t = tl.exp(s_t - lse[:, None])"),  # lse along the keys
        ("17.1", "dk += tl.dot(ds_t.to(q.dtype), q)", "dk += tl.dot(ds_t.to(q.dtype), k)"),  # dK from K, not Q
        ("17.2", "ds = p * (dp - delta[:, None])", "ds = p * dp"),  # dS without delta
        ("17.2", "        hi = tl.minimum(tl.maximum((pid_m + 1) * BLOCK_M + LK - LQ, 0), LK)",
         "        hi = LK"),  # right values, no causal skipping
        ("17.3", "return dq, dk, dv, None", "return dk, dq, dv, None"),  # gradients in the wrong order
        ("17.3", "return dq, dk, dv, None", "return dq, dv, dk, None"),  # dK and dV swapped
        ("17.3", "attention_dkdv(q, k, v, o, do, lse, causal=ctx.causal)",
         "attention_dkdv(q, k, v, o, do, lse)"),  # causal flag not passed to the dK/dV kernel
    ],
    "lab18_decoding_and_sparse_kernels": [
        ("18.1", "w = torch.exp(lse_parts - m)", "w = torch.exp(lse_parts)"),  # no max shift
        ("18.1", "    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)",
         "    m = m"),  # ignores empty chunks' -inf: -inf - (-inf) is NaN when every chunk is empty
        ("18.1", "/ torch.where(total > 0, total, torch.ones_like(total))", "/ total"),  # 0 / 0 with no keys
        ("18.1", "w = torch.exp(lse_parts - m)", "w = torch.exp2(lse_parts - m)"),  # lse taken in base 2
        ("18.2", "(m_i + tl.math.log2(safe_l)) * 0.6931471805599453", "(m_i + tl.math.log2(safe_l))"),  # base 2
        ("18.2", "        ok = cols < hi\n", "        ok = cols < hi + 1\n"),  # one key past the chunk
        ("18.2", "* S + s) * D + offs_d[None, :], out, mask=g_ok[:, None])",
         "* S + s) * D + offs_d[None, :], out)"),  # outputs stored unmasked: the padded rows of a group
        ("18.2", "tl.store(LSEP + heads * S + s, lse, mask=g_ok)",
         "tl.store(LSEP + heads * S + s, lse)"),  # log-sum-exps stored unmasked: the padded rows of a group
        ("18.2", "m_new = tl.maximum(m_i, tl.max(x, 1))", "m_new = tl.max(x, 1)"),  # tile max, not running max
        ("18.3", "(i_first - j_last < window)", "(i_first - j_last <= window)"),  # one tile too many
        ("18.3", "(i_first - j_last < window)", "(i_first - j_first < window)"),  # tiles reached by later keys lost
        ("18.3", "(i_last - j_first >= 0)", "(i_last - j_first > 0)"),  # a tile with only i == j left out
        ("18.3", "(i_last - j_first >= 0) & ", ""),  # not causal: tiles above the diagonal kept
        ("18.4", "keep = keep & (cols[None, :] <= offs_m[:, None])",
         "keep = keep & (cols[None, :] < offs_m[:, None])"),  # causal off by one
        ("18.4", "kb = tl.load(KV_IDX + (bh * NB + qb) * NB + t)\n", "kb = t\n"),  # first blocks, not the listed
        ("18.4", "kb = tl.load(KV_IDX + (bh * NB + qb) * NB + t)\n",
         "kb = tl.load(KV_IDX + qb * NB + t)\n"),  # head 0's block list for every head
        ("18.4", 'shift = tl.where(m_new == float("-inf"), 0.0, m_new)',
         "shift = m_new"),  # no guard: a row with no visible key yet gives -inf - (-inf) = NaN
        ("18.4", "keep = ok[None, :]", "keep = offs_m[:, None] < L"),  # keys past L not masked
    ],
    "lab10_kv_cache_and_decoding": [
        ("10.1", "self.k[:, :, self.n:self.n + t] = k", "self.k[:, :, self.n:self.n + t] = v"),  # keys overwritten by values
        ("10.1", "        self.n += t\n", "        self.n = t\n"),  # length reset instead of grown
        ("10.1", "idx = torch.as_tensor(keep).long().sort().values", "idx = torch.as_tensor(keep).long()"),  # order lost
        ("10.1", "return 2 * self.k.shape[0] * self.k.shape[1] * self.n", "return self.k.shape[0] * self.k.shape[1] * self.n"),
        # bytes of the keys only
        ("10.1", "        if self.n + t > self.max_len:\n", "        if self.n + t > self.max_len + 1:\n"),  # off by one
        ("10.2", "logits = model.forward_cached(nxt, caches, p + t)[0]",
         "logits = model.forward_cached(nxt, caches, p + t + 1)[0]"),  # position off by one (RoPE)
        ("10.2", "logits = model.forward_cached(prompt, caches, 0)[0][:, -1:]",
         "logits = model.forward_cached(prompt, caches, 0)[0][:, :1]"),  # first logits of the prompt, not the last
        ("10.3", "s[..., s.shape[-1] - recent:] = float(\"inf\")", "s[..., :recent] = float(\"inf\")"),  # oldest kept
        ("10.3", "return s.topk(budget, dim=-1).indices.sort(-1).values", "return s.topk(budget, dim=-1).indices"),
        ("10.4", "factor = (weights / torch.where(rest > 0, rest, torch.ones_like(rest)))[..., None]",
         "factor = weights[..., None]"),  # forgot the renormalisation 1 / (1 - a_j)
        ("10.4", "factor * (o - values)", "factor * (values - o)"),  # sign flipped
        ("10.5", "eigenvectors.flip(-1)[..., :rank]", "eigenvectors[..., :rank]"),  # smallest directions kept
        ("10.5", "moment = keys.transpose(-2, -1) @ keys / keys.shape[-2]", "moment = q.transpose(-2, -1) @ q"),
        # basis of the queries, not the keys
    ],
    "lab11_memory": [
        ("11.1", "s_mem.topk(top, dim=-1)", "s_mem.topk(top, dim=-1, largest=False)"),  # retrieves the worst matches
        ("11.1", "s_mem = (q @ mem_k.transpose(-2, -1)) * scale", "s_mem = q @ mem_k.transpose(-2, -1)"),  # memory unscaled
        ("11.1", "s_loc.masked_fill(~mask", "s_loc.masked_fill(mask"),  # mask inverted
        ("11.1", "total = e.sum(-1, keepdim=True)", "total = e[..., top:].sum(-1, keepdim=True)"),  # memory outside the softmax
        ("11.2", "(k * k).sum(-1)[..., None, None]", "(k * k).sum(-1).sqrt()[..., None, None]"),  # eta = 1/||k||
        ("11.2", "err = v - (m @ k[..., None])[..., 0]", "err = v"),  # Hebbian write: the old read not subtracted
        ("11.2", "return m + eta", "return m - eta"),  # sign of the correction
        ("11.3", "grad = 2 * err.transpose(-2, -1) @ k / k.shape[-2]",
         "grad = 2 * err.transpose(-2, -1) @ k"),  # sum over pairs instead of the mean
        ("11.3", "s = momentum * s - lr * grad", "s = momentum * s + lr * grad"),  # gradient ascent
        ("11.3", "return (1 - decay) * m + s, s", "return (1 - decay) * (m + s), s"),  # decays the new update too
        ("11.3", "grad = 2 * err", "grad = err"),  # forgot the factor 2 of the square
        ("11.4", "out = out + g * read", "out = out + gate * read"),  # gate logit used without the sigmoid
        ("11.4", ")[-n_slots:]", ")"),  # the FIFO never drops a summary
        ("11.4", "vc, causal=True)", "vc, causal=False)"),  # local attention sees the future of its chunk
        ("11.4", "mem_v = (mem_v + [vc.mean(-2)])[-n_slots:]", "mem_v = (mem_v + [vc.sum(-2)])[-n_slots:]"),  # sum, not mean
    ],
    "lab12_sinks_and_massive_activations": [
        ("12.1", "sees = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)",
         "sees = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None]"),  # causal top-left, not bottom-right
        ("12.1", "return (weights * sees).sum(dim=-2) / count", "return weights.mean(dim=-2)"),  # unseen rows count
        ("12.1", "return float((alpha > threshold).float().mean())",
         "return float((alpha >= threshold).float().mean())"),  # >= instead of strictly above
        ("12.1", "sink_scores(w)[..., sink].flatten() for w in layers",
         "sink_scores(w)[..., sink].mean(0).flatten() for w in layers"),  # sequences averaged before thresholding
        ("12.2", "sink = (q * sink_key).sum(-1, keepdim=True) * scale",
         "sink = (q * sink_key).sum(-1, keepdim=True)"),  # sink logit not scaled like the others
        ("12.2", 'scores = scores.masked_fill(~mask, float("-inf"))',
         "scores = scores.masked_fill(~mask, 0.0)"),  # masked keys get logit 0 instead of -inf
        ("12.2", "[..., :-1]\n    return weights @ v, weights",
         "[..., :-1]\n    weights = weights / weights.sum(-1, keepdim=True)\n    return weights @ v, weights"),
        # renormalised after dropping the sink: a plain softmax again (NaN on fully masked rows)
        ("12.2", "torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]",
         "torch.cat([sink, scores], dim=-1), dim=-1)[..., :-1]"),  # sink put first, the last key dropped
        ("12.3", "torch.sigmoid(scores - math.log(k.shape[-2]))", "torch.sigmoid(scores)"),  # forgot the offset
        ("12.3", "    return weights @ v, weights\n    # END",
         "    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-9)\n    return weights @ v, weights\n"
         "    # END"),  # rows normalised: no longer elementwise
        ("12.3", "        scores = scores + bias\n", "        pass\n"),  # score bias ignored
        ("12.3", "        weights = weights * mask\n", "        pass\n"),  # masked keys attended
        ("12.4", "    is_sink[..., 0] = False\n", ""),  # the initial token is calibrated too
        ("12.4", "return torch.where(new > 0, scaled * old / torch.where(new > 0, new, torch.ones_like(new)), weights)",
         "return scaled"),  # not renormalised: rows leave the simplex
        ("12.4", "return torch.where(new > 0, scaled * old / torch.where(new > 0, new, torch.ones_like(new)), weights)",
         "return scaled * old / new"),  # 0 / 0 on an empty row
        ("12.4", "is_sink = weights.mean(dim=-2) > threshold",
         "is_sink = attnlib.sinks.sink_scores(weights) > threshold"),  # late keys seen by few queries count as sinks
    ],
    "lab09_sparse_and_long_context": [
        ("9.1", "return (i - j >= 0) & (i - j < window)", "return (i - j >= 0) & (i - j <= window)"),  # one key too many
        ("9.1", "return (i - j >= 0) & (i - j < window)", "return (i - j).abs() < window"),  # not causal: sees the future
        ("9.1", "& (delta < window * dilation)", "& (delta < window)"),  # window counted in positions, not keys
        ("9.1", "(delta % dilation == 0)", "(delta % (dilation + 1) == 0)"),  # spacing off by one
        ("9.2", "step = (mask | eye).float()", "step = mask.float()"),  # forgot the residual stream
        ("9.2", "for _ in range(n_layers - 1):", "for _ in range(n_layers):"),  # one layer too many
        ("9.2", "reach = ((reach @ step) > 0).float()", "reach = ((reach * step) > 0).float()"),  # no composition
        ("9.3", "n_pick = min(topk - 1, nb - 1)", "n_pick = min(topk, nb - 1)"),  # own block not counted in topk
        ("9.3", '    gate = gate.masked_fill(~earlier, float("-inf"))\n', ""),  # picks land on own/later blocks
        ("9.3", "mask = keep[..., own] & causal_mask(length, length)", "mask = keep[..., own]"),  # own block not causal
        ("9.3", "sums = F.pad(k, (0, 0, 0, pad))", "sums = F.pad(q, (0, 0, 0, pad))"),  # pools queries, not keys
        ("9.4", "moved = F.normalize(decay * mu + (1 - decay) * sums / counts.clamp(min=1), dim=-1)",
         "moved = decay * mu + (1 - decay) * sums / counts.clamp(min=1)"),  # centroids leave the unit sphere
        ("9.4", "rows = F.normalize(x.reshape(-1, x.shape[-1]), dim=-1)", "rows = x.reshape(-1, x.shape[-1])"),  # raw rows
        ("9.4", "moved = F.normalize(decay * mu + (1 - decay) *", "moved = F.normalize((1 - decay) * mu + decay *"),  # decay swapped
        ("9.4", " | torch.eye(length, dtype=torch.bool)", ""),  # a query alone in its cluster sees nothing
        ("9.4", "mu = F.normalize(centroids, dim=-1)\n    cq", "mu = centroids\n    cq"),  # routes by raw dot product
        ("9.4", "return scaled_dot_product_attention(q, k, v, same & causal_mask(length, length))",
         "return scaled_dot_product_attention(q, k, v, same)"),  # routing without the causal mask
        ("9.5", "(delta < window * dilation)\n    return mask_mod", "(delta <= window * dilation)\n    return mask_mod"),
        ("9.5", "(delta >= 0) & (delta % dilation == 0)", "(delta % dilation == 0)"),  # not causal
        ("9.5", "slopes[h] * (kv_idx - q_idx)", "slopes[h] * (q_idx - kv_idx)"),  # the bias rewards distance
        ("9.5", "return cap * torch.tanh((score + slopes[h] * (kv_idx - q_idx)) / cap)",
         "return cap * torch.tanh(score / cap) + slopes[h] * (kv_idx - q_idx)"),  # capped before the bias
        ("9.5", "slopes[h] * (kv_idx - q_idx)", "slopes[0] * (kv_idx - q_idx)"),  # head 0's slope for every head
    ],
    "lab13_attention_as_explanation": [
        ("13.1", "(residual * eye + (1 - residual) * a.mean(dim=1)) @ rollout",
         "rollout @ (residual * eye + (1 - residual) * a.mean(dim=1))"),  # latest layer on the right
        ("13.1", "(1 - residual) * a.mean(dim=1)) @ rollout",
         "(1 - residual) * a.sum(dim=1)) @ rollout"),  # heads summed, not averaged: rows no longer sum to 1
        ("13.1", "(residual * eye + (1 - residual) * a.mean(dim=1))",
         "((1 - residual) * eye + residual * a.mean(dim=1))"),  # residual weight on the attention term
        ("13.1", "    rollout = eye\n", "    rollout = attns[0].mean(dim=1)\n"),  # first layer counted twice, raw
        ("13.2", "graph.add_edge((depth - 1, j), (depth, i), capacity=cap[batch][i][j])",
         "graph.add_edge((depth - 1, i), (depth, j), capacity=cap[batch][i][j])"),  # capacities transposed
        ("13.2", "(residual * torch.eye(n) + (1 - residual) * a.detach().double().mean(1))",
         "a.detach().double().mean(1)"),  # the residual (identity) edge forgotten
        ("13.2", "nx.maximum_flow_value(graph, (0, j), (len(layers), i))",
         "nx.maximum_flow_value(graph, (0, j), (1, i))"),  # sink in the first layer, not the last
        ("13.2", "return flows[:, 0] if output is not None else flows",
         "return flows[:, 0] if output is not None else flows.transpose(-2, -1)"),  # (input, output) order
        ("13.3", "return (x * grad).detach()", "return grad.detach()"),  # the gradient alone, no input
        ("13.3", "picked = scores.gather(1, idx[:, None]).sum()",
         "picked = scores[:, idx].sum()"),  # every example's target summed for every example
        ("13.3", "x = inputs.detach().clone().requires_grad_(True)",
         "x = inputs.requires_grad_(True)"),  # sets requires_grad on the caller's tensor
        ("13.3", "picked = scores.gather(1, idx[:, None]).sum()",
         "picked = scores.max(-1).values.sum()"),  # the predicted class, not the target
        ("13.4", "(k - 0.5) / steps", "k / steps"),  # right Riemann sum, not the midpoint rule
        ("13.4", "return (x - base) * total / steps", "return x * total / steps"),  # baseline left out of the factor
        ("13.4", "return (x - base) * total / steps", "return (x - base) * total"),  # summed, not averaged
        ("13.4", "point = (base + (k - 0.5) / steps * (x - base))",
         "point = (base + (k - 0.5) / steps * x)"),  # path from the baseline towards x + baseline, not to x
        ("13.5", "-torch.log1p(-mass.clamp(max=1 - 1e-6)).mean()",
         "-torch.log1p(-mass.clamp(max=1 - 1e-6)).sum()"),  # summed over rows, not averaged
        ("13.5", "-torch.log1p(-mass.clamp(max=1 - 1e-6)).mean()",
         "-torch.log1p(-mass.mean().clamp(max=1 - 1e-6))"),  # log of the mean mass, not the mean of the logs
        ("13.5", "mass.clamp(max=1 - 1e-6)", "mass"),  # no clip: infinite when all the mass is impermissible
        ("13.5", "-torch.log1p(-mass.clamp(max=1 - 1e-6)).mean()", "mass.mean()"),  # linear in the mass
        ("13.5", "mass = (weights * mask).sum(-1)", "mass = (weights * ~mask).sum(-1)"),  # the permitted mass
    ],
    "lab14_heads_as_mechanisms": [
        ("14.1", "targets[:, :, 1:] = same[:, :, :-1]  # key k = j + 1",
         "targets = same.clone()  # key k = j + 1"),  # attends to the earlier occurrence itself, not its successor
        ("14.1", "targets &= pos[None, :] < pos[:, None]  # k < i", "targets &= pos[None, :] <= pos[:, None]  # k < i"),
        ("14.1", "return (mass * has).sum((0, 2)) / has.sum((0, 2)).clamp_min(1)",
         "return mass.mean((0, 2))"),  # averaged over every query, including those with no target
        ("14.1", "targets[:, :, 1:] = same[:, :, :-1]  # key k = j + 1",
         "targets[:, :, :-1] = same[:, :, 1:]  # key k = j + 1"),  # the token before, not after
        ("14.2", "top = weights.argmax(-1)  # (B, H, Lq)",
         "top = weights.mean(1, keepdim=True).argmax(-1).expand(-1, weights.shape[1], -1)"),  # heads averaged first
        ("14.2", "match = (generated[:, :, None] == tokens[:, None, :]) & needle[:, None, :]",
         "match = (generated[:, :, None] == tokens[:, None, :])"),  # copying from outside the needle counts
        ("14.2", "/ steps.sum().clamp_min(1)", "/ steps.numel()"),  # divided by all queries, not the steps
        ("14.2", "steps = match.any(-1) & (generated >= 0)", "steps = generated >= 0"),  # steps not in the needle
        ("14.3", "gate[head * mha.head_dim:(head + 1) * mha.head_dim] = 0.0",
         "gate[head::mha.n_heads] = 0.0"),  # strided slice: the wrong features
        ("14.3", "    finally:\n        for handle in handles:\n            handle.remove()\n",
         "    finally:\n        pass\n"),  # hooks left on after the with block
        ("14.3", "handles.append(mha.o_proj.register_forward_pre_hook(hook))",
         "handles.append(mha.v_proj.register_forward_pre_hook(hook))"),  # gates the input of v_proj
        ("14.3", "    try:\n        yield model\n    finally:\n        for handle in handles:\n            handle.remove()\n",
         "    yield model\n    for handle in handles:\n        handle.remove()\n"),  # not removed on an exception
        ("14.4", "a_ctx = weights[..., :n_context].mean(-1)", "a_ctx = weights[..., :n_context].sum(-1)"),  # sums
        ("14.4", "visible = (torch.arange(lq) + lk - lq - n_context + 1).clamp(0, lk - n_context)",
         "visible = torch.full((lq,), lk - n_context)"),  # counts keys a causal row cannot see
        ("14.4", "ratio = a_ctx / (a_ctx + a_new).clamp_min(1e-30)",
         "ratio = a_new / (a_ctx + a_new).clamp_min(1e-30)"),  # the generated share
        ("14.4", "a_new = weights[..., n_context:].sum(-1) / visible.clamp_min(1)",
         "a_new = weights[..., n_context:].mean(-1)"),  # mean over every generated key, visible or not
        ("14.5", "return logits_base + alpha * (logits_base - logits_masked)",
         "return logits_base - alpha * logits_masked"),  # base not amplified
        ("14.5", "return logits_base + alpha * (logits_base - logits_masked)",
         "return (1 - alpha) * logits_base + alpha * logits_masked"),  # interpolation instead of contrast
        ("14.5", "return logits_base + alpha * (logits_base - logits_masked)",
         "return torch.log_softmax(logits_base + alpha * (logits_base - logits_masked), -1)"),  # not the logits
    ],
    "lab08_linear_attention": [
        ("8.1", "return F.elu(x) + 1", "return F.elu(x)"),  # forgot the +1: features go negative
        ("8.1", "return torch.relu(x)", "return torch.abs(x)"),  # |x| is not the positive part
        ("8.1", " - 0.5 * (x * x).sum(-1, keepdim=True)", ""),  # no -|x|^2/2: estimates exp(x.y + ...) (biased)
        ("8.1", "/ math.sqrt(m)", "/ m"),  # averaged m features twice: the estimate shrinks like 1/sqrt(m)
        ("8.2", "return (fq @ s) / den.clamp_min(eps)", "return fq @ s"),  # forgot the normaliser
        ("8.2", "z = fk.sum(-2)", "z = fq.sum(-2)"),  # normaliser summed over the queries, not the keys
        ("8.2", "den.clamp_min(eps)", "den"),  # no eps: a query without overlap gives 0/0 = NaN
        ("8.3", "    fq, fk = phi(q), phi(k)  # (..., L, F)\n    s = torch.cumsum",
         "    fq, fk = phi(q), phi(k)  # (..., L, F)\n    w = (fq @ fk.transpose(-2, -1)).tril()\n"
         "    return (w / w.sum(-1, keepdim=True).clamp_min(eps)) @ v\n    s = torch.cumsum"),  # the L x L matrix
        ("8.3", "z = torch.cumsum(fk, dim=-2)", "z = torch.cumsum(fk, dim=-2) - fk"),  # normaliser misses key t
        ("8.3", "v[..., :, None, :], dim=-3)", "v[..., :, None, :], dim=-2)"),  # cumsum over features, not time
        ("8.3", "z = torch.cumsum(fk, dim=-2)", "z = fk.sum(-2, keepdim=True)"),  # normaliser sees the future
        ("8.4", "        z = z + fk[..., t, :]\n", ""),  # normaliser state never updated
        ("8.4", "s = s + fk[..., t, :, None]", "s = s + fq[..., t, :, None]"),  # writes the query, not the key
        ("8.4", "    else:\n        s, z = state\n",
         "    else:\n        s, z = torch.zeros_like(state[0]), torch.zeros_like(state[1])\n"),  # state ignored
        ("8.4", "return torch.stack(outs, dim=-2), (s, z)", "return torch.stack(outs, dim=-2), state"),  # old state
        ("8.5", "y = alpha * x[..., t, :] + (1 - alpha) * y", "y = (1 - alpha) * x[..., t, :] + alpha * y"),  # swapped
        ("8.5", "y = alpha * x[..., t, :] + (1 - alpha) * y", "y = x[..., t, :] + (1 - alpha) * y"),  # input not damped
        ("8.5", "s = decay[..., t, None, None] * s + fk", "s = s + fk"),  # gate ignored
        ("8.5", "s = decay[..., t, None, None] * s + fk[..., t, :, None] * v[..., t, None, :]",
         "s = decay[..., t, None, None] * (s + fk[..., t, :, None] * v[..., t, None, :])"),  # decays the new pair too
        ("8.5", "decay[..., t, None, None] * s", "decay[..., t - 1, None, None] * s"),  # gate of the previous step
    ],
    "lab19_context_parallel": [
        ("19.1", "lse = torch.logaddexp(lse1, lse2)", "lse = torch.maximum(lse1, lse2)"),  # max, not log-sum-exp
        ("19.1", "safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))", "safe = lse"),  # NaN if empty
        ("19.1", "torch.exp(lse2 - safe).unsqueeze(-1) * o2", "torch.exp(lse2 - lse1).unsqueeze(-1) * o2"),  # wrong weight
        ("19.2", "if not (causal and src > rank):", "if True:"),  # the causal skip is missing
        ("19.2", ".tril() if causal and src == rank", ".triu() if causal and src == rank"),  # diagonal mask flipped
        ("19.2", "kc, vc = nk, nv", "kc, vc = kc, vc"),  # never uses the block it received
        ("19.3", "c[2 * world - 1 - r]", "c[world + r]"),  # early and late chunk, but not mirrored
        ("19.3", "[h[1] for h in reversed(halves)]", "[h[1] for h in halves]"),  # late chunks in the wrong order
        ("19.4", "x.chunk(world, dim=1)]  # head group g", "x.chunk(world, dim=-2)]  # head group g"),  # wrong split
        ("19.4", "return torch.cat(recv, dim=-2)", "return torch.cat(recv, dim=1)"),  # gathered along the heads
        ("19.4", "return torch.cat(recv, dim=1)\n", "return torch.cat(recv[::-1], dim=1)\n"),  # head groups reversed
    ],
}
CASES = [(lab, *m) for lab, mutations in MUTATIONS.items() for m in mutations]


KERNEL_LABS = {"lab15_triton_basics", "lab16_flash_forward", "lab17_flash_backward",
               "lab18_decoding_and_sparse_kernels"}


def _needs_triton(lab: str) -> None:
    if lab in KERNEL_LABS:
        pytest.importorskip("triton")


@pytest.mark.parametrize("lab", MUTATIONS)
def test_every_exercise_has_a_mutation(lab):
    exercises = {c.metadata["exercise"] for c in _code_cells(lab) if "exercise" in c.metadata.get("tags", [])}
    assert exercises, f"{lab} has no exercise cells"
    missing = exercises - {exercise for exercise, *_ in MUTATIONS[lab]}
    assert not missing, f"{lab}: exercises without a mutation: {sorted(missing)}"


@pytest.mark.parametrize("lab", MUTATIONS)
def test_the_solution_passes_every_check(lab):
    _needs_triton(lab)
    run_checks(lab)


@pytest.mark.parametrize("lab, exercise, old, new", CASES, ids=[f"{c[1]}:{c[3][:30]}" for c in CASES])
def test_a_broken_exercise_fails_its_check(lab, exercise, old, new):
    _needs_triton(lab)
    with pytest.raises(AssertionError, match=f"Exercise {exercise}"):
        run_checks(lab, exercise, old, new)
