"""Reading and writing the course's paired notebooks, deterministically.

The MyST Markdown file (``.md``) is the source of every notebook. Its ``.ipynb``
twin is *generated* from it, so that the same ``.md`` always gives the same
bytes: cell ids are derived from the cells' roles (``exercise-1-2``,
``check-1-2``) or positions, outputs are empty, and Jupytext's version is left
out. That makes "is the pair in sync?" a plain byte comparison, independent of
file timestamps (which a fresh clone scrambles).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIRS = ("chapters", "labs", "solutions")
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def notebook_sources(dirs=NOTEBOOK_DIRS, root: Path = ROOT) -> list[Path]:
    """Every ``.md`` notebook source under ``dirs`` (READMEs excluded), sorted."""
    paths = []
    for d in dirs:
        paths += [p for p in sorted((root / d).glob("*.md")) if p.name.lower() != "readme.md"]
    return paths


def read_md(path: Path) -> nbformat.NotebookNode:
    """Parse a MyST Markdown notebook."""
    return jupytext.read(path, fmt="md:myst")


def cell_id(cell, index: int, seen: set) -> str:
    """A stable, readable id: ``exercise-1-2``/``check-1-2`` for tagged cells, else ``cell-007``."""
    tags = cell.metadata.get("tags", [])
    exercise = cell.metadata.get("exercise")
    if exercise is not None and "exercise" in tags:
        base = f"exercise-{exercise}"
    elif exercise is not None and "check" in tags:
        base = f"check-{exercise}" + ("-hidden" if "hidden" in tags else "")
    else:
        base = f"cell-{index:03d}"
    base = re.sub(r"[^A-Za-z0-9_-]", "-", base)  # ids allow letters, digits, - and _
    cid, n = base, 1
    while cid in seen:
        n += 1
        cid = f"{base}-{n}"
    seen.add(cid)
    return cid


def to_ipynb_text(nb: nbformat.NotebookNode) -> str:
    """The canonical ``.ipynb`` text of a notebook: no outputs, stable ids and metadata."""
    out = nbformat.v4.new_notebook()
    out.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    seen: set = set()
    for i, cell in enumerate(nb.cells):
        meta = {k: v for k, v in cell.metadata.items() if k not in ("execution", "ExecuteTime")}
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source, metadata=meta)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source, metadata=meta)
        else:
            new = nbformat.v4.new_raw_cell(cell.source, metadata=meta)
        new.id = cell_id(cell, i, seen)
        out.cells.append(new)
    nbformat.validate(out)
    return json.dumps(out, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


_VERSION_LINE = re.compile(r"^\s*jupytext_version:.*\n", re.MULTILINE)


def to_md_text(nb: nbformat.NotebookNode) -> str:
    """MyST Markdown text of a notebook, without the Jupytext version line (so versions don't churn files)."""
    nb = nbformat.from_dict(nb)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("jupytext", {})
    return _VERSION_LINE.sub("", jupytext.writes(nb, fmt="md:myst"))


def ipynb_path(md_path: Path) -> Path:
    return md_path.with_suffix(".ipynb")


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` unless the file already holds it; return True if written."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True
