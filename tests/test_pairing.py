"""The repository's notebooks: every pair in sync, no outputs committed, labs/ generated from solutions/."""

import json

import pytest
from helpers import ROOT

import make_labs
import notebooks
import sync

IPYNBS = sorted(p for d in notebooks.NOTEBOOK_DIRS for p in (ROOT / d).glob("*.ipynb"))


def test_every_pair_is_in_sync():
    problems = sync.problems()
    assert not problems, "run `make sync`:\n" + "\n".join(problems)


def test_labs_are_generated_from_solutions():
    problems = make_labs.stale()
    assert not problems, "run `make labs`:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", IPYNBS, ids=lambda p: str(p.relative_to(ROOT)))
def test_ipynb_has_no_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: outputs committed"


def test_every_solution_has_a_lab_with_every_exercise():
    for sol in notebooks.notebook_sources(("solutions",)):
        sol_nb = notebooks.read_md(sol)
        lab_nb = notebooks.read_md(ROOT / "labs" / sol.name)
        exercises = {c.metadata["exercise"] for c in sol_nb.cells if "exercise" in c.metadata.get("tags", [])}
        assert exercises, f"{sol.name} has no exercise cells"
        for cell in lab_nb.cells:
            if "exercise" in cell.metadata.get("tags", []):
                assert f'NotImplementedError("Exercise {cell.metadata["exercise"]}:' in cell.source
            assert "BEGIN SOLUTION" not in cell.source and "hidden" not in cell.metadata.get("tags", [])
        checked = {c.metadata["exercise"] for c in sol_nb.cells if "check" in c.metadata.get("tags", [])}
        assert exercises <= checked, f"{sol.name}: exercises without a check cell: {exercises - checked}"
