"""attnlib.interp: is attention an explanation? (lab 13) What do heads do? (lab 14)

* :mod:`attnlib.interp.explain` - attention rollout and attention flow (networkx max-flow).
* :mod:`attnlib.interp.gradients` - gradient × input, integrated gradients, occlusion.
* :mod:`attnlib.interp.agreement` - Spearman and Kendall rank agreement between explanations.
* :mod:`attnlib.interp.deception` - the impermissible-token attention penalty.
* :mod:`attnlib.interp.models` - the small Transformer and BiGRU classifiers lab 13 explains.
* :mod:`attnlib.interp.heads` - induction and retrieval scores, lookback ratio, contrastive decoding,
  head ablation, QK/OV circuits (lab 14).
* :mod:`attnlib.interp.attention_only` - the causal attention-only Transformer lab 14 dissects.

networkx is imported only when :func:`attention_flow` runs, so ``import attnlib`` needs no extra.
"""

from .agreement import average_ranks, rank_agreement
from .deception import impermissible_mass, impermissible_penalty
from .explain import attention_flow, attention_rollout, residual_attention
from .gradients import IG_METHODS, grad_x_input, integrated_gradients, occlusion_importance
from .models import BiGRUAttentionClassifier, EncoderClassifier
from .attention_only import AttentionOnlyTransformer
from .heads import (contrast_decode, entropy, head_ablation, induction_chance, induction_score, induction_targets,
                    lookback_ratio, ov_copying_score, position_profile, qk_ov_svd, retrieval_score)

__all__ = [
    "attention_rollout", "attention_flow", "residual_attention",
    "grad_x_input", "integrated_gradients", "occlusion_importance", "IG_METHODS",
    "rank_agreement", "average_ranks",
    "impermissible_penalty", "impermissible_mass",
    "EncoderClassifier", "BiGRUAttentionClassifier",
    "AttentionOnlyTransformer", "induction_targets", "induction_score", "induction_chance", "retrieval_score",
    "lookback_ratio", "contrast_decode", "entropy", "head_ablation", "qk_ov_svd", "ov_copying_score",
    "position_profile",
]
