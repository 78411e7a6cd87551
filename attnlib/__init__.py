"""attnlib: the attention library that the course *Attention, from Theory to Triton* builds.

One idea per module:

* :mod:`attnlib.core` - reference scaled dot-product attention and its chunked online-softmax form.
* :mod:`attnlib.masks` - boolean masks (True = attend): causal, padding, sliding window.
* :mod:`attnlib.scores` - dot, scaled-dot, general and additive score functions.
* :mod:`attnlib.checks` - the helpers that the labs' check cells use.
* :mod:`attnlib.bench` - FLOP counts and the benchmark entry point.
* :mod:`attnlib.utils` - seeding and fast mode.

Conventions (the API contract): tensors are ``(..., L, d)`` with the sequence
second to last, heads are a leading batch dimension ``(B, H, L, d)``, masks are
boolean with True = attend, a fully masked row gives zeros, bad input raises a
``ValueError``/``TypeError`` that names the argument.
"""

from . import bench, checks, core, masks, scores, utils, validation

__version__ = "0.1.0"

__all__ = ["bench", "checks", "core", "masks", "scores", "utils", "validation", "__version__"]
