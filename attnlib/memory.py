r"""Attention as an associative memory: Kanerva's SDM, the Hebbian outer-product
memory, and the recurrent (RNN) form of causal attention.

One idea: *a memory that stores (key, value) pairs and is read by a query*.
Three classic memories meet attention here.

**Sparse Distributed Memory** (Kanerva, 1988, *background, not a seed*). Patterns
``p_mu`` in ``{-1, +1}^n`` are written to every *hard location* (neuron) whose
address lies within Hamming radius ``r`` of ``p_mu``; a query reads every neuron
within ``r`` of the query. Summed over neurons, pattern ``mu`` contributes in
proportion to the number of neurons in the *intersection* of the two Hamming
balls, so with all ``2^n`` addresses present the read is

.. math::

    \text{read}(q) = \frac{\sum_\mu |B(q, r) \cap B(p_\mu, r)|\, v_\mu}
                          {\sum_\mu |B(q, r) \cap B(p_\mu, r)|} .

The intersection decays roughly exponentially with ``d = hamming(q, p_mu)``,
``|B \cap B| \approx c\, e^{-\beta d}``, and for ``\pm 1`` vectors
``d = (n - q\cdot p)/2``, so the read becomes ``softmax(beta/2 * q P^T) V``:
softmax attention with a fitted inverse temperature (seed: *Attention
Approximates Sparse Distributed Memory*).

**Hebbian associative memory** (seed: *Understanding Transformers through the
Lens of Pavlovian Conditioning*). Write ``M = sum_i v_i k_i^T`` (conditional
stimulus ``k`` -> unconditional stimulus ``v``); read ``M q``. This is
un-normalised linear attention: ``M q = sum_i (k_i . q) v_i``. With orthonormal
keys and ``N <= d_k`` the read of ``k_j`` is exactly ``v_j``; otherwise every
other pair adds crosstalk ``sum_{i != j} (k_i . k_j) v_i``, whose expected
squared norm is ``(N - 1) / d_k`` for keys drawn uniformly on the unit sphere
and independent, zero-mean values of unit norm (derived here, background).

**Recurrent form** (seed: *On the Expressiveness of Softmax Attention: A
Recurrent Neural Network Perspective*). Causal attention with a kernel
``kappa(q, k) = phi(q)^T phi(k)`` is an RNN with state
``S_t = S_{t-1} + phi(k_t) v_t^T`` and ``z_t = z_{t-1} + phi(k_t)``, output
``phi(q_t)^T S_t / phi(q_t)^T z_t``. Softmax attention has
``kappa = exp(s q.k) = sum_n (s q.k)^n / n!``, whose feature map is the
(infinite) stack of tensor powers ``sqrt(s^n / n!) q^{(x) n}``; truncating it at
order ``P`` gives a finite RNN, and ``P = 1`` (kernel ``1 + s q.k``) is a
linear attention. The Taylor construction is derived here (background); the
seed's abstract states only that linear attention approximates softmax
attention via a recurrent form.

Shapes follow attnlib: ``(..., L, d)``.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import torch

from .validation import check_positive_int, check_tensor, resolve_scale

__all__ = [
    "hamming_distance",
    "hamming_ball_intersection",
    "fit_exponential_decay",
    "sdm_intersection_read",
    "sdm_neuron_read",
    "exp_hamming_weights",
    "hebbian_write",
    "hebbian_read",
    "retrieval_accuracy",
    "taylor_feature_map",
    "recurrent_kernel_attention",
    "parallel_kernel_attention",
]


# --------------------------------------------------------------------------- SDM


def _check_pm1(x: torch.Tensor, name: str) -> None:
    check_tensor(x, name, min_dim=1)
    if not bool(((x == 1) | (x == -1)).all()):
        raise ValueError(f"{name} must hold only -1 and +1 entries (bipolar vectors), shape {tuple(x.shape)}")


def hamming_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamming distances between bipolar vectors: ``a`` (..., La, n), ``b`` (..., Lb, n) -> (..., La, Lb).

    Uses ``hamming = (n - a.b) / 2``, exact for ``+-1`` entries.
    """
    _check_pm1(a, "a")
    _check_pm1(b, "b")
    n = a.shape[-1]
    if b.shape[-1] != n:
        raise ValueError(f"a and b must share the last dimension n: got a {tuple(a.shape)}, b {tuple(b.shape)}")
    return (n - a @ b.transpose(-2, -1)) / 2


