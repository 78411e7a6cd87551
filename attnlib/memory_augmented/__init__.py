"""Memory-augmented attention (lab 11): a k-NN memory read with a joint softmax, the delta-rule write
and a Titans-style test-time neural memory, Goldilocks window memories, and the
cross-batch-negatives loss of the Focused Transformer. One idea per module."""

from .contrastive import crossbatch_negatives
from .fifo import GatedFIFOMemory
from .knn import KNNMemory, joint_softmax_read, knn_read
from .neural import NeuralMemory, delta_rule_write, neural_memory_step
from .windows import window_memories

__all__ = ["crossbatch_negatives", "GatedFIFOMemory", "KNNMemory", "joint_softmax_read", "knn_read", "NeuralMemory",
           "delta_rule_write", "neural_memory_step", "window_memories"]
