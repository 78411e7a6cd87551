"""Tests of the instructor's grader (tools/grade.py, tools/grading/).

The fast tests check the pieces (rebuilding a notebook from the solution,
reading submissions, the plain-data channel, the reports). The slow ones grade
fourteen synthetic submissions of lab 01 - honest, untouched, tampered with
(at import and inside the functions the checks call), hanging, crashing, flooding,
hostile, forging a verdict, and not a notebook - in one run, and
check every status, every point and that the instructor's files are untouched.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tools" / "grading"))

import grade  # noqa: E402
from grading import codec, rebuild, report  # noqa: E402

LAB = "lab01_scaled_dot_product"
SOLUTION_MD = ROOT / "solutions" / f"{LAB}.md"
LAB_IPYNB = ROOT / "labs" / f"{LAB}.ipynb"
needs_lab01 = pytest.mark.skipif(not (SOLUTION_MD.exists() and LAB_IPYNB.exists()),
                                 reason="solutions/lab01_scaled_dot_product.md and its generated lab do not exist yet")


# --------------------------------------------------------------------------- helpers


def solutions_copy(tmp: Path) -> Path:
    """A private copy of solutions/ (the hostile submission tries to overwrite it)."""
    dest = tmp / "solutions"
    dest.mkdir()
    shutil.copy(SOLUTION_MD, dest / SOLUTION_MD.name)
    return dest


def solution_nb(solutions: Path) -> dict:
    """The solution notebook as a student would save it (canonical ids, tags, metadata)."""
    from notebooks import read_md, to_ipynb_text

    return json.loads(to_ipynb_text(read_md(solutions / f"{LAB}.md")))


def lab_nb() -> dict:
    return json.loads(LAB_IPYNB.read_text(encoding="utf-8"))


def cell(nb: dict, exercise: str, kind: str = "exercise") -> dict:
    """The (first) exercise or check cell of ``exercise`` in ``nb``."""
    for c in nb["cells"]:
        meta = c.get("metadata", {})
        if str(meta.get("exercise")) == exercise and kind in meta.get("tags", []):
            return c
    raise KeyError(f"no {kind} cell for exercise {exercise}")


def src(c: dict) -> str:
    return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]


def is_check(c: dict) -> bool:
    return "check" in c.get("metadata", {}).get("tags", [])


def write(folder: Path, student: str, nb) -> None:
    (folder / f"{student}.ipynb").write_text(nb if isinstance(nb, str) else json.dumps(nb), encoding="utf-8")


PATCH_CHECKERS = '''
import builtins, numpy, numpy.testing, torch, torch.testing, attnlib.checks
# Make every checker pass: the tools the check cells use, patched in this kernel.
torch.testing.assert_close = lambda *a, **k: None
numpy.testing.assert_allclose = numpy.testing.assert_array_equal = lambda *a, **k: None
attnlib.checks.Check.close = lambda self, *a, **k: None
attnlib.checks.Check.true = lambda self, *a, **k: None
attnlib.checks.Check.raises = lambda self, *a, **k: None
attnlib.checks.Check.done = lambda self: print(f"Exercise {self.exercise}: all checks passed.")
attnlib.checks.Check._fail = lambda self, *a, **k: None
attnlib.checks.Check.__init__ = lambda self, exercise: setattr(self, "exercise", exercise)  # no methods bound
torch.testing._comparison._DTYPE_PRECISIONS.update({torch.float32: (1e9, 1e9)})  # assert_close's tolerance
'''

WRONG = {  # wrong answers of the right shape, for the patched-checkers submission
    "1.1": "def attention_scores(q, k, scale=None):\n    return torch.zeros(*q.shape[:-1], k.shape[-2])\n",
    "1.2": ("def causal_mask(lq, lk):\n    return torch.ones(lq, lk, dtype=torch.bool)\n\n"
            "def padding_mask(lengths, max_len):\n    return torch.ones(len(lengths), max_len, dtype=torch.bool)\n"),
    "1.3": "def stable_softmax(scores, mask=None):\n    return torch.zeros_like(scores)\n",
    "1.4": ("def attention(q, k, v, mask=None, causal=False, scale=None):\n"
            "    import torch.testing\n    torch.testing.assert_close = lambda *a, **k: None  # patched at call time\n"
            "    return torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype), "
            "torch.zeros(*q.shape[:-1], k.shape[-2])\n"),
    "1.5": "def chunked_attention(q, k, v, causal=False, scale=None, chunk_size=4):\n"
           "    return torch.zeros(*q.shape[:-1], v.shape[-1])\n",
}


def hostile_code(solutions: Path, out: Path) -> str:
    """Exercise 1.1 that tries the network, the solution file, the results and the other submissions;
    its function answers correctly only if every attempt failed."""
    return f'''
import os, socket, urllib.request
ESCAPED = []
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3).close(); ESCAPED.append("tcp 1.1.1.1:53")
except OSError as e:
    print("network blocked:", type(e).__name__)
try:
    urllib.request.urlopen("http://example.com", timeout=3); ESCAPED.append("http")
except Exception as e:
    print("http blocked:", type(e).__name__)
for target in ({str(solutions / (LAB + ".md"))!r}, {str(out / "grades.csv")!r}, {str(out / "instructor_notes.md")!r}):
    try:
        with open(target, "w") as f:
            f.write("# overwritten by a submission")
        ESCAPED.append("wrote " + target)
    except OSError as e:
        print("write blocked:", type(e).__name__)
try:
    ESCAPED += ["read " + n for n in os.listdir({str(solutions)!r})]
except OSError as e:
    print("listing blocked:", type(e).__name__)

def attention_scores(q, k, scale=None):
    if ESCAPED:
        raise RuntimeError("escaped the sandbox: " + ", ".join(ESCAPED))
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return (q @ k.transpose(-2, -1)) * scale
'''


def hostile_call_code(solutions: Path, out: Path) -> str:
    """Exercise 1.1 whose *function* - called by the checks, in the grader's process - tries the network, the
    instructor's files and the checking tools each time it runs; it answers correctly only if every attempt failed."""
    return f'''
import os, socket

def _escape_attempts():
    escaped = []
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=3).close(); escaped.append("tcp")
    except OSError:
        pass
    for target in ({str(solutions / (LAB + ".md"))!r}, {str(out / "grades.csv")!r}):
        try:
            with open(target, "w") as f:
                f.write("# overwritten by a submission")
            escaped.append("wrote " + target)
        except OSError:
            pass
    try:
        escaped += ["read " + n for n in os.listdir({str(solutions)!r})]
    except OSError:
        pass
    import attnlib.checks
    try:
        attnlib.checks.default_tolerance.__code__ = (lambda dtype: (1e9, 1e9)).__code__; escaped.append("code")
    except PermissionError:
        pass
    return escaped

def attention_scores(q, k, scale=None):
    escaped = _escape_attempts()
    if escaped:
        raise RuntimeError("escaped the sandbox: " + ", ".join(escaped))
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return (q @ k.transpose(-2, -1)) * scale
'''


