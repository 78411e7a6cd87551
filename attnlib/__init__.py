"""attnlib: the attention library that the course *Attention, from Theory to Triton* builds.

One idea per module:

* :mod:`attnlib.core` - reference scaled dot-product attention and its chunked online-softmax form.
* :mod:`attnlib.masks` - boolean masks (True = attend): causal, padding, sliding window.
* :mod:`attnlib.scores` - dot, scaled-dot, general and additive score functions.
* :mod:`attnlib.memory` - sparse distributed memory, Hebbian associative memory, recurrent softmax.
* :mod:`attnlib.prob` - attention as inference: posteriors, marginals, REINFORCE, ELBO.
* :mod:`attnlib.rank` - rank limits: low-rank logits, rank collapse, residual subspaces.
* :mod:`attnlib.normalizers` - softmax, sparsemax, entmax, ReLU, sigmoid and sink normalizers.
* :mod:`attnlib.heads` - multi-head, grouped-query, multi-query and latent attention.
* :mod:`attnlib.linear` - linear, kernelized, recurrent and gated attention; EMA.
* :mod:`attnlib.seq2seq`, :mod:`attnlib.pointer` - GRU encoder-decoder attention, pointer networks.
* :mod:`attnlib.position` - sinusoidal, learned, relative, rotary, ALiBi and contextual positions.
* :mod:`attnlib.lengthgen` - threshold-relative and monotonic location attention.
* :mod:`attnlib.memory_augmented` - k-NN, gated FIFO and test-time neural memories; cross-batch negatives.
* :mod:`attnlib.kv` - the key/value cache, incremental decoding, eviction policies, Loki.
* :mod:`attnlib.sparse` - sparse patterns, receptive fields, MoBA, k-means routing, landmark and SEA selection.
* :mod:`attnlib.flex` - a dense reference of FlexAttention's score_mod/mask_mod model and its block summaries.
* :mod:`attnlib.expressivity` - what one layer can do: the prefix decomposition, the scan-and-snap toy.
* :mod:`attnlib.models` - a small causal Transformer with pluggable parts, and its trainer.
* :mod:`attnlib.interp` - explanations: attention rollout and flow, gradients, rank agreement, deception.
* :mod:`attnlib.sinks` - attention sinks and massive activations: metrics, calibration, sink-free layers.
* :mod:`attnlib.data` - seeded synthetic tasks.
* :mod:`attnlib.kernels` - Triton kernels (imported on first use; needs Triton).
* :mod:`attnlib.checks` - the helpers that the labs' check cells use.
* :mod:`attnlib.bench` - FLOP counts and the benchmark entry point.
* :mod:`attnlib.resources` - reference data (the seed-paper table).
* :mod:`attnlib.utils` - seeding and fast mode.

Conventions (the API contract): tensors are ``(..., L, d)`` with the sequence
second to last, heads are a leading batch dimension ``(B, H, L, d)``, masks are
boolean with True = attend, a fully masked row gives zeros, bad input raises a
``ValueError``/``TypeError`` that names the argument.
"""

from . import (bench, checks, core, data, flex, heads, interp, kernels, kv, lengthgen, linear, masks, memory, models,
               normalizers, pointer, position, prob, rank, resources, scores, seq2seq, sinks, sparse, utils,
               validation)
from . import expressivity
from . import memory_augmented

__version__ = "0.1.0"

__all__ = ["bench", "checks", "core", "data", "flex", "heads", "interp", "kernels", "kv", "lengthgen", "linear",
           "masks", "memory", "models", "normalizers", "pointer", "position", "prob", "rank", "resources", "scores",
           "seq2seq", "sinks", "sparse", "utils", "validation", "__version__",
           "expressivity", "memory_augmented"]
