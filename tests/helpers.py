"""Shared test helpers: repository paths and loading a solution's exercise code."""

from __future__ import annotations

import sys
import types
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
    code = _code_cells(lab)
    return _run_cells(lab, [code[0].source] + [c.source for c in code[1:] if "exercise" in c.metadata.get("tags", [])])


def _code_cells(lab: str) -> list:
    return [c for c in notebooks.read_md(ROOT / "solutions" / f"{lab}.md").cells if c.cell_type == "code"]


def _run_cells(lab: str, sources: list[str]) -> dict:
    """Execute cell sources in order (IPython syntax translated) in one module; return its globals.

    The module is registered in ``sys.modules`` (each run replaces the last of that lab): torch.compile,
    which flex_attention uses, and kernels compiled later look up a function's globals by its module's name."""
    from IPython.core.inputtransformer2 import TransformerManager

    module = types.ModuleType(f"{lab}_under_test")
    sys.modules[module.__name__] = module
    transform = TransformerManager().transform_cell
    for source in sources:
        exec(compile(transform(source), f"{lab}:cell", "exec"), module.__dict__)
    return module.__dict__


def run_checks(lab: str, exercise=None, old: str = "", new: str = "") -> None:
    """Run the setup cell, every exercise cell and the check cells of ``exercise`` (all if None) of
    ``solutions/<lab>.md`` in one namespace, with ``old`` replaced by ``new`` in that exercise's cells
    (a deliberately broken answer). A failed check raises its AssertionError."""
    code = _code_cells(lab)
    sources = [code[0].source]
    for cell in code[1:]:
        tags, which = cell.metadata.get("tags", []), cell.metadata.get("exercise")
        if "exercise" in tags:
            if old and which == exercise:
                assert old in cell.source, f"mutation target not found in {lab} {which}: {old}"
                sources.append(cell.source.replace(old, new))
            else:
                sources.append(cell.source)
        elif "check" in tags and exercise in (None, which):
            sources.append(cell.source)
    _run_cells(lab, sources)


def copy_course(dest):
    """Copy the working tree to ``dest`` without venvs, builds and caches (for tools that write files)."""
    import shutil

    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "_build", "build", "dist", "*.egg-info", ".jupyter_cache", "__pycache__", "bench-out"))
    return dest


def run_chapter(chapter: str, old: str = "", new: str = "", *, stop_after: str | None = None) -> None:
    """Run the code cells of ``chapters/<chapter>.md`` in order in one module, in fast mode (``ATTN_FAST=1``),
    with ``old`` replaced by ``new`` wherever it occurs (a deliberately broken step; it must occur).

    ``stop_after``: stop after the first cell whose source contains this text (the assert under test), so a
    mutation does not pay for the rest of the chapter. A failed assert raises its AssertionError."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    cells = [c.source for c in notebooks.read_md(ROOT / "chapters" / f"{chapter}.md").cells if c.cell_type == "code"]
    if old:
        if not any(old in s for s in cells):  # not an AssertionError: a stale mutation must not pass as caught
            raise LookupError(f"mutation target not found in {chapter}: {old}")
        cells = [s.replace(old, new) for s in cells]
    if stop_after is not None:
        found = [i for i, s in enumerate(cells) if stop_after in s]
        if not found:
            raise LookupError(f"stop_after text not found in {chapter}: {stop_after}")
        cells = cells[: found[0] + 1]
    previous = os.environ.get("ATTN_FAST")
    os.environ["ATTN_FAST"] = "1"
    # A mutation may patch an attnlib attribute in the setup cell: put every attnlib module back afterwards.
    saved = {name: dict(vars(m)) for name, m in list(sys.modules.items()) if name.split(".")[0] == "attnlib"}
    import torch

    # Chapters set torch's default dtype (float64) and seed its generator: the tests after this one
    # (same worker process) must not inherit either.
    dtype, rng = torch.get_default_dtype(), torch.random.get_rng_state()
    import matplotlib.pyplot as plt

    show = plt.show
    try:
        plt.show = lambda *args, **kwargs: plt.close("all")
        _run_cells(f"chapter_{chapter}", cells)
    finally:
        plt.show = show
        torch.set_default_dtype(dtype)
        torch.random.set_rng_state(rng)
        for name, contents in saved.items():
            namespace = vars(sys.modules[name])
            for key in set(namespace) - set(contents):
                if not isinstance(namespace[key], types.ModuleType):  # a submodule imported meanwhile stays
                    del namespace[key]
            namespace.update(contents)
        if previous is None:
            os.environ.pop("ATTN_FAST", None)
        else:
            os.environ["ATTN_FAST"] = previous