READ_HIDDEN_CHECK = '''
import sys as _sys, os as _os

def _leak_the_check():
    """Print the code of the check that is calling (hidden checks included), to stdout and to fd 1."""
    frame = _sys._getframe(1)
    while frame is not None:
        request = frame.f_locals.get("request")
        if isinstance(request, dict) and "code" in request:
            print("LEAKED:" + request["code"])
            _os.write(1, ("LEAKED:" + request["code"]).encode())
        frame = frame.f_back
'''

SELF_RESTORING_PATCH = '''
def stable_softmax(scores, mask=None):
    """Wrong (zeros), with a patch of attnlib's tolerance that undoes itself the first time it is used."""
    import attnlib.checks
    original = attnlib.checks.default_tolerance

    def loose(dtype):
        attnlib.checks.default_tolerance = original  # leave no trace
        return (1e9, 1e9)

    attnlib.checks.default_tolerance = loose
    return torch.zeros_like(scores)
'''

FORGE_VERDICT = '''
def causal_mask(lq, lk):
    """Wrong (all True), and writes a forged 'passed' verdict on every descriptor it can."""
    import json, os, struct
    data = json.dumps({"nonce": "guess", "status": "passed", "message": "all checks passed"}).encode()
    for fd in range(3, 64):
        try:
            os.write(fd, struct.pack(">Q", len(data)) + data)
        except OSError:
            pass
    return torch.ones(lq, lk, dtype=torch.bool)
'''


