"""Reference data that ships with attnlib (so it is there on Colab too).

``seed_papers.csv`` lists the 201 seed papers the course is built from: the
number and title (copied exactly from the course's seed file) and the category
that the course's syllabus map gives each paper by the main contribution its
abstract states.
"""

from __future__ import annotations

import csv
from importlib import resources

__all__ = ["CATEGORIES", "load_seed_papers"]

#: Category codes of the syllabus map, with what each holds.
CATEGORIES = {
    "FND": "Foundations, surveys and theory views",
    "CLS": "Classic seq2seq, alignment and pointer attention",
    "POS": "Position encoding and length generalization",
    "NRM": "Normalization and sparse alternatives to softmax",
    "VAR": "Scoring-function and architectural variants",
    "MHR": "Multi-head structure, rank and head redundancy",
    "EFF": "Efficient, linear and sparse attention for long context",
    "KVC": "KV cache and decoding efficiency",
    "SYS": "Kernels and systems",
    "MEM": "Memory and recurrence",
    "SNK": "Attention sinks and massive activations",
    "INT": "Interpretability and analysis of attention",
    "HLC": "Hallucination and long-context behaviour via attention heads",
    "APP": "Applications that only use attention, or off-topic",
}


def load_seed_papers() -> list[dict]:
    """Return one dict per seed paper: ``{"number": int, "title": str, "category": str}``."""
    text = resources.files(__package__).joinpath("seed_papers.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    return [{"number": int(r["number"]), "title": r["title"], "category": r["category"]} for r in rows]