@functools.lru_cache(maxsize=4096)
def hamming_ball_intersection(n: int, r: int, d: int) -> int:
    """Exact number of points of ``{0,1}^n`` within Hamming distance ``r`` of both of two points ``d`` apart.

    Split the coordinates into the ``d`` where the two centres differ and the
    ``n - d`` where they agree. A point that differs from the first centre in
    ``a`` of the former and ``b`` of the latter is at distance ``a + b`` from the
    first centre and ``d - a + b`` from the second, so the count is
    ``sum C(d, a) C(n - d, b)`` over ``a + b <= r`` and ``d - a + b <= r``.
    """
    check_positive_int(n, "n")
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"r must be a non-negative int, got {r!r}")
    if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= n:
        raise ValueError(f"d must be an int in [0, n={n}], got {d!r}")
    total = 0
    for a in range(d + 1):
        for b in range(n - d + 1):
            if a + b <= r and d - a + b <= r:
                total += math.comb(d, a) * math.comb(n - d, b)
    return total


def fit_exponential_decay(x, y) -> tuple[float, float, float]:
    """Least-squares fit ``log y = log c - beta * x``; returns ``(beta, log_c, r_squared)``.

    ``x`` and ``y`` are 1-D sequences with ``y > 0``. ``r_squared`` is the
    coefficient of determination of the linear fit in log space.
    """
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    if x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not bool((y > 0).all()):
        raise ValueError("y must be positive to take its logarithm")
    ly = torch.log(y)
    xm, ym = x.mean(), ly.mean()
    slope = ((x - xm) * (ly - ym)).sum() / ((x - xm) ** 2).sum()
    intercept = ym - slope * xm
    residual = ly - (intercept + slope * x)
    ss_tot = ((ly - ym) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / ss_tot if ss_tot > 0 else torch.tensor(1.0, dtype=torch.float64)
    return float(-slope), float(intercept), float(r2)


def sdm_intersection_read(q: torch.Tensor, patterns: torch.Tensor, values: torch.Tensor, r: int) -> torch.Tensor:
    """SDM read with every one of the ``2^n`` addresses present (Kanerva's read, normalised).

    Args:
        q: ``(..., Lq, n)`` bipolar queries.
        patterns: ``(..., N, n)`` bipolar stored addresses.
        values: ``(..., N, dv)`` stored contents.
        r: Hamming radius.

    Returns ``(..., Lq, dv)``: ``sum_mu w_mu v_mu / sum_mu w_mu`` with
    ``w_mu = |B(q, r) cap B(p_mu, r)|``; a query whose ball meets no pattern's
    ball reads zeros.
    """
    n = q.shape[-1]
    dist = hamming_distance(q, patterns).round().long()  # (..., Lq, N)
    table = torch.tensor([float(hamming_ball_intersection(n, r, d)) for d in range(n + 1)],
                         dtype=torch.float64, device=q.device)
    w = table[dist]  # (..., Lq, N)
    total = w.sum(-1, keepdim=True)
    w = torch.where(total > 0, w / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(w))
    return (w.to(values.dtype) @ values)


def sdm_neuron_read(q: torch.Tensor, neurons: torch.Tensor, patterns: torch.Tensor, values: torch.Tensor,
                    r: int) -> torch.Tensor:
    """SDM with explicit hard locations: write each value to the neurons within ``r`` of its
    pattern, read the summed counters of the neurons within ``r`` of the query, normalise.

    ``neurons`` is ``(M, n)`` bipolar; the other shapes are as in :func:`sdm_intersection_read`.
    With all ``2^n`` neurons the two reads are equal.
    """
    _check_pm1(neurons, "neurons")
    write = (hamming_distance(patterns, neurons) <= r).to(values.dtype)  # (..., N, M)
    counters = write.transpose(-2, -1) @ values  # (..., M, dv): each neuron's summed contents
    read = (hamming_distance(q, neurons) <= r).to(values.dtype)  # (..., Lq, M)
    out = read @ counters  # (..., Lq, dv)
    norm = read @ write.transpose(-2, -1).sum(-1, keepdim=True)  # (..., Lq, 1): sum_mu |intersection|
    return torch.where(norm > 0, out / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(out))


def exp_hamming_weights(q: torch.Tensor, patterns: torch.Tensor, beta: float) -> torch.Tensor:
    """Normalised ``exp(-beta * hamming(q, p_mu))`` weights, ``(..., Lq, N)``, computed from distances."""
    logits = -beta * hamming_distance(q, patterns)
    return torch.softmax(logits, dim=-1)


# ---------------------------------------------------------------- Hebbian memory


def hebbian_write(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Outer-product (Hebbian) write ``M = sum_i v_i k_i^T``: ``k`` (..., N, dk), ``v`` (..., N, dv) -> (..., dv, dk)."""
    check_tensor(k, "k", min_dim=2)
    check_tensor(v, "v", min_dim=2)
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must store the same number of pairs (dim -2): k {tuple(k.shape)}, v {tuple(v.shape)}")
    return v.transpose(-2, -1) @ k


def hebbian_read(m: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Read ``M q`` for each query: ``m`` (..., dv, dk), ``q`` (..., Lq, dk) -> (..., Lq, dv)."""
    check_tensor(m, "m", min_dim=2)
    check_tensor(q, "q", min_dim=2)
    if m.shape[-1] != q.shape[-1]:
        raise ValueError(f"m's last dim (dk) must match q's: m {tuple(m.shape)}, q {tuple(q.shape)}")
    return q @ m.transpose(-2, -1)


def retrieval_accuracy(read: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fraction of reads whose nearest stored value (by cosine) is the right one.

    ``read`` and ``v`` are ``(..., N, dv)``; row ``j`` of ``read`` should retrieve row ``j`` of ``v``.
    Returns a tensor of shape ``(...)``.
    """
    sim = torch.nn.functional.normalize(read, dim=-1) @ torch.nn.functional.normalize(v, dim=-1).transpose(-2, -1)
    target = torch.arange(v.shape[-2], device=v.device)
    return (sim.argmax(-1) == target).to(read.dtype).mean(-1)


# ------------------------------------------------------------- recurrent form


def taylor_feature_map(order: int, scale: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Feature map ``phi_P`` with ``phi_P(q) . phi_P(k) = sum_{n=0}^{P} (scale * q.k)^n / n!``.

    ``phi_P(x)`` stacks ``sqrt(scale^n / n!) * x^{(x) n}`` (the flattened ``n``-th
    tensor power) for ``n = 0..P``: dimension ``sum_n d^n``, so keep ``d`` and ``P`` small.
    As ``P -> infinity`` the kernel tends to ``exp(scale * q.k)``, the softmax kernel.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be a non-negative int, got {order!r}")
    scale = resolve_scale(scale, 1)

    def phi(x: torch.Tensor) -> torch.Tensor:
        feats = [torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)]
        power = feats[0]
        for n in range(1, order + 1):
            power = (power[..., :, None] * x[..., None, :]).flatten(-2)  # (..., d^n)
            feats.append(power * math.sqrt(scale**n / math.factorial(n)))
        return torch.cat(feats, dim=-1)

    return phi


def recurrent_kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               feature_map: Callable[[torch.Tensor], torch.Tensor],
                               *, return_state: bool = False):
    """Causal kernel attention run as an RNN over time (``Lq == Lk == L``).

    State ``S_t = S_{t-1} + phi(k_t) v_t^T`` (a Hebbian write, ``(..., F, dv)``) and
    ``z_t = z_{t-1} + phi(k_t)`` (``(..., F)``); output
    ``y_t = phi(q_t)^T S_t / phi(q_t)^T z_t``. ``q``, ``k`` are ``(..., L, d)``, ``v`` is ``(..., L, dv)``.
    Returns ``y`` ``(..., L, dv)``, and ``(S_L, z_L)`` if ``return_state``.
    """
    check_tensor(q, "q", min_dim=2)
    check_tensor(k, "k", min_dim=2)
    check_tensor(v, "v", min_dim=2)
    if not (q.shape[-2] == k.shape[-2] == v.shape[-2]):
        raise ValueError(f"the recurrent form needs Lq == Lk == Lv, got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    fq, fk = feature_map(q), feature_map(k)  # (..., L, F)
    batch = torch.broadcast_shapes(fq.shape[:-2], fk.shape[:-2], v.shape[:-2])
    s = torch.zeros(*batch, fk.shape[-1], v.shape[-1], dtype=v.dtype, device=v.device)
    z = torch.zeros(*batch, fk.shape[-1], dtype=v.dtype, device=v.device)
    outs = []
    for t in range(q.shape[-2]):
        s = s + fk[..., t, :, None] * v[..., t, None, :]  # Hebbian write of (k_t, v_t)
        z = z + fk[..., t, :]
        num = (fq[..., t, None, :] @ s).squeeze(-2)  # (..., dv)
        den = (fq[..., t, :] * z).sum(-1, keepdim=True)  # (..., 1)
        outs.append(num / den)
    y = torch.stack(outs, dim=-2)
    return (y, (s, z)) if return_state else y


def parallel_kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              kernel: Callable[[torch.Tensor], torch.Tensor], *, causal: bool = True,
                              scale: Optional[float] = None) -> torch.Tensor:
    """Attention with weights ``kappa(s q_i.k_j) / sum_j kappa(s q_i.k_j)`` computed all at once.

    ``kernel`` maps the scaled score matrix to unnormalised weights (``torch.exp``
    gives softmax attention). Causal masking is bottom-right aligned as in attnlib.
    """
    scale = resolve_scale(scale, q.shape[-1])
    scores = scale * (q @ k.transpose(-2, -1))  # (..., Lq, Lk)
    w = kernel(scores)
    if causal:
        lq, lk = scores.shape[-2:]
        keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
        w = w * keep
    return (w @ v) / w.sum(-1, keepdim=True)
