r"""Linear (kernelized) attention: parallel, causal by prefix sums, and as a recurrence.

With a feature map :math:`\phi` (:mod:`attnlib.linear.feature_maps`) the kernel
:math:`\phi(q)^\top\phi(k)` replaces :math:`\exp(q\cdot k)`, and associativity moves the sum
over keys in front of the queries (Katharopoulos et al., 2020, *background, not a seed*):

.. math::
    \operatorname{out}_i = \frac{\phi(q_i)^\top \sum_j \phi(k_j) v_j^\top}
                                {\max\big(\phi(q_i)^\top \sum_j \phi(k_j),\ \varepsilon\big)} ,

``O(L d dv)`` time and no ``(Lq, Lk)`` matrix. Causally (query ``i`` sees key ``j`` iff
``j <= i + Lk - Lq``, attnlib's bottom-right alignment) the sums become prefix sums, i.e. the
state of a recurrence (the Hebbian write of the seed *Understanding Transformers through the Lens
of Pavlovian Conditioning*; the RNN view of the seed *On the Expressiveness of Softmax Attention:
A Recurrent Neural Network Perspective*):

.. math::
    S_t = S_{t-1} + \phi(k_t) v_t^\top,\quad z_t = z_{t-1} + \phi(k_t),\quad
    \operatorname{out}_t = \phi(q_t)^\top S_t / \max(\phi(q_t)^\top z_t, \varepsilon).

:func:`linear_attention` computes the causal form a chunk of ``chunk_size`` queries at a time
(a ``C x C`` block inside the chunk, the carried state ``S`` for everything before it), so its
extra memory is ``O(L C + (L / C) d dv)``, never ``O(L^2)``. :func:`linear_attention_recurrent`
is the step-by-step state form; the two agree to rounding.

:func:`magnitude_aware_linear_attention` is a variant *we derive* (not the seed's MALA formula,
which needs the paper body): with a degree-1 homogeneous map the weights ignore the query's norm;
adding a constant ``tau > 0`` to the kernel, :math:`\kappa(q, k) = \phi(q)^\top\phi(k) + \tau`
(the feature map :math:`[\phi(x); \sqrt\tau]`), makes the weights depend on it again: uniform as
:math:`\|q\| \to 0`, sharpening towards plain linear attention as :math:`\|q\|` grows.

Normalised forms need non-negative features (else the denominator may vanish or change sign):
a map that returns negatives raises, unless ``normalize=False`` (the un-normalised read
:math:`\phi(q)^\top S`). A key masked out by ``key_mask`` and a query that sees no key get zeros.
"""

from __future__ import annotations

import numbers
from typing import Callable, Optional, Union

import torch

from ..validation import check_positive_int, check_qkv
from .feature_maps import resolve_feature_map

__all__ = ["linear_attention", "linear_attention_recurrent", "linear_attention_weights",
           "magnitude_aware_linear_attention"]

FeatureMap = Union[str, Callable[[torch.Tensor], torch.Tensor]]


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a positive float, got {type(eps).__name__}")
    if not float(eps) > 0:
        raise ValueError(f"eps must be > 0 (it bounds the normaliser away from 0), got {eps}")
    return float(eps)


def _features(q, k, feature_map, normalize, n_features, seed):
    """phi(q), phi(k); checks that a normalised form gets non-negative features."""
    phi = resolve_feature_map(feature_map, q.shape[-1], n_features=n_features, seed=seed, dtype=q.dtype,
                              device=q.device)
    fq, fk = phi(q), phi(k)  # (..., Lq, F), (..., Lk, F)
    name = feature_map if isinstance(feature_map, str) else getattr(feature_map, "__name__", "callable")
    for f, which in ((fq, "q"), (fk, "k")):
        if not isinstance(f, torch.Tensor) or f.shape[:-1] != (q if which == "q" else k).shape[:-1]:
            raise ValueError(f"feature_map {name!r} must map {which} of shape (..., L, d) to (..., L, F), "
                             f"got {type(f).__name__} {tuple(getattr(f, 'shape', ()))}")
    if fq.shape[-1] != fk.shape[-1]:
        raise ValueError(f"feature_map {name!r} gave {fq.shape[-1]} features for q but {fk.shape[-1]} for k")
    if normalize:
        for f, which in ((fq, "q"), (fk, "k")):
            if f.numel() and bool((f < 0).any()):
                raise ValueError(
                    f"feature_map {name!r} returned negative features for {which} (min {f.min().item():.3g}); "
                    "the normaliser phi(q)^T sum_j phi(k_j) needs phi >= 0: use 'relu', 'elu+1', "
                    "'softmax_kernel', or normalize=False")
    return fq, fk