def build_submissions(folder: Path, solutions: Path, out: Path) -> dict:
    """Write the fourteen kinds of submission; return ``{student: expected points per exercise}``."""
    sol, lab = solution_nb(solutions), lab_nb()
    full = {"1.1": 1, "1.2": 2, "1.3": 3, "1.4": 3, "1.5": 3}
    zero = dict.fromkeys(full, 0)
    expected = {}

    write(folder, "solution", sol)
    expected["solution"] = full
    write(folder, "untouched_lab", lab)
    expected["untouched_lab"] = zero

    nb = copy.deepcopy(sol)
    nb["cells"] = [c for c in nb["cells"] if not is_check(c)]
    write(folder, "deleted_checks", nb)  # correct code, checks gone: full marks, the checks come back
    expected["deleted_checks"] = full

    nb = copy.deepcopy(lab)
    for c in nb["cells"]:
        if is_check(c):
            c["source"] = 'print("all checks passed")'
    write(folder, "edited_checks", nb)  # unfinished code, checks emptied: still zero
    expected["edited_checks"] = zero

    nb = copy.deepcopy(lab)
    for ex, code in WRONG.items():
        cell(nb, ex)["source"] = (PATCH_CHECKERS if ex == "1.1" else "") + code
    write(folder, "patched_checkers", nb)
    expected["patched_checkers"] = zero

    nb = copy.deepcopy(sol)
    c = cell(nb, "1.5")
    c["source"] = src(c).replace('    lq, lk = q.shape[-2], k.shape[-2]\n',
                                 '    while True:  # never ends\n        pass\n', 1)
    assert "while True" in src(c)
    write(folder, "endless_loop", nb)
    expected["endless_loop"] = dict(full, **{"1.5": 0})

    nb = copy.deepcopy(sol)
    c = cell(nb, "1.5")
    c["source"] = src(c) + "\n\nimport os\nos.kill(os.getpid(), 9)  # the kernel dies\n"
    write(folder, "killed_kernel", nb)
    expected["killed_kernel"] = dict(full, **{"1.5": 0})

    nb = copy.deepcopy(sol)
    c = cell(nb, "1.2")
    c["source"] = src(c).replace('    """(B, max_len) boolean mask, True at the real (non-padding) positions j < lengths[b]."""\n',
                                 '    for _ in range(200):\n        print("x" * 2**16)  # 12.5 MiB in all\n', 1)
    assert "2**16" in src(c)
    write(folder, "huge_print", nb)
    expected["huge_print"] = dict(full, **{"1.2": 0})

    nb = copy.deepcopy(sol)
    cell(nb, "1.1")["source"] = "import math\nimport torch\n" + hostile_code(solutions, out)
    write(folder, "hostile", nb)
    expected["hostile"] = full

    # The same tricks inside the exercise functions, which the grader calls while it runs the checks.
    nb = copy.deepcopy(sol)
    cell(nb, "1.1")["source"] = "import math\nimport torch\n" + hostile_call_code(solutions, out)
    c = cell(nb, "1.4")
    c["source"] = READ_HIDDEN_CHECK + src(c).replace('    """', '    _leak_the_check()\n    """', 1)
    write(folder, "hostile_in_call", nb)
    expected["hostile_in_call"] = full

    nb = copy.deepcopy(sol)
    cell(nb, "1.3")["source"] = SELF_RESTORING_PATCH
    write(folder, "self_restoring_patch", nb)
    expected["self_restoring_patch"] = dict(full, **{"1.3": 0, "1.4": 0, "1.5": 0})

    nb = copy.deepcopy(sol)
    c = cell(nb, "1.2")
    c["source"] = src(c) + "\n\n" + FORGE_VERDICT
    write(folder, "forged_verdict", nb)
    expected["forged_verdict"] = dict(full, **{"1.2": 0, "1.4": 0})  # 1.4's attention calls the forging mask

    write(folder, "not_json", "print('this is a Python script, not a notebook')\n")
    expected["not_json"] = zero
    write(folder, "not_a_notebook", json.dumps({"hello": "world"}))
    expected["not_a_notebook"] = zero
    return expected


