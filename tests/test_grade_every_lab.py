"""Every lab is gradable: graded by tools/grade.py, the instructor's solution earns full points, the
generated lab zero, and a solution with one exercise slightly wrong loses points in that exercise only.

The slightly wrong answer is the first mutation that tests/test_checks_catch_bugs.py lists for the lab's
last exercise (a slip a student might make). A new lab is covered as soon as it is in solutions/ (and it
must have mutations there). The kernel labs run in Triton's interpreter here, as on any CPU.
"""

from __future__ import annotations

import json
import sys

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))

LABS = sorted(p.stem for p in (ROOT / "solutions").glob("lab*.md"))
KERNEL_LABS = {"lab15_triton_basics", "lab16_flash_forward", "lab17_flash_backward",
               "lab18_decoding_and_sparse_kernels"}
PROCESS_LABS = {"lab19_context_parallel"}  # checks that start torch.distributed processes


def _wrong_answer(lab: str, nb: dict, plan) -> str:
    """Break the last exercise of ``nb`` with its first listed mutation; return that exercise's id."""
    from test_checks_catch_bugs import MUTATIONS

    assert lab in MUTATIONS, f"{lab} has no mutations in tests/test_checks_catch_bugs.py"
    last = plan.exercises[-1].exercise
    old, new = next((o, n) for ex, o, n in MUTATIONS[lab] if ex == last)
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("exercise") == last and "exercise" in cell["metadata"].get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if old in source:
                cell["source"] = source.replace(old, new)
                return last
    raise AssertionError(f"{lab}: mutation target of exercise {last} not found: {old!r}")


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_solution_full_points_lab_zero_one_slip_loses_that_exercise(lab, tmp_path):
    if lab in KERNEL_LABS:
        pytest.importorskip("triton")
    import grade
    from grading import rebuild, sandbox

    if lab in PROCESS_LABS:
        mode, why = sandbox.probe()
        if not mode.startswith("namespaces"):  # the audit-hook level refuses new processes (README, Isolation)
            pytest.skip(f"{lab}'s checks start processes, which only the namespace sandbox allows: {why}")
    from notebooks import read_md, to_ipynb_text

    subs, out = tmp_path / "submissions", tmp_path / "out"
    subs.mkdir()
    plan = rebuild.load_solution(lab, ROOT / "solutions")
    solution = json.loads(to_ipynb_text(read_md(ROOT / "solutions" / f"{lab}.md")))
    (subs / "solution.ipynb").write_text(json.dumps(solution), encoding="utf-8")
    (subs / "untouched.ipynb").write_text((ROOT / "labs" / f"{lab}.ipynb").read_text(encoding="utf-8"),
                                          encoding="utf-8")
    broken = _wrong_answer(lab, solution, plan)
    (subs / "one_slip.ipynb").write_text(json.dumps(solution), encoding="utf-8")
    result = grade.grade(lab, subs, out, timeout=300, jobs=1 if lab in KERNEL_LABS else 2, log=lambda *a: None)
    got = {(r["student"], r["exercise"]): r for r in result["rows"]}
    problems = []
    for ex in plan.exercise_ids():
        full = plan.max_points(ex)
        sol, lab_row, slip = got[("solution", ex)], got[("untouched", ex)], got[("one_slip", ex)]
        if sol["points"] != full:
            checks = [c for c in result["graded"]["solution"]["checks"] if c["exercise"] == ex]
            problems.append(f"solution {ex}: {sol['points']}/{full} {sol['status']}: "
                            + "; ".join(f"{c['id']}: {c.get('message', '')[:300]}" for c in checks
                                        if c["status"] != "passed"))
        if lab_row["points"] != 0:
            problems.append(f"untouched lab {ex}: {lab_row['points']} points, expected 0")
        if ex == broken and slip["points"] >= full:
            problems.append(f"one slip in {ex}: still {slip['points']}/{full}")
        if ex != broken and slip["points"] != full:
            problems.append(f"one slip in {broken} cost exercise {ex}: {slip['points']}/{full}")
    assert not problems, f"{lab}:\n" + "\n".join(problems)
