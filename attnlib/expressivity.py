r"""What one attention layer can and cannot do: the prefix decomposition and the scan-and-snap toy.

**Prefixes.** Put a prefix of ``P`` keys/values (soft prompt, prefix-tuning) in front of ``C``
content keys/values. With scores :math:`s_j = \text{scale}\cdot q^\top k_j`, write
:math:`Z_P = \sum_{j \in P} e^{s_j}` and :math:`Z_C = \sum_{j \in C} e^{s_j}`. Splitting the
softmax sum gives the exact identity

.. math::

    \operatorname{Attn}(q, [K_P; K_C], [V_P; V_C])
    = (1 - \lambda)\,\operatorname{Attn}(q, K_C, V_C) + \lambda\,\operatorname{Attn}(q, K_P, V_P),
    \qquad \lambda = \frac{Z_P}{Z_P + Z_C},

so a prefix only rescales every content weight by the same factor :math:`1 - \lambda`: the
ratios among content weights are those without the prefix, and the output moves along the
segment from the content output to the prefix output. This is the mechanism behind the claim
of *When Do Prompting and Prefix-Tuning Work? A Theory of Capabilities and Limitations* that
context-based fine-tuning "cannot change the relative attention pattern over the content".
:func:`prefix_decomposition` computes the three pieces, with :math:`\lambda` from log-sum-exps
(no overflow). An empty prefix gives :math:`\lambda = 0`.

**Scan and snap.** *Scan and Snap: Understanding Training Dynamics and Token Composition in
1-layer Transformer* studies one self-attention layer plus a linear decoder, with no positional
encoding, trained for next-token prediction. :class:`ScanSnapToy` is the smallest version of that
setting: one query token, one-hot token embeddings (so attention logits are one learned number
:math:`z_m` per key token :math:`m`, initialised to 0: uniform attention), attention output
:math:`u = \sum_l \alpha_l e_{x_l}`, logits :math:`Y u`. :func:`scan_snap_data` draws contexts in
which each next token :math:`n` has its own *distinct* key tokens and all next tokens share
*common* ones; :func:`train_scan_snap` trains the two parts with separate SGD learning rates and
records the attention mass on distinct and on common tokens (our small instance of the paper's
setup; its exact assumptions and constants are in its body).

Shapes: ``q`` ``(..., Lq, d)``, ``k_*`` ``(..., L_*, d)``, ``v_*`` ``(..., L_*, dv)``; ``lam``
``(..., Lq, 1)``; outputs ``(..., Lq, dv)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .data._seed import Seed, as_generator
from .validation import check_positive_int, check_qkv, resolve_scale

__all__ = ["prefix_decomposition", "ScanSnapData", "scan_snap_data", "ScanSnapToy", "train_scan_snap"]


def _lse_and_attn(q, k, v, scale):
    """Log-sum-exp of the scores ``(..., Lq, 1)`` and the attention output ``(..., Lq, dv)``."""
    s = (q @ k.transpose(-2, -1)) * scale  # (..., Lq, Lk)
    lse = torch.logsumexp(s, dim=-1, keepdim=True)  # (..., Lq, 1)
    return lse, torch.exp(s - lse) @ v


def prefix_decomposition(q, k_content, v_content, k_prefix, v_prefix, *, scale: Optional[float] = None):
    r"""Split attention over ``[prefix; content]`` into ``(lam, out_content, out_prefix)``.

    ``(1 - lam) * out_content + lam * out_prefix`` equals softmax attention of ``q`` over the
    concatenated keys and values, exactly (up to rounding); ``lam = Z_P / (Z_P + Z_C)`` is the
    share of the softmax mass that the prefix takes. ``scale`` defaults to ``1/sqrt(d)``.
    A prefix of length 0 gives ``lam = 0`` and ``out_prefix = 0``.
    """
    check_qkv(q, k_content, v_content)
    check_qkv(q, k_prefix, v_prefix)
    if k_content.shape[-2] == 0:
        raise ValueError(f"k_content must hold at least one key, got shape {tuple(k_content.shape)}")
    if v_prefix.shape[-1] != v_content.shape[-1]:
        raise ValueError(f"v_prefix and v_content must share the value dimension, got shapes "
                         f"{tuple(v_prefix.shape)} and {tuple(v_content.shape)}")
    scale = resolve_scale(scale, q.shape[-1])
    lse_c, out_c = _lse_and_attn(q, k_content, v_content, scale)  # (..., Lq, 1), (..., Lq, dv)
    if k_prefix.shape[-2] == 0:
        return torch.zeros_like(lse_c), out_c, torch.zeros_like(out_c)
    lse_p, out_p = _lse_and_attn(q, k_prefix, v_prefix, scale)
    lam = torch.sigmoid(lse_p - lse_c)  # Z_P / (Z_P + Z_C) = 1 / (1 + exp(lse_C - lse_P))
    return lam, out_c, out_p


@dataclass(frozen=True)
class ScanSnapData:
    """``contexts`` ``(N, T)`` key-token ids, ``targets`` ``(N,)`` next-token classes, and the token groups.

    Token ids: ``0 .. K*m_distinct - 1`` distinct tokens (``distinct[n]`` belong to class ``n``),
    then ``m_common`` common tokens. ``vocab_size = K*m_distinct + m_common``."""

    contexts: torch.Tensor
    targets: torch.Tensor
    distinct: torch.Tensor  # (K, m_distinct) token ids
    common: torch.Tensor  # (m_common,) token ids
    vocab_size: int


def scan_snap_data(n: int, *, n_classes: int = 4, m_distinct: int = 3, m_common: int = 3, length: int = 32,
                   p_common: float = 0.5, seed: Seed = 0) -> ScanSnapData:
    """``n`` contexts of ``length`` key tokens; each token is common with probability ``p_common``
    (uniform over the common tokens), otherwise uniform over the distinct tokens of the row's class
    (classes uniform)."""
    n = check_positive_int(n, "n")
    k = check_positive_int(n_classes, "n_classes")
    md = check_positive_int(m_distinct, "m_distinct")
    mc = check_positive_int(m_common, "m_common")
    t = check_positive_int(length, "length")
    if isinstance(p_common, bool) or not isinstance(p_common, (int, float)) or not 0 <= p_common < 1:
        raise ValueError(f"p_common must be a number in [0, 1), got {p_common!r}")
    g = as_generator(seed)
    distinct = torch.arange(k * md).view(k, md)  # (K, md)
    common = torch.arange(k * md, k * md + mc)  # (mc,)
    targets = torch.randint(k, (n,), generator=g)  # (N,)
    pick_d = distinct[targets[:, None], torch.randint(md, (n, t), generator=g)]  # (N, T)
    pick_c = common[torch.randint(mc, (n, t), generator=g)]  # (N, T)
    is_common = torch.rand(n, t, generator=g) < p_common
    return ScanSnapData(torch.where(is_common, pick_c, pick_d), targets, distinct, common, k * md + mc)


class ScanSnapToy(nn.Module):
    """One query token, one-hot embeddings, no positions: ``alpha = softmax(z[x])``, ``logits = Y (sum alpha e_x)``.

    ``z`` ``(V,)`` starts at 0 (uniform attention); ``Y`` ``(K, V)`` starts at 0 too."""

    def __init__(self, vocab_size: int, n_classes: int):
        super().__init__()
        self.z = nn.Parameter(torch.zeros(check_positive_int(vocab_size, "vocab_size")))
        self.Y = nn.Parameter(torch.zeros(check_positive_int(n_classes, "n_classes"), vocab_size))

    def attention(self, contexts: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` token ids -> ``(N, T)`` attention weights."""
        return torch.softmax(self.z[contexts], dim=-1)

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` token ids -> ``(N, K)`` logits."""
        alpha = self.attention(contexts)  # (N, T)
        u = torch.zeros(contexts.shape[0], self.z.shape[0], dtype=alpha.dtype)
        u.scatter_add_(1, contexts, alpha)  # (N, V): sum_l alpha_l e_{x_l}
        return u @ self.Y.T


def train_scan_snap(data: ScanSnapData, *, lr_attention: float, lr_decoder: float, steps: int,
                    batch_size: int = 64, record_every: int = 1, seed: Seed = 0):
    """SGD with separate learning rates for ``z`` (attention) and ``Y`` (decoder).

    Returns ``(model, history)``; ``history`` has ``step``, ``distinct`` and ``common`` lists: the mean
    attention mass (summed over positions) on distinct and on common tokens over all of ``data``."""
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    record_every = check_positive_int(record_every, "record_every")
    for name, lr in (("lr_attention", lr_attention), ("lr_decoder", lr_decoder)):
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"{name} must be a positive number, got {lr!r}")
    g = as_generator(seed)
    model = ScanSnapToy(data.vocab_size, data.distinct.shape[0])
    opt = torch.optim.SGD([{"params": [model.z], "lr": lr_attention}, {"params": [model.Y], "lr": lr_decoder}])
    is_common = torch.isin(data.contexts, data.common)  # (N, T)
    history = {"step": [], "distinct": [], "common": []}

    def record(step):
        with torch.no_grad():
            alpha = model.attention(data.contexts)
            history["step"].append(step)
            history["common"].append((alpha * is_common).sum(-1).mean().item())
            history["distinct"].append((alpha * ~is_common).sum(-1).mean().item())

    record(0)
    n = data.targets.shape[0]
    for step in range(1, steps + 1):
        idx = torch.randint(n, (batch_size,), generator=g)
        loss = nn.functional.cross_entropy(model(data.contexts[idx]), data.targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % record_every == 0 or step == steps:
            record(step)
    return model, history
