"""Generate the student labs (``labs/``) from the instructor's solutions (``solutions/``).

    python tools/make_labs.py           # (re)write labs/*.md and labs/*.ipynb
    python tools/make_labs.py --check   # exit 1 if labs/ is stale

Conventions in a solution notebook (see CONTRIBUTING.md):

* An **exercise cell** has the tag ``exercise`` and the metadata ``exercise: "N.M"``.
  Its solution code sits between ``# BEGIN SOLUTION: <what to do>`` and
  ``# END SOLUTION``; in the lab the block becomes
  ``raise NotImplementedError("Exercise N.M: <what to do>")`` at the same
  indentation. Signatures, docstrings and hint comments outside the block stay.
  Its metadata ``forbidden: [attnlib.module.name, ...]`` lists the attnlib
  functions and classes the student's code must not call (the references its
  checks compare with; the grader makes them raise while that code runs). The
  lab keeps every cell's metadata, ``forbidden`` included.
* A **check cell** has the tag ``check`` and the metadata ``exercise: "N.M"`` and
  ``points: P``. A check cell also tagged ``hidden`` is an instructor-only check:
  it is dropped from the lab (the grader still runs it).
* Cells tagged ``solution-only`` are dropped, and so is Markdown between
  ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->``.
* In the lab, exercise and check cells get the tag ``raises-exception`` so that
  "Run all" (and the book build) carries on past unfinished exercises.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import jupytext

sys.path.insert(0, str(Path(__file__).resolve().parent))

from notebooks import ROOT, notebook_sources, read_md, to_ipynb_text, to_md_text, write_if_changed  # noqa: E402

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION(?::\s*(?P<what>.*\S))?\s*$")
END = re.compile(r"^[ \t]*# END SOLUTION\s*$")
MD_BEGIN = re.compile(r"^\s*<!--\s*BEGIN SOLUTION\s*-->\s*$")
MD_END = re.compile(r"^\s*<!--\s*END SOLUTION\s*-->\s*$")
DROP_TAGS = {"hidden", "solution-only"}


class LabError(ValueError):
    """A solution notebook breaks the lab conventions; the message says where."""


def strip_code(source: str, exercise: str, where: str) -> tuple[str, int]:
    """Replace each solution block with a ``raise NotImplementedError``; return (code, #blocks)."""
    out, blocks, inside = [], 0, False
    for lineno, line in enumerate(source.splitlines(), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if inside:
                raise LabError(f"{where}, line {lineno}: nested '# BEGIN SOLUTION'")
            if not begin.group("what"):
                raise LabError(f"{where}, line {lineno}: write '# BEGIN SOLUTION: <what the student must do>'")
            message = json.dumps(f"Exercise {exercise}: {begin.group('what')}", ensure_ascii=False)
            out.append(f"{begin.group('indent')}raise NotImplementedError({message})")
            inside, blocks = True, blocks + 1
        elif end:
            if not inside:
                raise LabError(f"{where}, line {lineno}: '# END SOLUTION' without a BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise LabError(f"{where}: '# BEGIN SOLUTION' is never closed")
    return "\n".join(out), blocks


def strip_markdown(source: str, where: str) -> str:
    out, inside = [], False
    for line in source.splitlines():
        if MD_BEGIN.match(line):
            if inside:
                raise LabError(f"{where}: nested <!-- BEGIN SOLUTION -->")
            inside = True
        elif MD_END.match(line):
            if not inside:
                raise LabError(f"{where}: <!-- END SOLUTION --> without a BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise LabError(f"{where}: <!-- BEGIN SOLUTION --> is never closed")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n")  # no gaps where a block was


def make_lab(solution_nb, name: str = "solution"):
    """Return the student notebook built from a solution notebook (the input is not modified)."""
    lab = copy.deepcopy(solution_nb)
    cells = []
    for i, cell in enumerate(lab.cells):
        tags = list(cell.metadata.get("tags", []))
        where = f"{name}, cell {i}"
        if DROP_TAGS & set(tags):
            continue
        if cell.cell_type == "markdown":
            cell.source = strip_markdown(cell.source, where)
            if not cell.source.strip():
                continue
        elif cell.cell_type == "code":
            exercise = cell.metadata.get("exercise")
            if ("exercise" in tags or "check" in tags) and exercise is None:
                raise LabError(f"{where}: exercise and check cells need metadata 'exercise: \"N.M\"'")
            if "check" in tags and "points" not in cell.metadata:
                raise LabError(f"{where}: check cells need metadata 'points: P'")
            cell.source, blocks = strip_code(cell.source, str(exercise), where)
            if blocks and "exercise" not in tags:
                raise LabError(f"{where}: a cell with a solution block must be tagged 'exercise'")
            if "exercise" in tags and not blocks:
                raise LabError(f"{where}: exercise cell {exercise} has no '# BEGIN SOLUTION' block")
            forbidden = cell.metadata.get("forbidden", [])
            if not isinstance(forbidden, list) or not all(isinstance(n, str) and n.startswith("attnlib.")
                                                          for n in forbidden):
                raise LabError(f"{where}: metadata 'forbidden' must be a list of dotted attnlib names, "
                               f"got {forbidden!r}")
            if ("exercise" in tags or "check" in tags) and "raises-exception" not in tags:
                cell.metadata["tags"] = tags + ["raises-exception"]
        cells.append(cell)
    lab.cells = cells
    return lab


def lab_texts(solution_md: Path) -> tuple[str, str]:
    """(md text, ipynb text) of the lab generated from ``solution_md``."""
    lab = make_lab(read_md(solution_md), name=str(solution_md.relative_to(ROOT)))
    md_text = to_md_text(lab)
    return md_text, to_ipynb_text(jupytext.reads(md_text, fmt="md:myst"))


def stale(root: Path = ROOT) -> list[str]:
    """Describe every lab file that differs from what the solutions generate."""
    found = []
    solutions = notebook_sources(("solutions",), root=root)
    for sol in solutions:
        md_text, nb_text = lab_texts(sol)
        for path, text in ((root / "labs" / sol.name, md_text), (root / "labs" / f"{sol.stem}.ipynb", nb_text)):
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                found.append(f"{path.relative_to(root)} is stale: run `make labs`")
    expected = {s.stem for s in solutions}
    for path in sorted((root / "labs").glob("*.md")) + sorted((root / "labs").glob("*.ipynb")):
        if path.stem not in expected and path.name.lower() != "readme.md":
            found.append(f"{path.relative_to(root)} has no solution in solutions/: delete it or add the solution")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale labs")
    args = parser.parse_args(argv)
    if args.check:
        found = stale()
        for line in found:
            print(line)
        return 1 if found else 0
    (ROOT / "labs").mkdir(exist_ok=True)
    for sol in notebook_sources(("solutions",)):
        md_text, nb_text = lab_texts(sol)
        for path, text in ((ROOT / "labs" / sol.name, md_text), (ROOT / "labs" / f"{sol.stem}.ipynb", nb_text)):
            if write_if_changed(path, text):
                print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
