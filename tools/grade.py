"""Grade submitted lab notebooks against the instructor's solution.

    python tools/grade.py LAB SUBMISSIONS_DIR --out OUT_DIR [--timeout SECONDS] [--jobs N] [--only STUDENT]
    make grade LAB=lab01_scaled_dot_product SUBMISSIONS=dir OUT=dir

LAB is a lab id (``lab01_scaled_dot_product``); SUBMISSIONS_DIR holds one
``.ipynb`` per student (the student id is the file stem). Writes

* ``OUT_DIR/grades.csv``: ``student,exercise,points,max_points,status``, one row
  per student and exercise (status: passed, failed, error, timeout, crashed,
  unreadable);
* ``OUT_DIR/grades_wide.csv``: one row per student, one column per exercise and the
  total (for a gradebook's CSV import: Canvas, Moodle);
* ``OUT_DIR/gradescope/<student>.json``: Gradescope's autograder ``results.json``;
* ``OUT_DIR/<student>.md``: the student's report (assertion messages, never
  hidden checks);
* ``OUT_DIR/summary.md``: the class summary and the sandbox that was used;
* ``OUT_DIR/instructor/<student>.ipynb`` and ``.json``: the rebuilt notebook
  that was graded and every check's raw outcome, hidden ones included.

How it works (details in the README, section "For instructors"): each submission is *rebuilt* from
``solutions/LAB`` (only exercise-cell code comes from the student); the
student's code and then each check cell run in a sandboxed worker process, as
in a notebook kernel, with the checking tools locked and verified
(``grading/integrity.py``); this process accepts only verdicts that carry the
nonce it sent with each check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "grading"))

from grading import rebuild, report, sandbox  # noqa: E402

ROOT = HERE.parent
RESERVED = {"summary", "grades", "instructor"}  # names of the grader's own files in OUT_DIR


def student_id(path: Path) -> str:
    """The file stem, made safe as a file name and kept clear of the grader's own files."""
    sid = re.sub(r"[^A-Za-z0-9_.@-]", "_", path.stem).lstrip(".") or "student"
    return f"{sid}_" if sid.lower() in RESERVED else sid


def grade_one(student: str, path: Path, plan, opts, out: Path) -> tuple[list, dict]:
    """Grade one submission; always returns complete rows, whatever happened."""
    t0 = time.monotonic()
    graded: dict = {"notes": {}, "checks": [], "cells": []}
    try:
        cells = rebuild.read_submission(path)
    except rebuild.Unreadable as e:
        graded.update(unreadable=str(e), seconds=time.monotonic() - t0)
        checks = [dict(id=c.cell_id, exercise=c.exercise, points=c.points, hidden=c.hidden,
                       status="unreadable", message=str(e)) for c in plan.checks]
        graded["checks"] = checks
        return report.exercise_rows(student, plan, checks), graded
    matched = rebuild.match_exercises(plan, cells)
    graded["notes"] = {ex.exercise: matched[ex.cell_id][2] for ex in plan.exercises if matched[ex.cell_id][2]}
    instructor = out / "instructor"
    (instructor / f"{student}.ipynb").write_text(
        json.dumps(rebuild.rebuilt_notebook(plan, matched), indent=1, ensure_ascii=False), encoding="utf-8")
    wcells, cell_info = rebuild.worker_cells(plan, matched)
    with tempfile.TemporaryDirectory(prefix=f"grade-{student}-") as tmp:
        return _run_checker(student, plan, opts, out, graded, wcells, cell_info, Path(tmp), t0)


