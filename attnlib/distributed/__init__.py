"""Context parallelism: attention over a sequence sharded across processes (``torch.distributed``).

* :mod:`~attnlib.distributed.merge` - attention over a block with its log-sum-exp; merging two partials.
* :mod:`~attnlib.distributed.ring` - ring attention (K/V around a ring, forward and backward).
* :mod:`~attnlib.distributed.zigzag` - contiguous and zig-zag (load-balanced causal) layouts.
* :mod:`~attnlib.distributed.ulysses` - all-to-all (Ulysses) context parallelism.
* :mod:`~attnlib.distributed.model` - the analytical time model of both at cluster scale.
* :mod:`~attnlib.distributed.launch` - spawning gloo ranks on one machine; ``python -m attnlib.distributed``.
"""

from .merge import block_attention, merge_partials
from .ring import ring_attention
from .ulysses import ulysses_attention
from .zigzag import shard, unshard, zigzag_shard

__all__ = ["block_attention", "merge_partials", "ring_attention", "ulysses_attention", "shard", "unshard",
           "zigzag_shard"]
