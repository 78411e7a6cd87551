"""What the grader writes: ``grades.csv``, one ``<student>.md`` per student, ``summary.md``."""

from __future__ import annotations

import csv
from pathlib import Path

STATUSES = ("passed", "failed", "error", "timeout", "crashed", "unreadable")
SEVERITY = {s: i for i, s in enumerate(STATUSES)}
EXPLAIN = {
    "passed": "every check passed",
    "failed": "a check found a wrong or unfinished answer",
    "error": "your code raised an error (or printed too much) during a check",
    "timeout": "your code ran past the time limit",
    "crashed": "the Python process running your code died",
    "unreadable": "the submitted file is not a readable notebook",
}


def fmt_points(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else f"{p:g}"


def n_points(p: float) -> str:
    return f"{fmt_points(p)} point" + ("" if p == 1 else "s")


def exercise_rows(student: str, plan, checks: list) -> list:
    """One row per exercise: points earned, max points, the worst status of its checks."""
    rows = []
    for ex in plan.exercise_ids():
        mine = [c for c in checks if c["exercise"] == ex]
        earned = sum(c["points"] for c in mine if c["status"] == "passed")
        worst = max((c["status"] for c in mine), key=SEVERITY.get, default="failed")
        rows.append({"student": student, "exercise": ex, "points": earned, "max_points": plan.max_points(ex),
                     "status": worst})
    return rows


def write_csv(path: Path, rows: list) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["student", "exercise", "points", "max_points", "status"])
        w.writeheader()
        for r in rows:
            w.writerow(dict(r, points=fmt_points(r["points"]), max_points=fmt_points(r["max_points"])))


def read_csv(path: Path) -> list:
    """The rows of an existing ``grades.csv`` (points as numbers), for regrading one student into it."""
    with path.open(newline="", encoding="utf-8") as f:
        return [dict(r, points=float(r["points"]), max_points=float(r["max_points"])) for r in csv.DictReader(f)]


def write_wide_csv(path: Path, plan, students: list, rows: list) -> None:
    """One row per student, one column per exercise, then the total: the layout gradebooks import (Moodle's
    and Canvas's CSV import map the ``student`` column to a user; the header names each column's maximum)."""
    exercises = plan.exercise_ids()
    by = {(r["student"], r["exercise"]): r for r in rows}
    maximum = sum(plan.max_points(ex) for ex in exercises)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student"] + [f"Exercise {ex} ({fmt_points(plan.max_points(ex))})" for ex in exercises]
                   + [f"Total ({fmt_points(maximum)})"])
        for s in students:
            points = [by[(s, ex)]["points"] if (s, ex) in by else 0.0 for ex in exercises]
            w.writerow([s] + [fmt_points(p) for p in points] + [fmt_points(sum(points))])


def gradescope_results(plan, student: str, rows: list, graded: dict) -> dict:
    """Gradescope's autograder ``results.json`` for one student: one test per exercise, with the same
    messages as the student's report (hidden checks only as passed / not all passed)."""
    tests = []
    checks = graded.get("checks", [])
    for r in rows:
        if r["student"] != student:
            continue
        mine = [c for c in checks if c["exercise"] == r["exercise"]]
        lines = [f"{c['id']}: {c['status']}" + (f" - {c.get('message', '')}" if c["status"] != "passed" else "")
                 for c in mine if not c["hidden"]]
        hidden = [c for c in mine if c["hidden"]]
        if hidden:
            ok = all(c["status"] == "passed" for c in hidden)
            lines.append("further checks that are not in your lab: " + ("passed" if ok else "did not all pass"))
        tests.append({"name": f"Exercise {r['exercise']}", "score": r["points"], "max_score": r["max_points"],
                      "status": "passed" if r["status"] == "passed" else "failed", "output": "\n".join(lines)})
    return {"score": sum(t["score"] for t in tests), "tests": tests, "visibility": "visible",
            "stdout_visibility": "hidden"}


def _quote(text: str) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()) or "    (no message)"