def _apply_key_mask(fk, key_mask, lk):
    if key_mask is None:
        return fk
    if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool:
        raise TypeError(f"key_mask must be a boolean tensor (..., Lk), True = attend, got "
                        f"{getattr(key_mask, 'dtype', type(key_mask).__name__)}")
    if key_mask.dim() < 1 or key_mask.shape[-1] not in (1, lk):
        raise ValueError(f"key_mask must be broadcastable to (..., Lk) = (..., {lk}), got {tuple(key_mask.shape)}")
    return fk * key_mask[..., None].to(fk.dtype)


def _finish(num, den, normalize, eps):
    return num / den.clamp_min(eps) if normalize else num


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                     feature_map: FeatureMap = "elu+1", eps: float = 1e-6, normalize: bool = True,
                     key_mask: Optional[torch.Tensor] = None, n_features: int = 64, seed: int = 0,
                     chunk_size: int = 64) -> torch.Tensor:
    """Kernelized attention ``phi(Q)(phi(K)^T V) / phi(Q)(phi(K)^T 1)``.

    Args:
        q: ``(..., Lq, d)``; k: ``(..., Lk, d)``; v: ``(..., Lk, dv)``; leading dims broadcast.
        causal: bottom-right aligned causal form (prefix sums, chunked; no ``(Lq, Lk)`` matrix).
        feature_map: ``"identity"``, ``"relu"``, ``"elu+1"``, ``"softmax_kernel"`` or a callable ``(..., d) -> (..., F)``.
        eps: lower bound of the normaliser (> 0): a query that sees no key (or only zero features) gives 0.
        normalize: divide by the normaliser; False gives the un-normalised read ``phi(q)^T S``.
        key_mask: optional boolean ``(..., Lk)``, True = attend (padding).
        n_features, seed: of ``"softmax_kernel"``'s random features.
        chunk_size: queries per block of the causal form.

    Returns:
        ``(..., Lq, dv)``.
    """
    check_qkv(q, k, v)
    eps = _check_eps(eps)
    check_positive_int(chunk_size, "chunk_size")
    lq, lk = q.shape[-2], k.shape[-2]
    fq, fk = _features(q, k, feature_map, normalize, n_features, seed)
    fk = _apply_key_mask(fk, key_mask, lk)
    batch = torch.broadcast_shapes(fq.shape[:-2], fk.shape[:-2], v.shape[:-2])
    fq, fk, v = fq.expand(*batch, *fq.shape[-2:]), fk.expand(*batch, *fk.shape[-2:]), v.expand(*batch, *v.shape[-2:])
    if not causal:
        s = fk.transpose(-2, -1) @ v  # (..., F, dv): every key written once
        z = fk.sum(-2)  # (..., F)
        return _finish(fq @ s, (fq * z[..., None, :]).sum(-1, keepdim=True), normalize, eps)

    out = torch.zeros(*batch, lq, v.shape[-1], dtype=v.dtype, device=v.device)
    offset = lk - lq  # query i sees keys j <= i + offset
    first = max(0, -offset)  # queries before this one see no key: their output stays 0
    lead = max(0, offset)  # keys every query sees
    s = fk[..., :lead, :].transpose(-2, -1) @ v[..., :lead, :]  # (..., F, dv) state after the first keys
    z = fk[..., :lead, :].sum(-2)  # (..., F)
    for start in range(first, lq, chunk_size):
        end = min(start + chunk_size, lq)
        kq0, kq1 = start + offset, end + offset  # keys new to this block of queries
        fq_c, fk_c, v_c = fq[..., start:end, :], fk[..., kq0:kq1, :], v[..., kq0:kq1, :]
        a = (fq_c @ fk_c.transpose(-2, -1)).tril()  # (..., C, C): within-block causal kernel
        num = fq_c @ s + a @ v_c  # (..., C, dv)
        den = (fq_c * z[..., None, :]).sum(-1, keepdim=True) + a.sum(-1, keepdim=True)
        out[..., start:end, :] = _finish(num, den, normalize, eps)
        s = s + fk_c.transpose(-2, -1) @ v_c
        z = z + fk_c.sum(-2)
    return out


