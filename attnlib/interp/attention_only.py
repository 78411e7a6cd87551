r"""A small causal attention-only Transformer whose heads lab 14 dissects (background architecture, not a seed).

Token plus learned absolute position embeddings, then ``n_layers`` pre-norm residual
blocks that hold *only* attention (:class:`attnlib.heads.MultiHeadAttention`, causal),
a final LayerNorm and an unembedding:

.. math::

    h_0 = E[t] + P, \qquad h_\ell = h_{\ell-1} + \operatorname{MHA}_\ell(\operatorname{LN}(h_{\ell-1})),
    \qquad \text{logits} = U\, \operatorname{LN}(h_L) .

With no MLPs every path from the input to the logits goes through heads, which is
what makes an attention-only model easy to read (Elhage et al., 2021, *background, not a
seed*). ``head_mask`` ``(n_layers, n_heads)`` scales each head's output before ``W_O``
(0 removes it), as in :mod:`attnlib.heads`; :func:`attnlib.interp.heads.head_ablation`
does the same with hooks for any model built from those layers.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..heads import MultiHeadAttention
from ..validation import check_positive_int

__all__ = ["AttentionOnlyTransformer"]


class AttentionOnlyTransformer(nn.Module):
    """Tokens ``(B, L)`` -> next-token logits ``(B, L, vocab_size)``; ``blocks[l]`` is layer ``l``'s attention."""

    def __init__(self, vocab_size: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 max_len: int = 64):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("d_model", d_model), ("n_layers", n_layers),
                            ("n_heads", n_heads), ("max_len", max_len)):
            check_positive_int(value, name)
        self.vocab_size, self.max_len, self.n_layers, self.n_heads = vocab_size, max_len, n_layers, n_heads
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(0.02 * torch.randn(max_len, d_model))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.blocks = nn.ModuleList(MultiHeadAttention(d_model, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor, *, head_mask: Optional[torch.Tensor] = None,
                return_attention: bool = False):
        """``head_mask``: ``(n_layers, n_heads)`` factors (1 keep, 0 remove). With ``return_attention``
        also returns the list of ``(B, H, L, L)`` weights, first layer first."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
            raise TypeError(f"tokens must be an integer tensor (B, L), got {getattr(tokens, 'dtype', type(tokens))}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len={self.max_len}")
        if head_mask is not None and tuple(head_mask.shape) != (self.n_layers, self.n_heads):
            raise ValueError(f"head_mask must have shape ({self.n_layers}, {self.n_heads}), "
                             f"got {tuple(head_mask.shape)}")
        h = self.embed(tokens) + self.position[: tokens.shape[1]]  # (B, L, d_model)
        maps = []
        for layer, (norm, mha) in enumerate(zip(self.norms, self.blocks)):
            out, w = mha(norm(h), causal=True, need_weights=True,
                         head_mask=None if head_mask is None else head_mask[layer])
            h = h + out
            maps.append(w)
        logits = self.unembed(self.norm(h))  # (B, L, vocab_size)
        return (logits, maps) if return_attention else logits
