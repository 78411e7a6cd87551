r"""Attention rollout and attention flow: how much an output position draws on each input token.

Seed: *Quantifying Attention Flow in Transformers*. Across layers, information from
different tokens gets mixed, so one layer's raw weights are unreliable as an
explanation; the two methods below follow the weights through *all* layers.

Both start from the head-averaged weights of each layer with the residual
connection added as an identity edge (``r`` = ``residual``, :math:`\bar A_\ell` the
mean over heads of layer :math:`\ell`, rows = queries, columns = keys):

.. math::
    \hat A_\ell = r\, I + (1 - r)\, \bar A_\ell .

**Rollout** treats :math:`\hat A_\ell[i, j]` as the share of node :math:`i` in layer
:math:`\ell` that comes from node :math:`j` in layer :math:`\ell - 1` and multiplies the
shares along every path, summed over paths:

.. math::
    R = \hat A_L \hat A_{L-1} \cdots \hat A_1 \qquad (\text{latest layer on the left}).

When every row of every :math:`\bar A_\ell` sums to 1, so does every row of :math:`R`.

**Flow** reads the same layered graph as a flow network: the edge from node
:math:`j` of layer :math:`\ell - 1` to node :math:`i` of layer :math:`\ell` has capacity
:math:`\hat A_\ell[i, j]`, and :math:`F[i, j]` is the value of a maximum flow from input
token :math:`j` (layer 0) to output position :math:`i` (layer :math:`L`). With one layer
:math:`F = \hat A_1 = R`. The max-flow itself is computed by ``networkx`` (imported when
:func:`attention_flow` is first called; ``pip install "attnlib[interp]"``), one flow per
(output, input) pair on a graph of :math:`(L_{\text{layers}} + 1) \cdot n` nodes and
:math:`L_{\text{layers}} \cdot n^2` edges: meant for small graphs (tens of tokens, a few
layers), not for a large model.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..validation import check_tensor

__all__ = ["residual_attention", "attention_rollout", "attention_flow"]


def _check_attns(attns) -> list[torch.Tensor]:
    if isinstance(attns, torch.Tensor) or not isinstance(attns, Sequence) or len(attns) == 0:
        raise TypeError("attns must be a non-empty list of (B, H, L, L) attention weights, first layer first; "
                        f"got {type(attns).__name__}")
    shape = None
    for i, a in enumerate(attns):
        check_tensor(a, f"attns[{i}]", min_dim=4)
        if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"attns[{i}] must have shape (B, H, L, L) (self-attention), got {tuple(a.shape)}")
        if shape is not None and a.shape != shape:
            raise ValueError(f"every layer's weights must share one shape: attns[0] has {tuple(shape)}, "
                             f"attns[{i}] has {tuple(a.shape)}")
        shape = a.shape
    return list(attns)


def _check_residual(residual) -> float:
    if isinstance(residual, bool) or not isinstance(residual, (int, float)):
        raise TypeError(f"residual must be a float in [0, 1], got {type(residual).__name__}")
    if not 0.0 <= float(residual) <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    return float(residual)


def residual_attention(weights: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """``residual * I + (1 - residual) * mean_h(weights)``: one layer's edges, ``(B, H, L, L) -> (B, L, L)``."""
    (weights,) = _check_attns([weights])
    residual = _check_residual(residual)
    eye = torch.eye(weights.shape[-1], dtype=weights.dtype, device=weights.device)
    return residual * eye + (1.0 - residual) * weights.mean(dim=1)  # (B, L, L)


def attention_rollout(attns: Sequence[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout ``R = Â_L ... Â_1`` over a list of ``(B, H, L, L)`` weights (first layer first).

    Returns ``(B, L, L)``: ``R[b, i, j]`` is the share of output position ``i`` traced back to
    input token ``j``. Differentiable.
    """
    attns = _check_attns(attns)
    residual = _check_residual(residual)
    rollout = residual_attention(attns[0], residual)  # (B, L, L)
    for a in attns[1:]:
        rollout = residual_attention(a, residual) @ rollout  # the later layer on the left
    return rollout


def attention_flow(attns: Sequence[torch.Tensor], residual: float = 0.5, *,
                   output: Optional[int] = None) -> torch.Tensor:
    """Attention flow: the max-flow from each input token to each output position (networkx).

    Args:
        attns: list of ``(B, H, L, L)`` weights, first layer first.
        residual: weight of the identity edge, as in :func:`attention_rollout`.
        output: if given, only the flows into this output position are computed.
    Returns:
        ``(B, L, L)`` with ``F[b, i, j]`` = max-flow from input ``j`` to output ``i``, or
        ``(B, L)`` (the row ``i = output``) when ``output`` is given. Not differentiable
        (the flow is computed in float64 on the CPU and returned in the weights' dtype).
    """
    try:
        import networkx as nx
        from networkx.algorithms.flow import edmonds_karp
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('attention_flow needs networkx: pip install "attnlib[interp]" (or networkx)') from e
    attns = _check_attns(attns)
    residual = _check_residual(residual)
    b, _, n, _ = attns[0].shape
    if output is not None:
        if isinstance(output, bool) or not isinstance(output, int) or not -n <= output < n:
            raise ValueError(f"output must be an int position in [-{n}, {n}), got {output!r}")
        output %= n
    layers = [residual_attention(a.detach(), residual).double().cpu() for a in attns]  # each (B, L, L)
    outputs = range(n) if output is None else [output]
    flows = torch.zeros(b, len(outputs), n, dtype=torch.float64)
    for batch in range(b):
        graph = nx.DiGraph()
        for depth, a in enumerate(layers, start=1):
            cap = a[batch].tolist()
            for i in range(n):  # node i of layer `depth` reads node j of layer `depth - 1`
                for j in range(n):
                    if cap[i][j] > 0:
                        graph.add_edge((depth - 1, j), (depth, i), capacity=cap[i][j])
        top = len(layers)
        for row, i in enumerate(outputs):
            for j in range(n):
                if (0, j) in graph and (top, i) in graph:
                    flows[batch, row, j] = nx.maximum_flow_value(graph, (0, j), (top, i), flow_func=edmonds_karp)
    flows = flows.to(dtype=attns[0].dtype, device=attns[0].device)
    return flows[:, 0] if output is not None else flows
