r"""Post-hoc attributions: gradient × input, integrated gradients and occlusion.

Background, not seeds: gradient × input (Shrikumar et al.), integrated gradients
(Sundararajan, Taly and Yan, *Axiomatic Attribution for Deep Networks*) and occlusion
(Zeiler and Fergus). The seeds *Quantifying Attention Flow in Transformers* (ablation and
input gradients as importance scores) and *Attention Meets Post-hoc Interpretability:
A Mathematical Perspective* (post-hoc methods against attention weights) use them.

``forward`` maps a batch of inputs ``x`` of shape ``(B, ...)`` to scores ``(B,)``, or to
``(B, C)`` from which ``target`` (an int or a ``(B,)`` tensor of class indices) picks one
score per example: :math:`f(x)`. For a token model, ``x`` is the embedded sequence
``(B, L, d)`` and a token's score is the sum of its ``d`` attributions.

* **Gradient × input**: :math:`a = x \odot \nabla_x f(x)`.
* **Integrated gradients** from a baseline :math:`x'` (default zeros):

  .. math::
      a = (x - x') \odot \int_0^1 \nabla f\big(x' + \alpha (x - x')\big)\, d\alpha
        \approx (x - x') \odot \frac1m \sum_{k=1}^{m} \nabla f\big(x' + \alpha_k (x - x')\big),

  with :math:`\alpha_k = (k - \tfrac12)/m` (midpoint rule, the default), :math:`k/m` (right)
  or :math:`(k-1)/m` (left): the same points and weights as captum's ``riemann_*`` methods.
  *Completeness*: :math:`\sum a = f(x) - f(x')` up to the quadrature error, which falls as
  :math:`O(1/m^2)` for the midpoint rule and :math:`O(1/m)` for the other two.
* **Occlusion** of position :math:`l` (dim 1 of ``x``): :math:`f(x) - f(x_{l \leftarrow b})`,
  where position :math:`l` is replaced by the baseline (a token id for token inputs, a
  vector or zeros for embeddings): the *ablation* importance.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from ..validation import check_positive_int, check_tensor

__all__ = ["grad_x_input", "integrated_gradients", "occlusion_importance", "IG_METHODS"]

IG_METHODS = ("riemann_middle", "riemann_right", "riemann_left")

Target = Union[None, int, torch.Tensor]


def _score(forward: Callable, x: torch.Tensor, target: Target, repeat: int = 1) -> torch.Tensor:
    """``forward(x)`` reduced to one score per example, ``(N,)``; ``target`` is tiled ``repeat`` times."""
    out = forward(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"forward must return a torch.Tensor, got {type(out).__name__}")
    if out.dim() == 2 and out.shape[1] == 1 and target is None:
        out = out[:, 0]
    if out.dim() == 1:
        if target is not None:
            raise ValueError(f"forward returned one score per example (shape {tuple(out.shape)}): pass target=None")
        return out
    if out.dim() != 2:
        raise ValueError(f"forward must return (B,) scores or (B, C) class scores, got shape {tuple(out.shape)}")
    if target is None:
        raise ValueError(f"forward returned (B, C) = {tuple(out.shape)} scores: pass target (an int or a (B,) tensor)")
    if isinstance(target, int) and not isinstance(target, bool):
        idx = torch.full((out.shape[0],), target, dtype=torch.long, device=out.device)
    elif isinstance(target, torch.Tensor) and target.dim() == 1 and not target.is_floating_point():
        idx = target.to(out.device).long().repeat(repeat)
    else:
        raise TypeError(f"target must be None, an int or a (B,) integer tensor, got {target!r:.60}")
    if idx.shape[0] != out.shape[0]:
        raise ValueError(f"target has {idx.shape[0] // repeat} entries for a batch of {out.shape[0] // repeat}")
    return out.gather(1, idx[:, None])[:, 0]


def _check_inputs(inputs, baseline):
    check_tensor(inputs, "inputs", min_dim=1)
    if baseline is None:
        return torch.zeros_like(inputs)
    check_tensor(baseline, "baseline", min_dim=0)
    try:
        return torch.broadcast_to(baseline.to(inputs.dtype), inputs.shape)
    except RuntimeError:
        raise ValueError(f"baseline must broadcast to inputs {tuple(inputs.shape)}, "
                         f"got {tuple(baseline.shape)}") from None


def grad_x_input(forward: Callable, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Gradient × input, ``x * d f(x) / dx``, with the shape of ``inputs`` (graph not kept)."""
    check_tensor(inputs, "inputs", min_dim=1)
    x = inputs.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_score(forward, x, target).sum(), x)  # examples are independent
    return (x * grad).detach()


def integrated_gradients(forward: Callable, inputs: torch.Tensor, baseline: Optional[torch.Tensor] = None, *,
                         target: Target = None, steps: int = 50, method: str = "riemann_middle") -> torch.Tensor:
    """Integrated gradients from ``baseline`` (zeros if None) with ``steps`` points; shape of ``inputs``.

    All ``steps`` points go through ``forward`` in one batch of ``steps * B`` inputs.
    """
    steps = check_positive_int(steps, "steps")
    if method not in IG_METHODS:
        raise ValueError(f"method must be one of {IG_METHODS}, got {method!r}")
    base = _check_inputs(inputs, baseline).detach()
    x = inputs.detach()
    k = torch.arange(1, steps + 1, dtype=torch.float64)
    alphas = {"riemann_middle": (k - 0.5) / steps, "riemann_right": k / steps,
              "riemann_left": (k - 1) / steps}[method].to(x.dtype).to(x.device)  # (m,)
    shape = (steps,) + (1,) * x.dim()
    path = (base + alphas.view(shape) * (x - base)).reshape(steps * x.shape[0], *x.shape[1:])  # (m*B, ...)
    path.requires_grad_(True)
    (grad,) = torch.autograd.grad(_score(forward, path, target, repeat=steps).sum(), path)
    mean_grad = grad.view(steps, *x.shape).mean(0)  # (B, ...): equal weights 1/m
    return ((x - base) * mean_grad).detach()


def occlusion_importance(forward: Callable, inputs: torch.Tensor, baseline: Union[int, float, torch.Tensor] = 0, *,
                         target: Target = None) -> torch.Tensor:
    """``f(x) - f(x with position l replaced by baseline)`` for every position ``l`` along dim 1: ``(B, L)``.

    ``inputs`` may be token ids ``(B, L)`` (then ``baseline`` is a token id) or embeddings ``(B, L, ...)``
    (``baseline`` broadcastable to one position, ``inputs[:, l]``). All ``L`` occlusions run in one batch.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
        raise ValueError(f"inputs must be a (B, L, ...) tensor, got {getattr(inputs, 'shape', type(inputs))}")
    b, n = inputs.shape[:2]
    with torch.no_grad():
        full = _score(forward, inputs, target)  # (B,)
        occluded = inputs.unsqueeze(0).repeat(n, *([1] * inputs.dim()))  # (L, B, L, ...)
        value = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
        for l in range(n):
            occluded[l, :, l] = value
        scores = _score(forward, occluded.reshape(n * b, *inputs.shape[1:]), target, repeat=n)  # (L*B,)
    return (full[None] - scores.view(n, b)).T.contiguous()  # (B, L)