def _run_checker(student, plan, opts, out, graded, wcells, cell_info, tmp: Path, t0: float):
    # What the student's process must not see: the solutions, the other submissions, the results, git history.
    # (A folder that holds the grader or Python itself cannot be hidden.)
    needed = [HERE.resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve()]
    hide = [str(p) for p in (opts.solutions, opts.submissions, out, ROOT / ".git", tmp)
            if not any(n == p or p in n.parents for n in needed)]
    job = {
        "student": student, "sandbox": opts.sandbox, "worker": str(HERE / "grading" / "worker.py"),
        "worker_cells": wcells, "cell_info": cell_info, "names": plan.names,
        "forbidden": plan.forbidden_rules(), "preimport": plan.check_imports(),
        "checks": [dict(id=c.cell_id, exercise=c.exercise, points=c.points, hidden=c.hidden, code=c.code)
                   for c in plan.checks],
        "timeout": opts.timeout, "startup_timeout": opts.startup_timeout, "max_restarts": 3,
        "memory": int(opts.memory_gib * 2**30), "cpu_seconds": int(opts.startup_timeout + opts.timeout * 4 + 60),
        "file_bytes": 256 * 2**20, "tmp_mb": 512, "max_output": int(opts.max_output_mib * 2**20), "hide": hide,
    }
    # A hard ceiling for the whole submission, in case the checker itself hangs.
    ceiling = (opts.startup_timeout * 4 + opts.timeout * (len(plan.checks) + 4) + 120)
    job_path, result_path = tmp / "job.json", tmp / "result.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    try:
        proc = subprocess.run([sys.executable, str(HERE / "grading" / "checker.py"), str(job_path),
                               str(result_path)], capture_output=True, text=True, timeout=ceiling, env=env,
                              cwd=tmp, start_new_session=True)
        if proc.returncode == 0 and result_path.exists():
            result = json.loads(result_path.read_text(encoding="utf-8"))
            graded.update(checks=result["checks"], cells=result["cells"], output_bytes=result["output_bytes"],
                          output_head=result["output_head"], worker_starts=result["worker_starts"],
                          start_seconds=result["start_seconds"], dropped=result["dropped"],
                          tampered=result["tampered"])
        else:
            graded["internal"] = f"checker exited with {proc.returncode}: {proc.stderr.strip()[-600:]}"
    except subprocess.TimeoutExpired:
        graded["internal"] = f"checker ran past the {ceiling:.0f} s ceiling"
    except Exception as e:  # noqa: BLE001 - the CSV must stay complete
        graded["internal"] = f"{type(e).__name__}: {e}"
    if graded.get("internal"):
        graded["checks"] = [dict(id=c.cell_id, exercise=c.exercise, points=c.points, hidden=c.hidden,
                                 status="crashed", message="the grader could not finish this submission; "
                                                           "your instructor will look at it")
                            for c in plan.checks]
    graded["seconds"] = time.monotonic() - t0
    (out / "instructor" / f"{student}.json").write_text(json.dumps(graded, indent=1, default=str), encoding="utf-8")
    return report.exercise_rows(student, plan, graded["checks"]), graded


