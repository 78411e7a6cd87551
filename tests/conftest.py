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

# Hypothesis: no per-example deadline (a busy 2-core machine is slow, not wrong), and
# under CI a derandomized search, so a run is reproducible from its commit.
from hypothesis import settings  # noqa: E402

settings.register_profile("course", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "course")
