"""Rebuild, don't trust: the notebook that is graded comes from ``solutions/``.

From the instructor's solution notebook we keep every cell; from a submission
we take only the *code of the exercise cells*, matched in this order:

1. by cell id (``exercise-1.2``, the id the generated lab carries);
2. by the cell metadata ``exercise: "1.2"`` (Jupyter and Colab keep metadata
   and tags when a cell is copied; several matching cells are joined in order);
3. by position, when the submission has exactly as many code cells as the lab
   and the cell there defines one of the exercise's functions;
4. by the function or class the lab's exercise cell defines (the last
   submission cell that defines it at top level).

An exercise cell that cannot be found falls back to the lab's unfinished cell
(``raise NotImplementedError``), so it scores zero and the report says why.
Check cells, hidden checks and every other cell always come from the solution.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

MAX_SUBMISSION_BYTES = 50 * 2**20


class Unreadable(ValueError):
    """The submission is not a notebook the grader can read; the message says why."""


def source_of(cell) -> str:
    src = cell.get("source", "")
    if isinstance(src, list):
        src = "".join(str(s) for s in src)
    if not isinstance(src, str):
        raise Unreadable("a cell's source is neither text nor a list of lines")
    return src


def tags_of(cell) -> list:
    meta = cell.get("metadata") or {}
    tags = meta.get("tags") if isinstance(meta, dict) else None
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


@dataclass
class Exercise:
    exercise: str
    cell_id: str
    index: int                 # position among the solution's cells
    lab_code: str              # the student's starting point (solution blocks stripped)
    lab_code_index: int        # position among the lab's code cells
    defines: list = field(default_factory=list)
    forbidden: list = field(default_factory=list)  # attnlib references this exercise's code must not call


@dataclass
class CheckCell:
    exercise: str
    cell_id: str
    points: float
    hidden: bool
    code: str


@dataclass
class Plan:
    """What the grader needs from one solution notebook."""

    lab: str
    solution_cells: list       # the solution notebook's cells (dicts)
    setup: str                 # the first code cell
    context: list              # [(index, cell_id, code)] definition-only cells run before/between exercises
    exercises: list            # [Exercise]
    checks: list               # [CheckCell]
    lab_code_cells: int
    names: list                # names the solution's exercise cells define (the checks read only these)
    metadata: dict = field(default_factory=dict)

    def exercise_ids(self) -> list:
        seen = []
        for ex in self.exercises:
            if ex.exercise not in seen:
                seen.append(ex.exercise)
        for c in self.checks:
            if c.exercise not in seen:
                seen.append(c.exercise)
        return seen

    def forbidden_rules(self) -> dict:
        """``{dotted name: [exercise, ...]}``: which exercises must not call which attnlib reference."""
        rules: dict = {}
        for ex in self.exercises:
            for name in ex.forbidden:
                rules.setdefault(name, [])
                if ex.exercise not in rules[name]:
                    rules[name].append(ex.exercise)
        return rules

    def check_imports(self) -> list:
        """The modules the check cells import: imported (and locked) before any student code runs."""
        mods = ["attnlib.checks", "torch.testing", "numpy.testing"]
        for c in self.checks:
            try:
                tree = ast.parse(c.code)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods += [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    mods.append(node.module)
        return list(dict.fromkeys(mods))

    def max_points(self, exercise: str) -> float:
        return sum(c.points for c in self.checks if c.exercise == exercise)


def top_level_names(code: str) -> list:
    """Names a cell binds at top level (defs, classes, assignments), in order."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out.append(n.id)
    return list(dict.fromkeys(out))


