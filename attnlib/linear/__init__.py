r"""Linear, kernelized and recurrent attention (lab 08; theory in chapter 03).

* :mod:`~attnlib.linear.feature_maps` - ``identity``, ``relu``, ``elu+1`` and positive random
  features for the softmax kernel.
* :mod:`~attnlib.linear.attention` - :func:`linear_attention` (parallel; causal by prefix sums,
  chunked, O(L) memory), :func:`linear_attention_recurrent` (the state form
  :math:`S_t = S_{t-1} + \phi(k_t) v_t^\top`), the explicit weights for analysis, and a
  magnitude-aware variant.
* :mod:`~attnlib.linear.gated` - :func:`gated_linear_attention` (decayed state), :func:`ema`
  (simplified Mega), and ``attention=`` maps for :class:`attnlib.models.TinyTransformer`.
* :mod:`~attnlib.linear.probe` - the largest CPU allocation of a computation (memory checks).

Seeds: *Understanding Transformers through the Lens of Pavlovian Conditioning*; *On the
Expressiveness of Softmax Attention: A Recurrent Neural Network Perspective*; *Rectifying Magnitude
Neglect in Linear Attention*; *ReGLA: Refining Gated Linear Attention*; *Mega: Moving Average
Equipped Gated Attention*. Shapes ``(..., L, d)`` as everywhere in attnlib.
"""

from . import attention, feature_maps, gated, probe
from .attention import (linear_attention, linear_attention_recurrent, linear_attention_weights,
                        magnitude_aware_linear_attention)
from .feature_maps import FEATURE_MAPS, elu_plus_one, identity, relu, resolve_feature_map, softmax_kernel_features
from .gated import GatedLinearAttentionMap, LinearAttentionMap, ema, gated_linear_attention
from .probe import largest_cpu_allocation

__all__ = ["attention", "feature_maps", "gated", "probe",
           "linear_attention", "linear_attention_recurrent", "linear_attention_weights",
           "magnitude_aware_linear_attention", "FEATURE_MAPS", "identity", "relu", "elu_plus_one",
           "softmax_kernel_features", "resolve_feature_map", "gated_linear_attention", "ema",
           "LinearAttentionMap", "GatedLinearAttentionMap", "largest_cpu_allocation"]
