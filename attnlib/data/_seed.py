"""The one way attnlib's data generators turn a seed into a ``torch.Generator``."""

from __future__ import annotations

from typing import Union

import torch

Seed = Union[int, torch.Generator]


def as_generator(seed: Seed) -> torch.Generator:
    """A generator seeded with ``seed`` (an int), or ``seed`` itself if it is already a generator."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)
