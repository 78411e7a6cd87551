"""attnlib.interp: is attention an explanation? (lab 13)

* :mod:`attnlib.interp.explain` - attention rollout and attention flow (networkx max-flow).
* :mod:`attnlib.interp.gradients` - gradient × input, integrated gradients, occlusion.
* :mod:`attnlib.interp.agreement` - Spearman and Kendall rank agreement between explanations.
* :mod:`attnlib.interp.deception` - the impermissible-token attention penalty.
* :mod:`attnlib.interp.models` - the small Transformer and BiGRU classifiers lab 13 explains.

networkx is imported only when :func:`attention_flow` runs, so ``import attnlib`` needs no extra.
"""

from .agreement import average_ranks, rank_agreement
from .deception import impermissible_mass, impermissible_penalty
from .explain import attention_flow, attention_rollout, residual_attention
from .gradients import IG_METHODS, grad_x_input, integrated_gradients, occlusion_importance
from .models import BiGRUAttentionClassifier, EncoderClassifier

__all__ = [
    "attention_rollout", "attention_flow", "residual_attention",
    "grad_x_input", "integrated_gradients", "occlusion_importance", "IG_METHODS",
    "rank_agreement", "average_ranks",
    "impermissible_penalty", "impermissible_mass",
    "EncoderClassifier", "BiGRUAttentionClassifier",
]
