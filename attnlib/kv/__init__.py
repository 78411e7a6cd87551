"""The key/value cache of incremental decoding, eviction policies and low-rank key selection.

* :mod:`attnlib.kv.cache` - :class:`KVCache`, a preallocated ``(B, Hkv, max_len, D)`` key/value buffer.
* :mod:`attnlib.kv.decode` - prefill then one token at a time through :mod:`attnlib.models`' cached forward.
* :mod:`attnlib.kv.policies` - which cached tokens to keep: recency, sinks + window, accumulated attention,
  attention-output error, head-wise (retrieval heads full).
* :mod:`attnlib.kv.loki` - Loki: score keys in a low-rank PCA basis, attend exactly to the top-k.
"""

from .cache import KVCache, kv_bytes_per_token
from .decode import decode_logits, grouped_decode_attention, incremental_decode, make_caches
from .loki import loki_attention, loki_topk, pca_basis
from .policies import (AccumulatedAttention, HeadWise, OutputError, Policy, RecencyWindow, SinkPlusWindow,
                       accumulated_attention, eviction_output_change, headwise, output_error, recency_window,
                       sink_plus_window, top_budget)

__all__ = ["KVCache", "kv_bytes_per_token", "decode_logits", "incremental_decode", "loki_attention", "loki_topk",
           "pca_basis", "Policy", "RecencyWindow", "SinkPlusWindow", "AccumulatedAttention", "OutputError",
           "HeadWise", "recency_window", "sink_plus_window", "accumulated_attention", "output_error", "headwise",
           "eviction_output_change", "top_budget", "grouped_decode_attention", "make_caches"]