def student_report(student: str, plan, rows: list, graded: dict) -> str:
    """The Markdown report a student may read: messages of visible checks only, never hidden ones."""
    total = sum(r["points"] for r in rows)
    maximum = sum(r["max_points"] for r in rows)
    out = [f"# {plan.lab}: report for `{student}`", "",
           f"**Total: {fmt_points(total)} / {fmt_points(maximum)} points.**", ""]
    if graded.get("unreadable"):
        out += ["Your submission could not be graded: " + graded["unreadable"], ""]
    out += ["| exercise | points | status |", "|---|---|---|"]
    out += [f"| {r['exercise']} | {fmt_points(r['points'])} / {fmt_points(r['max_points'])} | {r['status']} |"
            for r in rows]
    out.append("")
    checks = graded.get("checks", [])
    cells = {c.get("exercise"): c for c in graded.get("cells", []) if c.get("kind") == "exercise"}
    for r in rows:
        ex = r["exercise"]
        out += [f"## Exercise {ex}: {fmt_points(r['points'])} / {fmt_points(r['max_points'])} ({r['status']})", ""]
        note = graded.get("notes", {}).get(ex)
        if note:
            out += [f"- Note: {note}."]
        cell = cells.get(ex)
        if cell and not cell.get("ok") and cell.get("error"):
            e = cell["error"]
            where = f" ({e['where']})" if e.get("where") else ""
            out += [f"- Running your exercise cell raised {e['type']}{where}:", "", _quote(e["message"][:1500]), ""]
        visible = [c for c in checks if c["exercise"] == ex and not c["hidden"]]
        hidden = [c for c in checks if c["exercise"] == ex and c["hidden"]]
        for c in visible:
            pts = n_points(c["points"])
            if c["status"] == "passed":
                out += [f"- Check `{c['id']}` ({pts}): passed."]
            else:
                out += [f"- Check `{c['id']}` ({pts}): **{c['status']}** ({EXPLAIN[c['status']]}):", "",
                        _quote(c.get("message", "")), ""]
        if hidden:
            got = sum(c["points"] for c in hidden if c["status"] == "passed")
            worth = sum(c["points"] for c in hidden)
            verdict = "passed" if got == worth else "did not all pass"
            out += [f"- Further checks that are not in your lab ({n_points(worth)}): {verdict}."]
        out.append("")
    if graded.get("output_bytes"):
        out += ["## Output", "", f"Your code printed {graded['output_bytes']} bytes while it was graded. "
                "The first lines:", "", _quote("\n".join(graded.get("output_head", "").splitlines()[:15])[:2000]), ""]
    return "\n".join(out).rstrip() + "\n"


def summary(plan, students: list, rows: list, graded: dict, info: dict) -> str:
    """Class summary for the instructor: totals, per-exercise outcomes, timing and the sandbox used."""
    maximum = sum(plan.max_points(ex) for ex in plan.exercise_ids())
    totals = {s: sum(r["points"] for r in rows if r["student"] == s) for s in students}
    out = [f"# {plan.lab}: class summary", "",
           f"{len(students)} submissions graded in {info['seconds']:.0f} s with {info['jobs']} parallel jobs "
           f"(per-check time limit {info['timeout']:g} s, memory limit {info['memory_gib']:g} GiB).", "",
           f"Sandbox: **{info['sandbox']}**: {info['sandbox_why']}.", ""]
    if students:
        values = sorted(totals.values())
        mean = sum(values) / len(values)
        median = values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
        out += [f"Total points: mean {mean:.2f}, median {fmt_points(median)}, max possible {fmt_points(maximum)}.", ""]
    out += ["| exercise | max points | mean points | " + " | ".join(STATUSES) + " |",
            "|---|---|---|" + "---|" * len(STATUSES)]
    for ex in plan.exercise_ids():
        mine = [r for r in rows if r["exercise"] == ex]
        mean = sum(r["points"] for r in mine) / len(mine) if mine else 0.0
        counts = [str(sum(1 for r in mine if r["status"] == s)) for s in STATUSES]
        out.append(f"| {ex} | {fmt_points(plan.max_points(ex))} | {mean:.2f} | " + " | ".join(counts) + " |")
    out += ["", "| student | points | statuses | seconds |", "|---|---|---|---|"]
    for s in students:
        statuses = ", ".join(f"{r['exercise']}: {r['status']}" for r in rows if r["student"] == s)
        out.append(f"| {s} | {fmt_points(totals[s])} / {fmt_points(maximum)} | {statuses} | "
                   f"{graded[s].get('seconds', 0):.1f} |")
    problems = [(s, graded[s]["internal"]) for s in students if graded[s].get("internal")]
    if problems:
        out += ["", "## Grader problems (instructor only)", ""]
        out += [f"- `{s}`: {msg}" for s, msg in problems]
    if info.get("ignored"):
        out += ["", "Ignored (not `.ipynb`): " + ", ".join(f"`{n}`" for n in info["ignored"])]
    return "\n".join(out) + "\n"