def grade(lab: str, submissions: Path, out: Path, *, timeout: float = 120.0, jobs: int = 2,
          memory_gib: float = 6.0, max_output_mib: float = 10.0, solutions: Path | None = None,
          sandbox_mode: str | None = None, startup_timeout: float | None = None, only: str | None = None,
          log=print) -> dict:
    """Grade every ``*.ipynb`` in ``submissions`` (or, with ``only``, the one whose student id is ``only``,
    merged into the results already in ``out``); return ``{"rows": ..., "graded": ..., "info": ...}``."""
    t0 = time.time()
    plan = rebuild.load_solution(lab, Path(solutions or ROOT / "solutions"))
    out = out.resolve()
    mode, why = (sandbox_mode, "chosen by --sandbox") if sandbox_mode else sandbox.probe()
    solutions = Path(solutions or ROOT / "solutions").resolve()
    opts = argparse.Namespace(timeout=timeout, startup_timeout=startup_timeout or timeout + 60, memory_gib=memory_gib,
                              max_output_mib=max_output_mib, sandbox=mode, solutions=solutions,
                              submissions=submissions.resolve())
    out.mkdir(parents=True, exist_ok=True)
    (out / "instructor").mkdir(exist_ok=True)
    paths = sorted(p for p in submissions.iterdir() if p.is_file() and p.suffix.lower() == ".ipynb")
    ignored = sorted(p.name for p in submissions.iterdir() if p.is_file() and p.suffix.lower() != ".ipynb"
                     and not p.name.startswith("."))
    students, seen = [], set()
    for p in paths:
        s, n = student_id(p), 2
        while s in seen:
            s, n = f"{student_id(p)}-{n}", n + 1
        seen.add(s)
        students.append(s)
    todo = list(zip(students, paths))
    kept_rows, kept_graded = [], {}
    if only is not None:
        todo = [(s, p) for s, p in todo if s == only]
        if not todo:
            raise ValueError(f"--only {only}: no submission in {submissions} has that student id "
                             f"(ids: {', '.join(students) or 'none'})")
        if (out / "grades.csv").exists():  # keep everyone else's results
            kept_rows = [r for r in report.read_csv(out / "grades.csv") if r["student"] != only]
            for s in dict.fromkeys(r["student"] for r in kept_rows):
                f = out / "instructor" / f"{s}.json"
                kept_graded[s] = json.loads(f.read_text(encoding="utf-8")) if f.exists() else {"seconds": 0.0}
    log(f"grading {len(todo)} submission{'s' if len(todo) != 1 else ''} of {lab} (sandbox: {mode}; {jobs} jobs; "
        f"{timeout:g} s per check)")
    done = {"n": 0}

    def work(item):
        s, p = item
        try:
            rows, graded = grade_one(s, p, plan, opts, out)
        except Exception as e:  # noqa: BLE001 - a grader bug must not cost the class its CSV
            graded = {"internal": f"{type(e).__name__}: {e}", "seconds": 0.0, "notes": {}, "cells": [],
                      "checks": [dict(id=c.cell_id, exercise=c.exercise, points=c.points, hidden=c.hidden,
                                      status="crashed", message="the grader could not finish this submission; "
                                      "your instructor will look at it") for c in plan.checks]}
            rows = report.exercise_rows(s, plan, graded["checks"])
        done["n"] += 1
        log(f"  [{done['n']}/{len(todo)}] {s}: {report.fmt_points(sum(r['points'] for r in rows))} / "
            f"{report.fmt_points(sum(r['max_points'] for r in rows))} points in {graded['seconds']:.1f} s")
        return s, rows, graded

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(work, todo))
    new_rows = [r for _, rs, _ in results for r in rs]
    graded = dict(kept_graded, **{s: g for s, _, g in results})
    everyone = sorted(set(graded), key=lambda s: (s not in students, students.index(s) if s in students else 0, s))
    rows = sorted(kept_rows + new_rows, key=lambda r: everyone.index(r["student"]))
    report.write_csv(out / "grades.csv", rows)
    report.write_wide_csv(out / "grades_wide.csv", plan, everyone, rows)
    (out / "gradescope").mkdir(exist_ok=True)
    for s, rs, g in results:
        (out / f"{s}.md").write_text(report.student_report(s, plan, rs, g), encoding="utf-8")
        (out / "gradescope" / f"{s}.json").write_text(
            json.dumps(report.gradescope_results(plan, s, rs, g), indent=1), encoding="utf-8")
    info = {"seconds": time.time() - t0, "jobs": jobs, "timeout": timeout, "memory_gib": memory_gib,
            "sandbox": mode, "sandbox_why": why, "ignored": ignored}
    (out / "summary.md").write_text(report.summary(plan, everyone, rows, graded, info), encoding="utf-8")
    log(f"wrote {out / 'grades.csv'} (and grades_wide.csv, gradescope/), {len(results)} report"
        f"{'s' if len(results) != 1 else ''} and {out / 'summary.md'} in {info['seconds']:.0f} s")
    return {"rows": rows, "graded": graded, "info": info, "plan": plan}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lab", help="lab id, e.g. lab01_scaled_dot_product")
    parser.add_argument("submissions", type=Path, help="folder with one .ipynb per student")
    parser.add_argument("--out", type=Path, required=True, help="folder for grades.csv and the reports")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="wall-clock seconds per check cell; default 120")
    parser.add_argument("--startup-timeout", type=float, default=None,
                        help="wall-clock seconds to start Python and run the exercise cells; default timeout + 60")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded in parallel; default 2")
    parser.add_argument("--memory-gib", type=float, default=6.0,
                        help="address-space limit of a student's process in GiB (raise it on GPU machines); default 6")
    parser.add_argument("--max-output-mib", type=float, default=10.0,
                        help="a student's process printing more than this is stopped; default 10")
    parser.add_argument("--solutions", type=Path, default=None, help="solutions folder (default: solutions/)")
    parser.add_argument("--only", metavar="STUDENT", default=None,
                        help="regrade only this student's submission (its file stem) and merge it into OUT_DIR, "
                             "keeping everyone else's results")
    parser.add_argument("--sandbox", choices=["namespaces+nobody", "namespaces", "rlimits+audit"], default=None,
                        help="force a sandbox level instead of the strongest one the machine allows")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"SUBMISSIONS_DIR {args.submissions} is not a folder")
    try:
        grade(args.lab, args.submissions, args.out, timeout=args.timeout, jobs=args.jobs,
              memory_gib=args.memory_gib, max_output_mib=args.max_output_mib, solutions=args.solutions,
              sandbox_mode=args.sandbox, startup_timeout=args.startup_timeout, only=args.only)
    except (FileNotFoundError, ValueError) as e:  # a wrong lab id or a solution without checks
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