def linear_attention_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                               feature_map: FeatureMap = "elu+1", eps: float = 1e-6, normalize: bool = True,
                               state: Optional[tuple] = None, return_state: bool = False,
                               n_features: int = 64, seed: int = 0):
    """Causal linear attention one token at a time (``Lq == Lk``): the state form.

    ``S_t = S_{t-1} + phi(k_t) v_t^T`` (``(..., F, dv)``), ``z_t = z_{t-1} + phi(k_t)`` (``(..., F)``),
    ``out_t = phi(q_t)^T S_t / max(phi(q_t)^T z_t, eps)``. ``state=(S, z)`` continues from an earlier
    call (streaming); ``return_state`` also returns the final ``(S, z)``. Equals
    ``linear_attention(..., causal=True)``.
    """
    check_qkv(q, k, v)
    eps = _check_eps(eps)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"the recurrent form needs Lq == Lk, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    fq, fk = _features(q, k, feature_map, normalize, n_features, seed)
    batch = torch.broadcast_shapes(fq.shape[:-2], fk.shape[:-2], v.shape[:-2])
    f, dv = fk.shape[-1], v.shape[-1]
    if state is None:
        s = torch.zeros(*batch, f, dv, dtype=v.dtype, device=v.device)
        z = torch.zeros(*batch, f, dtype=v.dtype, device=v.device)
    else:
        s, z = state
        if tuple(s.shape[-2:]) != (f, dv) or z.shape[-1] != f:
            raise ValueError(f"state must be (S (..., {f}, {dv}), z (..., {f})), got S {tuple(s.shape)}, "
                             f"z {tuple(z.shape)}")
    outs = []
    for t in range(q.shape[-2]):
        s = s + fk[..., t, :, None] * v[..., t, None, :]  # write (k_t, v_t)
        z = z + fk[..., t, :]
        num = (fq[..., t, None, :] @ s).squeeze(-2)  # (..., dv): read with q_t
        den = (fq[..., t, :] * z).sum(-1, keepdim=True)  # (..., 1)
        outs.append(_finish(num, den, normalize, eps))
    out = torch.stack(outs, -2) if outs else torch.zeros(*batch, 0, dv, dtype=v.dtype, device=v.device)
    return (out, (s, z)) if return_state else out


def linear_attention_weights(q: torch.Tensor, k: torch.Tensor, *, causal: bool = False,
                             feature_map: FeatureMap = "elu+1", eps: float = 1e-6, normalize: bool = True,
                             n_features: int = 64, seed: int = 0) -> torch.Tensor:
    """The ``(..., Lq, Lk)`` weights that linear attention applies to the values (for analysis only:
    this materialises the matrix that :func:`linear_attention` avoids). Rows sum to 1 (or are 0)."""
    check_qkv(q, k, k)
    eps = _check_eps(eps)
    fq, fk = _features(q, k, feature_map, normalize, n_features, seed)
    w = fq @ fk.transpose(-2, -1)  # (..., Lq, Lk)
    if causal:
        w = w.tril(k.shape[-2] - q.shape[-2])
    return _finish(w, w.sum(-1, keepdim=True), normalize, eps)


def magnitude_aware_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                                     feature_map: FeatureMap = "relu", tau: float = 1.0, eps: float = 1e-6,
                                     key_mask: Optional[torch.Tensor] = None, chunk_size: int = 64) -> torch.Tensor:
    """Linear attention with the kernel ``phi(q)^T phi(k) + tau`` (derived here, see the module docstring).

    Scaling ``q`` by ``c`` gives weights ``(c s_ij + tau) / sum_j (c s_ij + tau)``: uniform for small ``c``,
    plain linear attention as ``c -> infinity``. Same shapes and arguments as :func:`linear_attention`.
    """
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not float(tau) > 0:
        raise ValueError(f"tau must be a positive float, got {tau!r}")
    phi = resolve_feature_map(feature_map, q.shape[-1], dtype=q.dtype, device=q.device)
    root = float(tau) ** 0.5

    def phi_tau(x):  # [phi(x); sqrt(tau)]: phi_tau(q) . phi_tau(k) = phi(q) . phi(k) + tau
        f = phi(x)
        return torch.cat([f, torch.full((*f.shape[:-1], 1), root, dtype=f.dtype, device=f.device)], -1)

    phi_tau.__name__ = f"{feature_map if isinstance(feature_map, str) else 'phi'}+tau"
    return linear_attention(q, k, v, causal=causal, feature_map=phi_tau, eps=eps, key_mask=key_mask,
                            chunk_size=chunk_size)
