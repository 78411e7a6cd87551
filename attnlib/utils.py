"""Small conveniences shared by the notebooks: seeding, fast mode, where we run."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

__all__ = ["seed_everything", "fast_mode", "on_colab", "default_device"]


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a fresh ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def fast_mode() -> bool:
    """True when ``ATTN_FAST=1``: notebooks shrink their experiments (never their checks)."""
    return os.environ.get("ATTN_FAST", "0") not in ("", "0", "false", "False")


def on_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
