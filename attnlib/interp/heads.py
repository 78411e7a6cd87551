r"""Heads as mechanisms: scores that say what a head does, and two ways to use them (lab 14).

**Induction score** (Olsson et al., 2022, *background, not a seed*). An induction head,
at a token ``t_i`` that occurred before at ``j < i``, attends to the token *after* that
occurrence, ``j + 1``, so that it can copy it. With the target set
:math:`S_i = \{\, j + 1 : j + 1 < i,\ t_j = t_i \,\}` (the next token of an earlier
occurrence, the query itself excluded), the score of a head is the mean over the
queries with a non-empty :math:`S_i` of the attention mass on :math:`S_i`,

.. math::

    \text{induction}(A) = \operatorname{mean}_{i:\ S_i \neq \emptyset} \sum_{k \in S_i} A_{ik} .

A perfect induction pattern scores 1; causal uniform attention
:math:`A_{ik} = 1 / (i + 1)` scores :math:`\operatorname{mean}_i \lvert S_i\rvert / (i + 1)`,
its chance value (:func:`induction_chance`).

**Retrieval score** (seed *Retrieval Head Mechanistically Explains Long-Context
Factuality*). The abstract calls retrieval heads the sparse set of heads "largely
responsible for retrieving information"; the *copy-paste* criterion is taken from the
paper's body (section 2): at a step where the model emits a token ``w`` that occurs in
the needle, head ``h`` copy-pastes if its most attended key is a needle position
holding ``w``. Its score is the fraction of such steps on which it copy-pastes.

**Lookback ratio** (seed *Lookback Lens: Detecting and Mitigating Contextual
Hallucinations in Large Language Models Using Only Attention Maps*). With the first
``n_context`` keys the context and the rest the newly generated tokens, the ratio of a
head at one step is :math:`A_\text{ctx} / (A_\text{ctx} + A_\text{new})`, each term the
*mean* attention over its keys (means, as in the paper's section 2; the abstract says
"the ratio of attention weights on the context versus newly generated tokens"). Causal
rows see only some generated keys: the mean runs over the visible ones, and the ratio
is 1 when no attention goes to generated tokens.

**Contrastive decoding** (seed *DeCoRe: Decoding by Contrasting Retrieval Heads to
Mitigate Hallucinations*): contrast the base model with a copy whose retrieval heads
are masked, :math:`(1 + \alpha)\, z_\text{base} - \alpha\, z_\text{masked}` (DeCoRe-lite;
DeCoRe sets :math:`\alpha` per step from the conditional entropy, :func:`entropy`).
On logits or on log-probabilities the softmax of the contrast is the same.

**Head ablation** (as in seed *Are Sixteen Heads Really Better than One?*):
:func:`head_ablation` gates heads of :class:`attnlib.heads.MultiHeadAttention` layers off by
zeroing their slice of the input of ``o_proj``, which equals zeroing their columns of
:math:`W_O`.

**Reading a head from its parameters** (in the spirit of seed *Inferring Functionality
of Attention Heads from their Parameters*, MAPS): :func:`qk_ov_svd` returns
:math:`W_{QK}^{(h)} = W_Q^{(h)\top} W_K^{(h)}` and :math:`W_{OV}^{(h)} = W_O^{(h)} W_V^{(h)}`
with their singular values, and :func:`ov_copying_score` the fraction of tokens that
:math:`W_U W_{OV}^{(h)} W_E` maps to themselves.

**Position profile** (seed *Attention Basin: Why Contextual Position Matters in Large
Language Models*): :func:`position_profile` sums attention over the keys of each item,
the curve whose U shape the seed calls the attention basin.

Weights are ``(..., H, Lq, Lk)`` (e.g. ``(B, H, L, L)``); tokens ``(B, L)``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

import torch

from ..heads import MultiHeadAttention
from ..validation import check_tensor

__all__ = [
    "induction_targets", "induction_score", "induction_chance", "retrieval_score", "lookback_ratio",
    "contrast_decode", "entropy", "head_ablation", "qk_ov_svd", "ov_copying_score", "position_profile",
]


def _check_weights_tokens(weights, tokens) -> None:
    check_tensor(weights, "weights", min_dim=4)
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
        raise TypeError(f"tokens must be an integer tensor (B, L), got {getattr(tokens, 'dtype', type(tokens))}")
    b, lq, lk = weights.shape[0], weights.shape[-2], weights.shape[-1]
    if weights.dim() != 4 or lq != lk or tokens.shape != (b, lk):
        raise ValueError(f"weights must be (B, H, L, L) self-attention with tokens (B, L); got weights "
                         f"{tuple(weights.shape)}, tokens {tuple(tokens.shape)}")


def induction_targets(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, L, L)`` boolean: ``[b, i, k]`` True iff ``k = j + 1 < i`` for some ``j`` with ``t_j = t_i``."""
    same = tokens[:, :, None] == tokens[:, None, :]  # (B, i, j)
    n = tokens.shape[1]
    targets = torch.zeros_like(same)
    targets[:, :, 1:] = same[:, :, :-1]  # k = j + 1
    i = torch.arange(n, device=tokens.device)
    return targets & (i[None, :] < i[:, None])  # k < i: strictly earlier than the query


