"""Generated labs run top to bottom: each unfinished exercise stops at NotImplementedError naming it.

The book executes the labs too; exercise and check cells carry the tag
``raises-exception``, so everything else in a lab (setup, experiments, which
fall back on attnlib's reference) must run without error.

The generated labs run with ``ATTN_FAST=1`` (smaller experiments, the same checks): what this test
checks is the lab's structure, and nbval already runs every solution, experiments included, at full
size; the book build runs the labs at full size too (``make book``).
"""


import nbformat
import pytest
from helpers import ROOT
from nbclient import NotebookClient

LABS = sorted((ROOT / "labs").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_lab_runs_and_names_each_unfinished_exercise(path, monkeypatch):
    monkeypatch.setenv("ATTN_FAST", "1")  # the kernel inherits it
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or "exercise" not in tags:
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        calls = [o for o in nb.cells if "check" in o.metadata.get("tags", []) and o.metadata.get("exercise") == cell.metadata["exercise"]]
        # Defining functions does not raise; their check cells do, with the exercise's name.
        raised = errors + [o for c in calls for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert raised, f"{path.name}: exercise {cell.metadata['exercise']}: nothing failed in the unfinished lab"
        assert any(o["ename"] == "NotImplementedError" and f"Exercise {cell.metadata['exercise']}" in o["evalue"]
                   for o in raised), f"{path.name}: exercise {cell.metadata['exercise']}: {[o['evalue'] for o in raised]}"
