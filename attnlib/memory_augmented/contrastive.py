r"""Cross-batch negatives: a contrastive loss that teaches keys to stand apart from other documents' keys
(seed: *Focused Transformer: Contrastive Training for Context Scaling*).

The abstract names the *distraction issue*: as an external (key, value) memory holds more documents,
"the proportion of relevant keys to irrelevant ones decreases", and keys of different documents
overlap; the Focused Transformer answers with "a training process inspired by contrastive learning".
This module is that idea in its smallest form (the loss and its grouping are this course's choices,
not the paper's exact procedure): row ``i`` of ``q`` should pick row ``i`` of ``k`` among all rows of
its group,

.. math::

    \mathcal L = -\frac1N \sum_{i=1}^N \log
        \frac{\exp(s\, q_i^\top k_i)}{\sum_{j=1}^N \exp(s\, q_i^\top k_j)} ,

an InfoNCE loss with scale ``s`` (default ``1/sqrt(d)``). Leading dimensions are separate groups:
``q, k`` of shape ``(B, N, d)`` take negatives only from their own group (e.g. the keys of one
document); flattening to ``(1, B*N, d)`` adds every other document of the batch as negatives, the
cross-batch case.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..validation import check_tensor

__all__ = ["crossbatch_negatives"]


def crossbatch_negatives(q: torch.Tensor, k: torch.Tensor, *, scale: Optional[float] = None) -> torch.Tensor:
    """Mean InfoNCE loss of ``q`` (..., N, d) against ``k`` (..., N, d): row i's positive is k[..., i, :],
    every other row of the same leading index a negative. Returns a scalar tensor."""
    check_tensor(q, "q", min_dim=2)
    check_tensor(k, "k", min_dim=2)
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (..., N, d): got q {tuple(q.shape)}, k {tuple(k.shape)}")
    if q.shape[-2] < 1:
        raise ValueError(f"need at least one (query, key) pair, got N = {q.shape[-2]}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale  # (..., N, N)
    return -torch.log_softmax(logits, dim=-1).diagonal(dim1=-2, dim2=-1).mean()