EXPECTED_STATUS = {
    "solution": dict.fromkeys(["1.1", "1.2", "1.3", "1.4", "1.5"], "passed"),
    "untouched_lab": dict.fromkeys(["1.1", "1.2", "1.3", "1.4", "1.5"], "failed"),
    "deleted_checks": dict.fromkeys(["1.1", "1.2", "1.3", "1.4", "1.5"], "passed"),
    "edited_checks": dict.fromkeys(["1.1", "1.2", "1.3", "1.4", "1.5"], "failed"),
    "patched_checkers": dict.fromkeys(["1.1", "1.2", "1.3", "1.4", "1.5"], "failed"),
    "endless_loop": {"1.1": "passed", "1.2": "passed", "1.3": "passed", "1.4": "passed", "1.5": "timeout"},
    "killed_kernel": {"1.1": "passed", "1.2": "passed", "1.3": "passed", "1.4": "passed", "1.5": "crashed"},
    "huge_print": {"1.1": "passed", "1.2": "error", "1.3": "passed", "1.4": "passed", "1.5": "passed"},
    "hostile": dict.fromkeys(["1.1", "1.2", "1.3", "1.4", "1.5"], "passed"),
    "hostile_in_call": dict.fromkeys(["1.1", "1.2", "1.3", "1.4", "1.5"], "passed"),
    "self_restoring_patch": {"1.1": "passed", "1.2": "passed", "1.3": "failed", "1.4": "failed", "1.5": "failed"},
    "forged_verdict": {"1.1": "passed", "1.2": "error", "1.3": "passed", "1.4": "error", "1.5": "passed"},
    "not_json": dict.fromkeys(["1.1", "1.2", "1.3", "1.4", "1.5"], "unreadable"),
    "not_a_notebook": dict.fromkeys(["1.1", "1.2", "1.3", "1.4", "1.5"], "unreadable"),
}


def read_csv(path: Path) -> list:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- fast tests


def test_messages_are_framed_json_and_oversized_or_broken_ones_are_refused():
    import os

    r, w = os.pipe()
    try:
        codec.write_message(w, {"op": "check", "code": "x = 1", "nonce": "ab"})
        assert codec.read_message(r) == {"op": "check", "code": "x = 1", "nonce": "ab"}
        os.write(w, (codec.MAX_MESSAGE + 1).to_bytes(8, "big"))
        with pytest.raises(codec.CodecError, match="limit"):
            codec.read_message(r)
        os.write(w, (4).to_bytes(8, "big") + b"[1] ")
        with pytest.raises(codec.CodecError, match="JSON object"):
            codec.read_message(r)
        with pytest.raises(ValueError):
            codec.write_message(w, {"x": float("nan")})
    finally:
        os.close(r)
        os.close(w)