def induction_score(weights: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean attention mass on the induction targets, per head: ``(B, H, L, L)`` -> ``(H,)``.

    Queries without a target (no earlier occurrence) are left out; with none at all the
    score is 0.
    """
    _check_weights_tokens(weights, tokens)
    targets = induction_targets(tokens)[:, None]  # (B, 1, L, L)
    mass = (weights * targets).sum(-1)  # (B, H, L)
    has = targets.any(-1).expand_as(mass)  # (B, H, L)
    count = has.sum((0, 2)).clamp_min(1)
    return (mass * has).sum((0, 2)) / count


def induction_chance(tokens: torch.Tensor) -> torch.Tensor:
    """The induction score of causal uniform attention (query ``i`` gives ``1/(i+1)`` to keys ``0..i``)."""
    n = tokens.shape[1]
    uniform = torch.ones(n, n).tril() / torch.arange(1, n + 1)[:, None]
    return induction_score(uniform.expand(tokens.shape[0], 1, n, n), tokens)[0]


def retrieval_score(weights: torch.Tensor, tokens: torch.Tensor, generated: torch.Tensor,
                    needle: torch.Tensor) -> torch.Tensor:
    """Copy-paste retrieval score per head: ``(B, H, Lq, Lk)`` -> ``(H,)``.

    Args:
        weights: attention weights of one layer.
        tokens: ``(B, Lk)`` token ids at the keys.
        generated: ``(B, Lq)`` the token emitted at each query step (any id < 0: not a step).
        needle: ``(B, Lk)`` boolean, True at the needle's positions.
    A step counts when its token occurs in the needle; the head copy-pastes when its
    argmax key is a needle position holding that token. Score = copy-pastes / steps (0 without steps).
    """
    check_tensor(weights, "weights", min_dim=4)
    b, lq, lk = weights.shape[0], weights.shape[-2], weights.shape[-1]
    if weights.dim() != 4 or tokens.shape != (b, lk) or generated.shape != (b, lq) or needle.shape != (b, lk):
        raise ValueError(f"expected weights (B, H, Lq, Lk), tokens and needle (B, Lk), generated (B, Lq); got "
                         f"{tuple(weights.shape)}, {tuple(tokens.shape)}, {tuple(needle.shape)}, "
                         f"{tuple(generated.shape)}")
    in_needle = (generated[:, :, None] == tokens[:, None, :]) & needle[:, None, :]  # (B, Lq, Lk)
    step = in_needle.any(-1) & (generated >= 0)  # (B, Lq)
    top = weights.argmax(-1)  # (B, H, Lq)
    hit = in_needle[:, None].expand(-1, weights.shape[1], -1, -1).gather(-1, top[..., None])[..., 0]  # (B, H, Lq)
    hit = hit & step[:, None]
    return hit.sum((0, 2)).to(weights.dtype) / step.sum().clamp_min(1)


def lookback_ratio(weights: torch.Tensor, n_context: int) -> torch.Tensor:
    """Lookback ratio of each row: ``(..., Lq, Lk)`` -> ``(..., Lq)``, in [0, 1].

    Keys ``< n_context`` are the context, the others generated tokens; row ``i`` sees the
    generated keys up to ``i + Lk - Lq`` (bottom-right aligned causal). Each side is a
    mean over its (visible) keys; the ratio is 1 when no attention goes to generated keys.
    """
    check_tensor(weights, "weights", min_dim=2)
    lq, lk = weights.shape[-2:]
    if isinstance(n_context, bool) or not isinstance(n_context, int) or not 1 <= n_context <= lk:
        raise ValueError(f"n_context must be an int in [1, Lk={lk}], got {n_context!r}")
    i = torch.arange(lq, device=weights.device)
    n_new = (i + lk - lq - n_context + 1).clamp(0, lk - n_context)  # (Lq,) visible generated keys
    ctx = weights[..., :n_context].sum(-1) / n_context
    new = weights[..., n_context:].sum(-1) / n_new.clamp_min(1).to(weights.dtype)
    total = ctx + new
    return torch.where(new > 0, ctx / torch.where(total > 0, total, torch.ones_like(total)), torch.ones_like(ctx))


def contrast_decode(logits_base: torch.Tensor, logits_masked: torch.Tensor, alpha) -> torch.Tensor:
    """DeCoRe-lite: ``(1 + alpha) * logits_base - alpha * logits_masked``.

    ``alpha`` is a float or a tensor broadcastable to the logits (e.g. ``(B, 1)``, one per row).
    """
    check_tensor(logits_base, "logits_base", min_dim=1)
    check_tensor(logits_masked, "logits_masked", min_dim=1)
    if logits_base.shape != logits_masked.shape:
        raise ValueError(f"logits_base {tuple(logits_base.shape)} and logits_masked "
                         f"{tuple(logits_masked.shape)} must have the same shape")
    return (1 + alpha) * logits_base - alpha * logits_masked


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` over the last dimension: ``(..., V)`` -> ``(...)``."""
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


def _attention_layers(model: torch.nn.Module) -> list[MultiHeadAttention]:
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        raise ValueError(f"model {type(model).__name__} has no attnlib.heads.MultiHeadAttention layer")
    return layers


@contextmanager
def head_ablation(model: torch.nn.Module, heads: Iterable[tuple[int, int]]):
    """Within the ``with`` block, heads ``(layer, head)`` of ``model`` are gated off.

    Layers are ``model``'s :class:`attnlib.heads.MultiHeadAttention` modules in
    ``model.modules()`` order. A forward pre-hook on each layer's ``o_proj`` zeroes the
    ``head_dim`` slice of head ``h`` in its input, so the output equals that of a model whose
    ``W_O`` columns of those heads are zero. The hooks are removed on exit.
    """
    layers = _attention_layers(model)
    off: dict[int, list[int]] = {}
    for pair in heads:
        layer, head = pair
        if not 0 <= layer < len(layers) or not 0 <= head < layers[layer].n_heads:
            raise ValueError(f"head {pair} is not in a model with {len(layers)} layers of "
                             f"{layers[0].n_heads} heads")
        off.setdefault(layer, []).append(head)
    handles = []
    for layer, hs in off.items():
        mha = layers[layer]
        gate = torch.ones(mha.n_heads)
        gate[hs] = 0.0
        gate = gate.repeat_interleave(mha.head_dim)  # (H * d_head,)

        def hook(module, args, gate=gate):
            return (args[0] * gate.to(args[0]),) + tuple(args[1:])

        handles.append(mha.o_proj.register_forward_pre_hook(hook))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def qk_ov_svd(mha: MultiHeadAttention, h: int) -> dict:
    """Head ``h``'s circuits in the residual basis, with their singular values.

    Returns a dict: ``qk`` ``(d_model, d_model)`` = ``W_Q^T W_K`` (score = ``x_q^T qk x_k``),
    ``ov`` ``(d_model, d_model)`` = ``W_O W_V`` (output = ``ov x_k``), and ``qk_s``, ``ov_s``
    their singular values (at most ``head_dim`` of them are non-zero).
    """
    if not isinstance(mha, MultiHeadAttention):
        raise TypeError(f"mha must be an attnlib.heads.MultiHeadAttention, got {type(mha).__name__}")
    if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < mha.n_heads:
        raise ValueError(f"h must be a head index in [0, {mha.n_heads}), got {h!r}")
    d, g = mha.head_dim, h // mha.group_size
    wq = mha.q_proj.weight[h * d:(h + 1) * d]  # (d_head, d_model)
    wk = mha.k_proj.weight[g * d:(g + 1) * d]
    wv = mha.v_proj.weight[g * d:(g + 1) * d]
    wo = mha.o_proj.weight[:, h * d:(h + 1) * d]  # (d_model, d_head)
    qk, ov = wq.T @ wk, wo @ wv
    return {"qk": qk, "ov": ov, "qk_s": torch.linalg.svdvals(qk), "ov_s": torch.linalg.svdvals(ov)}


@torch.no_grad()
def ov_copying_score(ov: torch.Tensor, embed: torch.Tensor, unembed: torch.Tensor) -> float:
    """Fraction of tokens ``t`` with ``argmax_u (unembed @ ov @ embed[t])_u == t`` (MAPS-style "copying").

    ``ov`` ``(d_model, d_model)``, ``embed`` ``(V, d_model)`` (rows: token embeddings),
    ``unembed`` ``(V, d_model)`` (rows: output directions).
    """
    mapped = embed @ ov.T @ unembed.T  # (V_in, V_out)
    return (mapped.argmax(-1) == torch.arange(embed.shape[0])).float().mean().item()


def position_profile(weights: torch.Tensor, item_of_key: torch.Tensor, n_items: int) -> torch.Tensor:
    """Attention mass on each item, averaged over every leading dim: ``(..., Lk)`` -> ``(n_items,)``.

    ``item_of_key`` ``(Lk,)`` gives each key's item index (``-1``: not part of an item).
    """
    check_tensor(weights, "weights", min_dim=1)
    if item_of_key.shape != weights.shape[-1:]:
        raise ValueError(f"item_of_key must have shape ({weights.shape[-1]},), got {tuple(item_of_key.shape)}")
    onehot = (item_of_key[:, None] == torch.arange(n_items, device=weights.device)).to(weights.dtype)  # (Lk, n)
    return (weights.reshape(-1, weights.shape[-1]) @ onehot).mean(0)
