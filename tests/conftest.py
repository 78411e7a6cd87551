"""Test-wide settings.

Without a GPU, Triton kernels run in Triton's interpreter. TRITON_INTERPRET must
be set before Triton is first imported, so it is set here, before any test
module imports attnlib.kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