def test_read_submission_reports_why_a_file_is_unreadable(tmp_path):
    cases = {"a.ipynb": b"\x89PNG\r\n\x1a\n", "b.ipynb": b"{not json", "c.ipynb": b'{"cells": 3}',
             "d.ipynb": b'{"cells": [{"cell_type": "code", "source": 7}]}'}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(rebuild.Unreadable) as info:
            rebuild.read_submission(tmp_path / name)
        assert str(info.value)  # a message for the report
    (tmp_path / "ok.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4}))
    assert rebuild.read_submission(tmp_path / "ok.ipynb") == []


@needs_lab01
def test_plan_takes_points_checks_and_hidden_checks_from_the_solution():
    plan = rebuild.load_solution(LAB, ROOT / "solutions")
    assert plan.exercise_ids() == ["1.1", "1.2", "1.3", "1.4", "1.5"]
    assert [plan.max_points(e) for e in plan.exercise_ids()] == [1, 2, 3, 3, 3]
    assert sum(c.hidden for c in plan.checks) == 1 and "hidden" in plan.checks[4].cell_id
    assert {"attention_scores", "causal_mask", "padding_mask", "stable_softmax", "attention",
            "chunked_attention"} <= set(plan.names)
    assert "import torch" in plan.setup


@needs_lab01
def test_exercise_cells_match_by_id_then_metadata_then_order_then_definition():
    plan = rebuild.load_solution(LAB, ROOT / "solutions")
    sol = solution_nb(ROOT / "solutions")
    ex = plan.exercises[0]
    how = lambda cells: rebuild.match_exercises(plan, cells)[ex.cell_id][1]  # noqa: E731
    assert how(sol["cells"]) == "id"
    no_ids = copy.deepcopy(lab_nb()["cells"])
    for c in no_ids:
        c["id"] = "x" + hashlib.md5(src(c).encode()).hexdigest()[:8]
    assert how(no_ids) == "metadata"
    for c in no_ids:
        c["metadata"] = {}
    assert how(no_ids) == "order"
    fewer = [c for c in no_ids if c["cell_type"] != "code" or "attention_scores" in src(c)
             and "def attention_scores" in src(c)]
    assert how(fewer) == "definition"
    assert how([c for c in no_ids if "def attention_scores" not in src(c)][:3]) == "missing"
    code, _, note = rebuild.match_exercises(plan, [])[ex.cell_id]
    assert "NotImplementedError" in code and "no exercise cell" in note


@needs_lab01
def test_report_never_reveals_hidden_checks():
    plan = rebuild.load_solution(LAB, ROOT / "solutions")
    checks = [dict(id=c.cell_id, exercise=c.exercise, points=c.points, hidden=c.hidden, status="failed",
                   message=f"SECRET-{c.cell_id}" if c.hidden else "visible message") for c in plan.checks]
    rows = report.exercise_rows("amy", plan, checks)
    text = report.student_report("amy", plan, rows, {"checks": checks})
    hidden_code = next(c.code for c in plan.checks if c.hidden)
    assert "visible message" in text and "SECRET" not in text
    assert hidden_code.splitlines()[-2] not in text
    assert "Further checks that are not in your lab" in text


# --------------------------------------------------------------------------- slow: grade fourteen submissions


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if not (SOLUTION_MD.exists() and LAB_IPYNB.exists()):
        pytest.skip("solutions/lab01_scaled_dot_product.md and its generated lab do not exist yet")
    tmp = tmp_path_factory.mktemp("grading")
    solutions, subs, out = solutions_copy(tmp), tmp / "submissions", tmp / "out"
    subs.mkdir()
    out.mkdir()
    (out / "instructor_notes.md").write_text("instructor's copy")
    expected = build_submissions(subs, solutions, out)
    before = digest(solutions)
    result = grade.grade(LAB, subs, out, timeout=10, startup_timeout=90, jobs=2, max_output_mib=2,
                         solutions=solutions, log=lambda *a: None)
    return {"result": result, "out": out, "expected": expected, "solutions": solutions, "before": before,
            "submissions": subs}


@pytest.mark.slow
def test_every_submission_gets_the_right_points_and_status(graded):
    rows = read_csv(graded["out"] / "grades.csv")
    assert list(rows[0]) == ["student", "exercise", "points", "max_points", "status"]
    got = {(r["student"], r["exercise"]): r for r in rows}
    assert len(rows) == len(graded["expected"]) * 5  # complete: one row per student and exercise
    problems = []
    for student, points in graded["expected"].items():
        for ex, p in points.items():
            r = got[(student, ex)]
            if (float(r["points"]), r["status"]) != (p, EXPECTED_STATUS[student][ex]):
                problems.append(f"{student} {ex}: got {r['points']} {r['status']}, "
                                f"expected {p} {EXPECTED_STATUS[student][ex]}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_reports_say_why_in_words(graded):
    out = graded["out"]
    untouched = (out / "untouched_lab.md").read_text()
    assert "not done yet: Exercise 1.1" in untouched and "Traceback" not in untouched
    patched = (out / "patched_checkers.md").read_text()
    assert "changed the grader's checking tools (" in patched and "was replaced)" in patched
    restoring = (out / "self_restoring_patch.md").read_text()
    assert "attnlib.checks.default_tolerance was replaced" in restoring
    assert "wrote on the grader's channel" in (out / "forged_verdict.md").read_text()
    leaky = (out / "hostile_in_call.md").read_text()  # the hidden check's code must not reach the student
    hidden = next(c.code for c in rebuild.load_solution(LAB, graded["solutions"]).checks if c.hidden)
    assert "LEAKED" not in leaky and hidden.strip().splitlines()[-2] not in leaky
    assert "ran past the 10 s limit" in (out / "endless_loop.md").read_text()
    assert "killed by SIGKILL" in (out / "killed_kernel.md").read_text()
    assert "output limit" in (out / "huge_print.md").read_text()
    assert "not JSON" in (out / "not_json.md").read_text()
    hostile = (out / "hostile.md").read_text()
    assert "escaped" not in hostile and "blocked" in hostile
    summary = (out / "summary.md").read_text()
    assert "Sandbox:" in summary and "| solution | 12 / 12 |" in summary


@pytest.mark.slow
def test_instructor_files_and_results_are_untouched(graded):
    assert digest(graded["solutions"]) == graded["before"]
    assert (graded["out"] / "instructor_notes.md").read_text() == "instructor's copy"
    for student in graded["expected"]:
        assert (graded["out"] / f"{student}.md").exists()


@pytest.mark.slow
def test_fallback_sandbox_without_namespaces_still_blocks_the_hostile_submission(tmp_path):
    """Where the machine refuses namespaces (many CI containers), the audit hook must still hold."""
    if not (SOLUTION_MD.exists() and LAB_IPYNB.exists()):
        pytest.skip("solutions/lab01_scaled_dot_product.md and its generated lab do not exist yet")
    solutions, subs, out = solutions_copy(tmp_path), tmp_path / "submissions", tmp_path / "out"
    subs.mkdir()
    out.mkdir()
    (out / "instructor_notes.md").write_text("instructor's copy")
    sol = solution_nb(solutions)
    cell(sol, "1.1")["source"] = "import math\nimport torch\n" + hostile_code(solutions, out)
    c = cell(sol, "1.5")
    c["source"] = src(c) + "\n\nimport os\nos.kill(os.getpid(), 9)\n"
    write(subs, "hostile", sol)
    before = digest(solutions)
    result = grade.grade(LAB, subs, out, timeout=10, startup_timeout=90, jobs=1, solutions=solutions,
                         sandbox_mode="rlimits+audit", log=lambda *a: None)
    statuses = {r["exercise"]: r["status"] for r in result["rows"]}
    assert statuses == {"1.1": "passed", "1.2": "passed", "1.3": "passed", "1.4": "passed", "1.5": "crashed"}
    assert digest(solutions) == before and (out / "instructor_notes.md").read_text() == "instructor's copy"


@pytest.mark.slow
def test_the_patched_submission_fools_a_grader_that_runs_checks_in_its_kernel(tmp_path):
    """Control for the test above: run the rebuilt notebook's setup, exercise and check cells in one
    interpreter (what `pytest --nbval-lax` does) and the monkeypatches make every wrong answer pass."""
    if not (SOLUTION_MD.exists() and LAB_IPYNB.exists()):
        pytest.skip("solutions/lab01_scaled_dot_product.md and its generated lab do not exist yet")
    import subprocess

    subs = tmp_path / "subs"
    subs.mkdir()
    build_submissions(subs, solutions_copy(tmp_path), tmp_path)
    plan = rebuild.load_solution(LAB, ROOT / "solutions")
    matched = rebuild.match_exercises(plan, rebuild.read_submission(subs / "patched_checkers.ipynb"))
    nb = rebuild.rebuilt_notebook(plan, matched)
    code = [plan.setup] + [src(c) for c in nb["cells"] if c["cell_type"] == "code"
                           and {"exercise", "check"} & set(c["metadata"].get("tags", []))]
    script = tmp_path / "naive.py"
    from worker import to_python  # the grader's own IPython-to-Python step (%pip becomes a call)

    script.write_text("get_ipython = lambda: None\n" + "\n\n".join(to_python(c) for c in code))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("all checks passed") == len(plan.checks)


@pytest.mark.slow
def test_exports_and_regrading_one_student_keep_everyone_elses_results(graded, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(graded["out"], out)
    wide = read_csv(out / "grades_wide.csv")
    assert list(wide[0]) == ["student"] + [f"Exercise {e} ({p})" for e, p in
                                           zip(["1.1", "1.2", "1.3", "1.4", "1.5"], [1, 2, 3, 3, 3])] + ["Total (12)"]
    by_student = {r["student"]: r for r in wide}
    assert set(by_student) == set(graded["expected"])
    assert by_student["solution"]["Total (12)"] == "12" and by_student["untouched_lab"]["Total (12)"] == "0"
    assert by_student["endless_loop"]["Exercise 1.5 (3)"] == "0" and by_student["endless_loop"]["Total (12)"] == "9"
    scope = json.loads((out / "gradescope" / "endless_loop.json").read_text())
    assert scope["score"] == 9 and [t["name"] for t in scope["tests"]][-1] == "Exercise 1.5"
    assert scope["tests"][-1]["score"] == 0 and "ran past" in scope["tests"][-1]["output"]
    assert "SECRET" not in json.dumps(scope)

    before = {r["student"]: r for r in read_csv(out / "grades.csv") if r["student"] != "endless_loop"}
    resubmitted = graded["submissions"] / "endless_loop.ipynb"
    original = resubmitted.read_text()
    resubmitted.write_text((graded["submissions"] / "solution.ipynb").read_text())  # a fixed resubmission
    try:
        result = grade.grade(LAB, graded["submissions"], out, timeout=10, startup_timeout=90, jobs=1,
                             solutions=graded["solutions"], only="endless_loop", log=lambda *a: None)
    finally:
        resubmitted.write_text(original)
    assert {r["student"] for r in result["rows"]} == set(graded["expected"])
    after = read_csv(out / "grades.csv")
    assert {r["student"]: r for r in after if r["student"] != "endless_loop"}.keys() == before.keys()
    assert [r for r in after if r["student"] != "endless_loop"] == list(
        r for s in before for r in read_csv(graded["out"] / "grades.csv") if r["student"] == s)
    assert all(r["points"] == r["max_points"] for r in after if r["student"] == "endless_loop")
    wide = {r["student"]: r for r in read_csv(out / "grades_wide.csv")}
    assert wide["endless_loop"]["Total (12)"] == "12" and wide["untouched_lab"]["Total (12)"] == "0"
    with pytest.raises(ValueError, match="no submission"):
        grade.grade(LAB, graded["submissions"], out, solutions=graded["solutions"], only="nobody_here",
                    log=lambda *a: None)


def test_student_ids_never_overwrite_the_graders_files():
    assert grade.student_id(Path("summary.ipynb")) == "summary_"
    assert grade.student_id(Path("Grades.ipynb")) == "Grades_"
    assert grade.student_id(Path("../a b.ipynb")) == "a_b"


# --------------------------------------------------------------------------- a synthetic lab: gradients and classes

SYNTHETIC_LAB = '''---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Lab 99 · A synthetic lab for the grader's tests

```{code-cell} ipython3
import torch
from attnlib.checks import Check
```

```{code-cell} ipython3
---
exercise: '9.1'
tags: [exercise]
---
class _TwoTanh(torch.autograd.Function):
    """2 tanh(x) with a hand-written backward: d/dx = 2 (1 - tanh(x)^2)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return 2 * y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        # BEGIN SOLUTION: return the gradient of 2 tanh(x)
        return grad * 2 * (1 - y * y)
        # END SOLUTION


def two_tanh(x):
    return _TwoTanh.apply(x)
```

```{code-cell} ipython3
---
exercise: '9.1'
points: 2
tags: [check]
---
import torch
from attnlib.checks import Check

check = Check("9.1")
x = torch.randn(7, dtype=torch.float64, requires_grad=True)
y = two_tanh(x)
check.close(y.detach(), 2 * torch.tanh(x.detach()), name="value")
y.sum().backward()
check.close(x.grad, 2 * (1 - torch.tanh(x.detach()) ** 2), name="gradient")
z = torch.randn(4, dtype=torch.float64, requires_grad=True)
check.true(torch.autograd.gradcheck(two_tanh, (z,), raise_exception=False), "gradcheck failed")
check.done()
```

```{code-cell} ipython3
---
exercise: '9.2'
tags: [exercise]
---
class Scale(torch.nn.Module):
    """Multiplies the last dimension by a learned weight."""

    def __init__(self, n: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))

    def forward(self, x):
        # BEGIN SOLUTION: multiply x by the weight
        return x * self.weight
        # END SOLUTION
```

```{code-cell} ipython3
---
exercise: '9.2'
points: 1
tags: [check]
---
import torch
from attnlib.checks import Check

check = Check("9.2")
m = Scale(3)
x = torch.randn(2, 3)
y = m(x)
check.close(y.detach(), x, name="output with unit weights")
y.sum().backward()
check.close(m.weight.grad, x.sum(0), name="weight gradient")
check.raises(TypeError, Scale, "three")
check.done()
```

```{code-cell} ipython3
---
exercise: '9.2'
points: 1
tags: [check, hidden]
---
import torch
from attnlib.checks import Check

check = Check("9.2 hidden")
m = Scale(5)
check.close(m(torch.ones(5)).detach(), torch.ones(5), name="output of ones")
check.done()
```
'''


@pytest.mark.slow
def test_a_synthetic_lab_with_gradients_and_classes(tmp_path):
    """Gradients flow from a check through the channel into the student's autograd code and back;
    classes and modules cross as handles; a wrong backward fails; the hidden check counts."""
    import jupytext

    from make_labs import make_lab
    from notebooks import to_ipynb_text

    solutions, subs, out = tmp_path / "solutions", tmp_path / "subs", tmp_path / "out"
    solutions.mkdir()
    subs.mkdir()
    (solutions / "lab99_synthetic.md").write_text(SYNTHETIC_LAB, encoding="utf-8")
    sol_nb = jupytext.reads(SYNTHETIC_LAB, fmt="md:myst")
    sol = json.loads(to_ipynb_text(sol_nb))
    write(subs, "right", sol)
    write(subs, "unfinished", json.loads(to_ipynb_text(make_lab(sol_nb))))
    wrong = copy.deepcopy(sol)
    c = cell(wrong, "9.1")
    c["source"] = src(c).replace("return grad * 2 * (1 - y * y)", "return grad * (1 - y * y)  # forgot the 2")
    c = cell(wrong, "9.2")
    c["source"] = src(c).replace("return x * self.weight", "return x * self.weight.detach()  # no gradient")
    write(subs, "wrong", wrong)
    result = grade.grade("lab99_synthetic", subs, out, timeout=20, startup_timeout=90, jobs=2,
                         solutions=solutions, log=lambda *a: None)
    got = {(r["student"], r["exercise"]): (r["points"], r["status"]) for r in result["rows"]}
    assert got == {("right", "9.1"): (2, "passed"), ("right", "9.2"): (2, "passed"),
                   ("unfinished", "9.1"): (0, "failed"), ("unfinished", "9.2"): (0, "failed"),
                   ("wrong", "9.1"): (0, "failed"), ("wrong", "9.2"): (1, "error")}
    wrong_report = (out / "wrong.md").read_text()
    assert "Exercise 9.1: gradient differs" in wrong_report  # attnlib.checks' message for the wrong backward
    assert "does not require grad" in wrong_report  # the detached weight: backward() cannot run


_LOOPBACK_PROBE = r'''
import errno, socket, sys
sys.path.insert(0, ROOT)
out = []
for host in ("192.0.2.1", "1.1.1.1", "10.0.0.1"):  # nothing but loopback may be reachable
    s = socket.socket(); s.settimeout(2)
    out.append(f"{host}:{'reached' if s.connect_ex((host, 80)) in (0, errno.EINPROGRESS) else 'unreachable'}")
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
client = socket.create_connection(server.getsockname(), timeout=2)
conn, _ = server.accept(); client.sendall(b"ping"); out.append("loopback:" + conn.recv(4).decode())
import torch
from attnlib.distributed.launch import spawn
import torch.distributed as dist
def add(rank, world):
    t = torch.tensor([rank + 1.0]); dist.all_reduce(t); return float(t)
out.append(f"gloo:{spawn(add, 2, timeout=30)}")
sys.path.insert(0, ROOT + "/tools/grading")
import worker
worker.install_guard(".", (), strict=False)  # the submission's own Python sockets stay refused, loopback too
try:
    socket.create_connection(server.getsockname(), timeout=2); out.append("hook:allowed")
except PermissionError:
    out.append("hook:refused")
print(" ".join(out))
'''


def test_sandbox_brings_up_loopback_only_so_gloo_ranks_can_talk(tmp_path):
    """The namespace sandbox brings ``lo`` up (lab 19's checks start gloo ranks that talk on 127.0.0.1): loopback
    works and a 2-rank all-reduce runs, no other address is reachable, and the worker's audit hook still refuses
    the submission's own Python sockets."""
    import subprocess

    from grading import sandbox

    mode, why = sandbox.probe()
    if not mode.startswith("namespaces"):
        pytest.skip(f"no namespace sandbox on this machine: {why}")
    code = f"ROOT = {str(ROOT)!r}\n" + _LOOPBACK_PROBE
    run = subprocess.run(sandbox.wrap(mode, [sys.executable, "-c", code]), capture_output=True, text=True,
                         timeout=120, env=sandbox.clean_env("/tmp/work"))
    assert run.returncode == 0, run.stderr[-3000:]
    words = run.stdout.split()
    assert words[:3] == ["192.0.2.1:unreachable", "1.1.1.1:unreachable", "10.0.0.1:unreachable"], run.stdout
    assert "loopback:ping" in words and "gloo:[3.0, 3.0]" in run.stdout and "hook:refused" in words, run.stdout
