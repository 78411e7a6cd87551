"""Shared test helpers: repository paths and loading a solution's exercise code."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import notebooks  # noqa: E402  (tools/notebooks.py)


def exercise_namespace(lab: str) -> dict:
    """Run the setup cell and every exercise cell of ``solutions/<lab>.md``; return their globals.

    Only the first code cell (setup) and cells tagged ``exercise`` run, so the
    solution's functions can be compared with attnlib without running its
    experiments. IPython syntax (``%pip``) is translated first.
    """
    from IPython.core.inputtransformer2 import TransformerManager

    nb = notebooks.read_md(ROOT / "solutions" / f"{lab}.md")
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    chosen = [code_cells[0]] + [c for c in code_cells[1:] if "exercise" in c.metadata.get("tags", [])]
    namespace: dict = {"__name__": f"solution_{lab}"}
    transform = TransformerManager().transform_cell
    for cell in chosen:
        exec(compile(transform(cell.source), f"{lab}:{cell.metadata.get('exercise', 'setup')}", "exec"), namespace)
    return namespace


def copy_course(dest):
    """Copy the working tree to ``dest`` without venvs, builds and caches (for tools that write files)."""
    import shutil

    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "_build", "build", "dist", "*.egg-info", ".jupyter_cache", "__pycache__", "bench-out"))
    return dest
