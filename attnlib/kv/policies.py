r"""Which cached tokens to keep: eviction policies for a key/value cache with a token budget.

A policy sees, after every decoding step of every layer, the cache and the attention
weights the new queries put on it, and evicts down to ``budget`` tokens per
``(batch, head)`` row (the cache stays rectangular, :class:`attnlib.kv.KVCache`).

* :func:`recency_window`: keep the last ``budget`` tokens (a sliding window).
* :func:`sink_plus_window`: keep the first ``n_sink`` tokens and a recent window
  (StreamingLLM, Xiao et al., 2023; *background, not a seed*): softmax heads park
  attention on the first tokens, so dropping them hurts more than their content suggests.
* :func:`accumulated_attention`: keep the tokens that received the most attention so far,
  plus the ``recent`` newest (H2O, Zhang et al., 2023; *background, not a seed*).
* :func:`output_error`: keep the tokens whose eviction would change the attention output most.
  For weights :math:`a` over the cache and output :math:`o = \sum_i a_i v_i`, evicting
  token :math:`j` and renormalising gives

  .. math:: o^{(-j)} = \frac{o - a_j v_j}{1 - a_j}, \qquad
            o^{(-j)} - o = \frac{a_j}{1 - a_j}\,(o - v_j)

  (:func:`eviction_output_change`), so the error of evicting :math:`j` is
  :math:`\frac{a_j}{1-a_j}\lVert o - v_j\rVert`: the attention score alone misses the value
  term. This is the criterion of seed *CAOTE: KV Caching through Attention Output Error based
  Token Eviction* as its abstract describes it (an eviction error "integrating attention
  scores and value vectors"); the paper's exact normalisation and its combination with
  other scores are not reproduced here. Here the score of a token is this error summed
  over the steps and query heads that have seen it.
* :func:`headwise`: full cache for chosen *retrieval* heads, first tokens plus a recent window
  for the others (seeds *RazorAttention: Efficient KV Cache Compression Through Retrieval Heads*
  and *DuoAttention: Efficient Long-Context LLM Inference with Retrieval and Streaming Heads*).
  A per-head length would make the cache ragged, so this policy keeps the cache and hides the
  dropped tokens from the window heads with an attention mask (:meth:`Policy.attend_mask`);
  :meth:`HeadWise.visible_fraction` says how much of the cache the heads read.

All policies always keep the newest token (it has had no chance to collect attention).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..validation import check_positive_int, check_tensor

__all__ = ["Policy", "RecencyWindow", "SinkPlusWindow", "AccumulatedAttention", "OutputError", "HeadWise",
           "recency_window", "sink_plus_window", "accumulated_attention", "output_error", "headwise",
           "eviction_output_change", "group_sum", "top_budget"]


def eviction_output_change(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    r"""Change of the output when key ``j`` is evicted and the rest renormalised, for every ``j``.

    ``weights (..., Lk)`` (a distribution over the keys), ``values (..., Lk, dv)``; returns
    ``(..., Lk, dv)`` with row ``j`` equal to :math:`\frac{a_j}{1-a_j}(o - v_j)`,
    :math:`o = \sum_i a_i v_i`. Where :math:`a_j = 1` nothing is left after the eviction, the output
    becomes zero (attnlib's convention for an empty row) and the change is :math:`-o`.
    """
    check_tensor(weights, "weights")
    check_tensor(values, "values", min_dim=2)
    if values.shape[:-1] != weights.shape:
        raise ValueError(f"values must be (..., Lk, dv) with (..., Lk) = weights' shape {tuple(weights.shape)}, "
                         f"got {tuple(values.shape)}")
    o = (weights[..., None] * values).sum(-2, keepdim=True)  # (..., 1, dv)
    rest = 1 - weights
    factor = torch.where(rest > 0, weights / torch.where(rest > 0, rest, torch.ones_like(rest)),
                         torch.zeros_like(rest))[..., None]  # (..., Lk, 1)
    return torch.where(rest[..., None] > 0, factor * (o - values), -o.expand_as(values))


def group_sum(weights: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """(B, H, ...) -> (B, Hkv, ...): sum over the query heads that share each key/value head."""
    b, h = weights.shape[:2]
    return weights.reshape(b, n_kv_heads, h // n_kv_heads, *weights.shape[2:]).sum(2)


def top_budget(scores: torch.Tensor, budget: int, recent: int = 1) -> torch.Tensor:
    """Positions to keep: the ``recent`` newest, then the highest ``scores (..., n)``, ``budget`` in all, ascending."""
    check_tensor(scores, "scores")
    check_positive_int(budget, "budget")
    n = scores.shape[-1]
    if not 0 <= recent <= budget <= n:
        raise ValueError(f"need 0 <= recent <= budget <= n, got recent={recent}, budget={budget}, n={n}")
    s = scores.clone()
    if recent:
        s[..., n - recent:] = float("inf")
    return s.topk(budget, dim=-1).indices.sort(-1).values


class Policy:
    """Base class: keeps everything. Subclasses override :meth:`scores` or :meth:`update`.

    ``update(layer, cache, weights)`` is called after every forward step with the layer's cache (already
    holding the new tokens) and the weights ``(B, H, T, len)`` of the new queries.
    """

    def __init__(self, budget: int):
        self.budget = check_positive_int(budget, "budget")
        self.reset()

    def reset(self) -> None:
        self.state = {}

    def attend_mask(self, layer: int, cache) -> Optional[torch.Tensor]:
        return None

    def scores(self, layer: int, cache, weights: torch.Tensor) -> Optional[torch.Tensor]:
        """``(B, Hkv, len)`` importance of each cached token (higher = keep), or ``None``; updates running state."""
        return None

    def keep(self, layer: int, cache, scores: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The positions to keep, ``(B, Hkv, budget)`` or ``(budget,)``, when ``len(cache) > budget``."""
        if scores is None:
            return None
        return top_budget(scores, self.budget, getattr(self, "recent", 1))

    def update(self, layer: int, cache, weights: torch.Tensor) -> None:
        s = self.scores(layer, cache, weights)  # running statistics are updated at every step
        if len(cache) <= self.budget:
            return
        keep = self.keep(layer, cache, s)
        if keep is None:
            return
        cache.evict(keep)
        if layer in self.state:  # the statistics follow the tokens kept
            st = self.state[layer]
            self.state[layer] = st.gather(-1, keep.to(st.device).expand(*st.shape[:2], -1))


