r"""Chunked local attention plus a gated FIFO memory of past chunk summaries (seed: *Recurrent
Memory-Augmented Transformers with Chunked Attention for Long-Context Language Modeling*).

The sequence is cut into chunks of ``chunk_size``; each chunk attends causally to itself (local
attention) and reads a FIFO of at most ``n_slots`` summaries (mean key, mean value) of earlier
chunks: ``out = local + sigmoid(gate) * read(memory)``. The summary-by-mean and the scalar gate are
this course's choices, not the abstract's. With an empty memory (first chunk, or ``n_slots`` pairs
not yet written) the output is exactly local attention.
"""

from __future__ import annotations

import torch

from ..core import scaled_dot_product_attention
from ..validation import check_positive_int, check_tensor

__all__ = ["GatedFIFOMemory"]


class GatedFIFOMemory:
    """``__call__(q, k, v)`` on (..., L, d)/(..., L, dv) -> (..., L, dv); ``gate`` is a logit (float or tensor)."""

    def __init__(self, n_slots: int, chunk_size: int, gate: float = 0.0):
        self.n_slots = check_positive_int(n_slots, "n_slots")
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.gate = gate

    def __call__(self, q, k, v):
        for name, x in (("q", q), ("k", k), ("v", v)):
            check_tensor(x, name, min_dim=2)
        if not (q.shape[-2] == k.shape[-2] == v.shape[-2]) or q.shape[-1] != k.shape[-1]:
            raise ValueError(f"q, k, v must share L and q, k the dim d: got q {tuple(q.shape)}, "
                             f"k {tuple(k.shape)}, v {tuple(v.shape)}")
        outs, mem_k, mem_v = [], [], []
        g = torch.sigmoid(torch.as_tensor(self.gate, dtype=q.dtype))
        for s in range(0, q.shape[-2], self.chunk_size):
            qc, kc, vc = (x[..., s:s + self.chunk_size, :] for x in (q, k, v))
            out = scaled_dot_product_attention(qc, kc, vc, causal=True)  # (..., c, dv)
            if mem_k:
                out = out + g * scaled_dot_product_attention(qc, torch.stack(mem_k, -2), torch.stack(mem_v, -2))
            outs.append(out)
            mem_k, mem_v = (mem_k + [kc.mean(-2)])[-self.n_slots:], (mem_v + [vc.mean(-2)])[-self.n_slots:]
        return torch.cat(outs, -2)
