"""Seeded synthetic tasks for the labs (no downloads).

Every generator takes an explicit ``seed`` (or ``torch.Generator``), returns
tensors with documented shapes, and gives the same data for the same seed.
"""