def definitions_only(code: str) -> bool:
    """True for a cell of imports, defs, classes and assignments only (no prints, plots or loops):
    such a cell may define something an exercise uses, and it is cheap to run."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
               ast.Assign, ast.AnnAssign)
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    return bool(body) and all(isinstance(n, allowed) for n in body)


def load_solution(lab: str, solutions_dir: Path) -> Plan:
    """Read ``solutions_dir/LAB.md`` (or ``.ipynb``) and classify its cells."""
    import nbformat
    from make_labs import make_lab
    from notebooks import read_md, to_ipynb_text

    md, ipynb = solutions_dir / f"{lab}.md", solutions_dir / f"{lab}.ipynb"
    if md.exists():
        nb = read_md(md)
    elif ipynb.exists():
        nb = nbformat.read(ipynb, as_version=4)
    else:
        raise FileNotFoundError(f"no solution notebook {md} (or .ipynb): is the lab id right?")
    lab_nb = json.loads(to_ipynb_text(make_lab(nb, name=lab)))
    sol = json.loads(to_ipynb_text(nb))  # canonical cell ids: exercise-1.2, check-1.2, check-1.2-hidden
    lab_code = [c for c in lab_nb["cells"] if c["cell_type"] == "code"]
    lab_by_id = {c["id"]: (i, c) for i, c in enumerate(lab_code)}

    setup, context, exercises, checks, names = None, [], [], [], []
    for i, cell in enumerate(sol["cells"]):
        if cell["cell_type"] != "code":
            continue
        tags, meta, code = tags_of(cell), cell.get("metadata", {}), source_of(cell)
        if "check" in tags:
            checks.append(CheckCell(str(meta["exercise"]), cell["id"], float(meta.get("points", 0)),
                                    "hidden" in tags, code))
        elif "exercise" in tags:
            pos, lab_cell = lab_by_id[cell["id"]]
            defines = top_level_names(code)
            forbidden = meta.get("forbidden") or []
            if not (isinstance(forbidden, list) and all(isinstance(f, str) for f in forbidden)):
                raise ValueError(f"{lab}: exercise {meta['exercise']}: metadata 'forbidden' must be a list of "
                                 f"dotted names, got {forbidden!r}")
            exercises.append(Exercise(str(meta["exercise"]), cell["id"], i, source_of(lab_cell), pos, defines,
                                      list(forbidden)))
            names += [n for n in defines if n not in names]
        elif "solution-only" in tags:
            continue
        elif setup is None:
            setup = code
        elif definitions_only(code):
            context.append((i, cell["id"], code))
    if not checks:
        raise ValueError(f"{lab}: the solution has no check cells to grade")
    return Plan(lab, sol["cells"], setup or "", context, exercises, checks, len(lab_code), names,
                sol.get("metadata", {}))


def read_submission(path: Path) -> list:
    """The cells of a submitted notebook, or :class:`Unreadable` saying why not."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise Unreadable(f"cannot read the file: {e.strerror}") from None
    if size > MAX_SUBMISSION_BYTES:
        raise Unreadable(f"the file is {size} bytes, over the {MAX_SUBMISSION_BYTES}-byte limit")
    raw = path.read_bytes()
    try:
        nb = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Unreadable("the file is not UTF-8 text (is it a notebook?)") from None
    except json.JSONDecodeError as e:
        raise Unreadable(f"the file is not JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                         "submit the .ipynb notebook file") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise Unreadable("the file is JSON but not a Jupyter notebook (no 'cells' list)")
    if nb.get("nbformat", 4) < 4:
        raise Unreadable(f"notebook format {nb.get('nbformat')} is too old; save it with Jupyter 4 or later")
    cells = []
    for c in nb["cells"]:
        if not isinstance(c, dict) or c.get("cell_type") not in ("code", "markdown", "raw"):
            raise Unreadable("a cell is not a notebook cell")
        source_of(c)
        cells.append(c)
    return cells


_DEF = re.compile(r"^(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.MULTILINE)


def match_exercises(plan: Plan, cells: list) -> dict:
    """``{exercise cell id: (code, how, note)}``: the student's code for each exercise cell."""
    code_cells = [c for c in cells if c.get("cell_type") == "code"]
    out = {}
    for ex in plan.exercises:
        wanted = _DEF.findall(ex.lab_code)  # the functions and classes the exercise asks for
        by_id = [c for c in code_cells if c.get("id") == ex.cell_id]
        by_meta = [c for c in code_cells if isinstance(c.get("metadata"), dict)
                   and str(c["metadata"].get("exercise", "")) == ex.exercise and "check" not in tags_of(c)]
        if by_id:
            out[ex.cell_id] = (source_of(by_id[0]), "id", None)
        elif by_meta:
            out[ex.cell_id] = ("\n\n".join(source_of(c) for c in by_meta), "metadata",
                               f"exercise {ex.exercise}: matched your cell by its 'exercise' metadata")
        elif len(code_cells) == plan.lab_code_cells and (
                not wanted or set(wanted) & set(top_level_names(source_of(code_cells[ex.lab_code_index])))):
            out[ex.cell_id] = (source_of(code_cells[ex.lab_code_index]), "order",
                               f"exercise {ex.exercise}: matched your cell by its position in the notebook")
        else:
            found = [c for c in code_cells if wanted and set(wanted) <= set(top_level_names(source_of(c)))]
            if found:
                out[ex.cell_id] = (source_of(found[-1]), "definition",
                                   f"exercise {ex.exercise}: matched the cell that defines `{wanted[0]}`")
            else:
                out[ex.cell_id] = (ex.lab_code, "missing",
                                   f"exercise {ex.exercise}: your notebook has no exercise cell for it "
                                   "(no cell with its id, metadata or function); graded as not done")
    return out


def rebuilt_notebook(plan: Plan, matched: dict) -> dict:
    """The solution notebook with the student's exercise code in place (instructor-only: it holds hidden checks)."""
    import copy

    cells = copy.deepcopy(plan.solution_cells)
    for cell in cells:
        if cell.get("id") in matched:
            cell["source"] = matched[cell["id"]][0]
    return {"cells": cells, "metadata": plan.metadata, "nbformat": 4, "nbformat_minor": 5}


def worker_cells(plan: Plan, matched: dict) -> tuple[list, list]:
    """Cells the sandboxed worker runs, in notebook order, and what the report says about each."""
    items = [(i, "context", cid, code, None, "pass") for i, cid, code in plan.context]
    items += [(ex.index, "exercise", ex.cell_id, matched[ex.cell_id][0], ex.exercise, ex.lab_code)
              for ex in plan.exercises]
    items.sort(key=lambda t: t[0])
    cells = [{"code": plan.setup, "label": "setup"}]
    info = [{"kind": "setup", "id": "setup", "exercise": None}]
    for n, (_, kind, cid, code, exercise, stub) in enumerate(items):
        label = f"exercise {exercise}" if kind == "exercise" else cid
        cells.append({"code": code, "label": label, "guard": n == 0})
        info.append({"kind": kind, "id": cid, "exercise": exercise, "stub": stub})
    if len(cells) == 1:
        cells[0]["guard"] = False
    return cells, info
