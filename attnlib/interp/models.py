r"""Two small classifiers whose explanations lab 13 studies (background architectures, not seeds).

* :class:`EncoderClassifier`: a bidirectional (not causal) pre-norm Transformer encoder,
  token plus learned absolute position embeddings, that classifies from position 0 (a
  ``[CLS]``-style token), as in the seed *Quantifying Attention Flow in Transformers*.
  :meth:`EncoderClassifier.forward_embeddings` takes the token embeddings, so that
  gradient-based attributions can differentiate with respect to them, and returns the
  per-layer attention weights ``(B, H, L, L)`` for rollout and flow.
* :class:`BiGRUAttentionClassifier`: embeddings, a bidirectional GRU and one additive
  attention over its states, :math:`\alpha = \operatorname{softmax}_j(v^\top \tanh(W h_j))`,
  :math:`c = \sum_j \alpha_j h_j`, logits :math:`= U c`: the model family of the seed
  *Learning to Deceive with Attention-Based Explanations*.

Sizes default to what trains in seconds on a laptop CPU.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..core import masked_softmax, scaled_dot_product_attention
from ..validation import check_positive_int

__all__ = ["EncoderClassifier", "BiGRUAttentionClassifier"]


def _check_tokens(tokens, vocab_size: int, max_len: Optional[int] = None) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
        raise TypeError(f"tokens must be an integer tensor of shape (B, L), got "
                        f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]")
    if max_len is not None and tokens.shape[1] > max_len:
        raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len={max_len}")


class _EncoderBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))

    def forward(self, h: torch.Tensor):
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        out, weights = scaled_dot_product_attention(q, k, v, return_weights=True)  # (B, H, L, dh), (B, H, L, L)
        h = h + self.proj(out.transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.norm2(h)), weights


class EncoderClassifier(nn.Module):
    """Tokens ``(B, L)`` -> class logits ``(B, n_classes)``, read from position 0."""

    def __init__(self, vocab_size: int, n_classes: int, *, d_model: int = 32, n_layers: int = 4, n_heads: int = 2,
                 max_len: int = 32):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("n_classes", n_classes), ("d_model", d_model),
                            ("n_layers", n_layers), ("n_heads", n_heads), ("max_len", max_len)):
            check_positive_int(value, name)
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.vocab_size, self.max_len = vocab_size, max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(0.02 * torch.randn(max_len, d_model))
        self.blocks = nn.ModuleList(_EncoderBlock(d_model, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward_embeddings(self, emb: torch.Tensor, *, return_attention: bool = False):
        """Token embeddings ``(B, L, d_model)`` (positions are added here) -> logits, [attention list]."""
        if emb.dim() != 3 or emb.shape[1] > self.max_len:
            raise ValueError(f"emb must be (B, L <= {self.max_len}, d_model), got {tuple(emb.shape)}")
        h = emb + self.position[: emb.shape[1]]
        maps = []
        for block in self.blocks:
            h, weights = block(h)
            maps.append(weights)
        logits = self.head(self.norm(h[:, 0]))  # (B, n_classes)
        return (logits, maps) if return_attention else logits

    def forward(self, tokens: torch.Tensor, *, return_attention: bool = False):
        _check_tokens(tokens, self.vocab_size, self.max_len)
        return self.forward_embeddings(self.embed(tokens), return_attention=return_attention)


class BiGRUAttentionClassifier(nn.Module):
    """Tokens ``(B, L)`` -> logits ``(B, n_classes)`` through a BiGRU and one additive attention over positions.

    ``forward(tokens, mask=None, return_attention=True)`` also returns the weights ``(B, L)``;
    ``mask`` ``(B, L)`` (True = a real token) keeps padding out of the attention.
    """

    def __init__(self, vocab_size: int, n_classes: int, *, d_emb: int = 16, d_hidden: int = 16):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("n_classes", n_classes), ("d_emb", d_emb),
                            ("d_hidden", d_hidden)):
            check_positive_int(value, name)
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, d_emb)
        self.gru = nn.GRU(d_emb, d_hidden, batch_first=True, bidirectional=True)
        self.score = nn.Sequential(nn.Linear(2 * d_hidden, d_hidden), nn.Tanh(), nn.Linear(d_hidden, 1, bias=False))
        self.head = nn.Linear(2 * d_hidden, n_classes)

    def forward(self, tokens: torch.Tensor, mask: Optional[torch.Tensor] = None, *, return_attention: bool = False):
        _check_tokens(tokens, self.vocab_size)
        states, _ = self.gru(self.embed(tokens))  # (B, L, 2 * d_hidden)
        alpha = masked_softmax(self.score(states)[..., 0], mask)  # (B, L)
        logits = self.head((alpha[..., None] * states).sum(1))  # (B, n_classes)
        return (logits, alpha) if return_attention else logits