class RecencyWindow(Policy):
    """Keep the ``budget`` most recent tokens."""

    def keep(self, layer, cache, scores):
        n = len(cache)
        return torch.arange(n - self.budget, n, device=cache.device)


class SinkPlusWindow(Policy):
    """Keep the first ``n_sink`` tokens and the ``budget - n_sink`` most recent ones."""

    def __init__(self, budget: int, n_sink: int = 1):
        self.n_sink = check_positive_int(n_sink, "n_sink")
        if n_sink >= budget:
            raise ValueError(f"n_sink={n_sink} must be smaller than budget={budget}")
        super().__init__(budget)

    def keep(self, layer, cache, scores):
        n, w = len(cache), self.budget - self.n_sink
        return torch.cat([torch.arange(self.n_sink), torch.arange(n - w, n)]).to(cache.device)


class AccumulatedAttention(Policy):
    """Keep the ``recent`` newest tokens and the heaviest hitters: most attention received, summed over steps."""

    def __init__(self, budget: int, recent: int = 1):
        self.recent = check_positive_int(recent, "recent")
        if recent > budget:
            raise ValueError(f"recent={recent} must be at most budget={budget}")
        super().__init__(budget)

    def _step_scores(self, cache, weights):
        return group_sum(weights, cache.n_kv_heads).sum(2)  # (B, Hkv, len)

    def scores(self, layer, cache, weights):
        new = self._step_scores(cache, weights)
        old = self.state.get(layer)
        if old is not None:
            new[..., :old.shape[-1]] += old
        self.state[layer] = new
        return new


class OutputError(AccumulatedAttention):
    r"""Keep the tokens whose eviction changes the output most: :math:`\frac{a_j}{1-a_j}\lVert o - v_j\rVert`, summed."""

    def _step_scores(self, cache, weights):
        b, h, t, n = weights.shape
        values = cache.values()  # (B, Hkv, len, D)
        v = values.repeat_interleave(h // cache.n_kv_heads, dim=1)[:, :, None]  # (B, H, 1, len, D)
        change = eviction_output_change(weights, v.expand(b, h, t, n, -1))  # (B, H, T, len, D)
        return group_sum(change.norm(dim=-1), cache.n_kv_heads).sum(2)  # (B, Hkv, len)


class HeadWise(Policy):
    """Retrieval heads read the whole cache; the others read the first ``n_sink`` tokens and a recent window.

    ``retrieval``: a boolean ``(n_layers, n_kv_heads)`` tensor, True for a retrieval head. ``budget`` is the
    window heads' budget (sinks + window). Nothing is evicted: the window heads get an attention mask.
    """

    def __init__(self, budget: int, retrieval: torch.Tensor, n_sink: int = 1):
        if not isinstance(retrieval, torch.Tensor) or retrieval.dtype != torch.bool or retrieval.dim() != 2:
            raise TypeError("retrieval must be a boolean (n_layers, n_kv_heads) tensor")
        self.retrieval, self.n_sink = retrieval, check_positive_int(n_sink, "n_sink")
        if n_sink >= budget:
            raise ValueError(f"n_sink={n_sink} must be smaller than budget={budget}")
        super().__init__(budget)

    def attend_mask(self, layer, cache):
        if len(cache) == 0:
            return None  # the prefill reads everything; the masks apply to one-token decoding steps
        n = len(cache) + 1  # the token about to be appended is visible too
        pos = torch.arange(n, device=cache.device)
        window = (pos < self.n_sink) | (pos >= n - (self.budget - self.n_sink))  # (n,)
        full = self.retrieval[layer].to(cache.device)[None, :, None]  # (1, Hkv, 1)
        return (full | window).expand(cache.batch, -1, -1)  # (B, Hkv, n)

    def update(self, layer, cache, weights):
        return None

    def visible_fraction(self, length: int) -> float:
        """Share of the ``(layer, head, position)`` cache entries the heads read at cache length ``length``."""
        r = float(self.retrieval.float().mean())
        return r + (1 - r) * min(length, self.budget) / length


def recency_window(budget: int) -> RecencyWindow:
    """A policy that keeps the ``budget`` most recent tokens."""
    return RecencyWindow(budget)


def sink_plus_window(budget: int, n_sink: int = 1) -> SinkPlusWindow:
    """A policy that keeps ``n_sink`` first tokens and a recent window (StreamingLLM; background)."""
    return SinkPlusWindow(budget, n_sink)


def accumulated_attention(budget: int, recent: int = 1) -> AccumulatedAttention:
    """A policy that keeps the most-attended tokens and the ``recent`` newest (H2O; background)."""
    return AccumulatedAttention(budget, recent)


def output_error(budget: int, recent: int = 1) -> OutputError:
    """A policy that keeps the tokens whose eviction would change the attention output most (CAOTE's criterion)."""
    return OutputError(budget, recent)


def headwise(budget: int, retrieval: torch.Tensor, n_sink: int = 1) -> HeadWise:
    """Full cache for retrieval heads, sinks + window for the others (RazorAttention, DuoAttention)."""
    return HeadWise(budget, retrieval, n_sink)
