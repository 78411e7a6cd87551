"""Memory-augmented attention (lab 11): a k-NN memory read with a joint softmax, the delta-rule write
and a Titans-style test-time neural memory, and Goldilocks window memories. One idea per module."""

from .fifo import GatedFIFOMemory
from .knn import KNNMemory, joint_softmax_read
from .neural import NeuralMemory, delta_rule_write
from .windows import window_memories

__all__ = ["GatedFIFOMemory", "KNNMemory", "joint_softmax_read", "NeuralMemory", "delta_rule_write", "window_memories"]
