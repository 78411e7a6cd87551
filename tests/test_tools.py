"""tools/make_labs.py and tools/sync.py on synthetic notebooks."""

import json
import re
import shutil

import nbformat
import pytest
from helpers import ROOT, copy_course

import make_labs
import notebooks
import run_md_cells
import sync


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def _code(source, **metadata):
    return nbformat.v4.new_code_cell(source, metadata=metadata)


EXERCISE = """def f(x):
    \"\"\"Docstring stays.\"\"\"
    # Hint stays.
    # BEGIN SOLUTION: double x
    y = 2 * x
    return y
    # END SOLUTION
"""


def test_solution_block_becomes_not_implemented_error():
    lab = make_labs.make_lab(_nb(_code(EXERCISE, exercise="2.1", tags=["exercise"])))
    src = lab.cells[0].source
    assert 'raise NotImplementedError("Exercise 2.1: double x")' in src
    assert "Docstring stays" in src and "# Hint stays." in src and "2 * x" not in src
    assert "    raise NotImplementedError" in src  # indentation kept
    assert lab.cells[0].metadata["tags"] == ["exercise", "raises-exception"]
    namespace = {}
    exec(src, namespace)
    with pytest.raises(NotImplementedError, match="Exercise 2.1: double x"):
        namespace["f"](1)


def test_hidden_checks_solution_only_cells_and_markdown_are_dropped():
    nb = _nb(
        nbformat.v4.new_markdown_cell("Keep\n<!-- BEGIN SOLUTION -->\nsecret answer\n<!-- END SOLUTION -->\nalso keep"),
        nbformat.v4.new_markdown_cell("<!-- BEGIN SOLUTION -->\nonly secret\n<!-- END SOLUTION -->"),
        _code("check()", exercise="1.1", points=1, tags=["check"]),
        _code("hidden_check()", exercise="1.1", points=1, tags=["check", "hidden"]),
        _code("print('answer')", tags=["solution-only"]),
    )
    lab = make_labs.make_lab(nb)
    assert [c.source for c in lab.cells] == ["Keep\nalso keep", "check()"]
    assert "raises-exception" in lab.cells[1].metadata["tags"]
    assert len(nb.cells) == 5  # the input is not modified


@pytest.mark.parametrize(
    "cell, words",
    [
        (_code("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", exercise="1.1", tags=["exercise"]), "what the student must do"),
        (_code("# BEGIN SOLUTION: a\nx = 1", exercise="1.1", tags=["exercise"]), "never closed"),
        (_code("x = 1\n# END SOLUTION", exercise="1.1", tags=["exercise"]), "without a BEGIN"),
        (_code("# BEGIN SOLUTION: a\n# BEGIN SOLUTION: b\n# END SOLUTION", exercise="1.1", tags=["exercise"]), "nested"),
        (_code("# BEGIN SOLUTION: a\nx = 1\n# END SOLUTION", tags=["exercise"]), "need metadata 'exercise"),
        (_code("# BEGIN SOLUTION: a\nx = 1\n# END SOLUTION", exercise="1.1"), "must be tagged 'exercise'"),
        (_code("x = 1", exercise="1.1", tags=["exercise"]), "has no '# BEGIN SOLUTION' block"),
        (_code("check()", exercise="1.1", tags=["check"]), "points"),
        (_code("# BEGIN SOLUTION: a\nx = 1\n# END SOLUTION", exercise="1.1", tags=["exercise"],
               forbidden="attnlib.core.masked_softmax"), "must be a list of dotted attnlib names"),
        (_code("# BEGIN SOLUTION: a\nx = 1\n# END SOLUTION", exercise="1.1", tags=["exercise"],
               forbidden=["torch.softmax"]), "must be a list of dotted attnlib names"),
    ],
)
def test_malformed_solutions_are_rejected(cell, words):
    with pytest.raises(make_labs.LabError, match=words):
        make_labs.make_lab(_nb(cell), name="sol")


def test_cell_ids_are_stable_and_valid():
    nb = _nb(_code(EXERCISE, exercise="1.2", tags=["exercise"]), _code("c()", exercise="1.2", points=1, tags=["check"]),
             _code("c()", exercise="1.2", points=1, tags=["check"]), _code("h()", exercise="1.2", points=1, tags=["check", "hidden"]),
             nbformat.v4.new_markdown_cell("text"))
    text = notebooks.to_ipynb_text(nb)
    assert text == notebooks.to_ipynb_text(nb)  # deterministic
    ids = [c["id"] for c in json.loads(text)["cells"]]
    assert ids == ["exercise-1-2", "check-1-2", "check-1-2-2", "check-1-2-hidden", "cell-004"]


def test_sync_detects_drift_missing_twins_and_orphans(tmp_path):
    for d in notebooks.NOTEBOOK_DIRS:
        (tmp_path / d).mkdir()
    src = ROOT / "chapters" / "01_attention_as_lookup.md"
    shutil.copy(src, tmp_path / "chapters" / src.name)
    assert any("is missing" in p for p in sync.problems(tmp_path))
    (tmp_path / "chapters" / "01_attention_as_lookup.ipynb").write_text(notebooks.to_ipynb_text(notebooks.read_md(src)))
    assert sync.problems(tmp_path) == []
    md = tmp_path / "chapters" / src.name
    md.write_text(md.read_text() + "\nOne more sentence.\n")
    assert any("differs from" in p for p in sync.problems(tmp_path))
    (tmp_path / "labs" / "orphan.ipynb").write_text("{}")
    assert any("orphan.ipynb has no .md source" in p for p in sync.problems(tmp_path))


MYST = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
---
# A page

```{code-cell} ipython3
---
tags: [setup]
---
%pip install nothing
import sys
total = 1
```

Prose with a fence that is not a cell:

```python
total = 1000
```

```{code-cell} ipython3
def add(x):
    return x + total
assert sys.modules["__main__"].add is add  # cells run in a real __main__ module
total = add(2)
```
"""


def test_run_md_cells_runs_code_cells_in_order_and_reports_the_failing_one(tmp_path, capsys):
    """The GPU image has no Jupyter: tools/run_md_cells.py runs a MyST notebook's code cells there."""
    cells = run_md_cells.code_cells(MYST)
    assert len(cells) == 2 and cells[0].startswith("pass\nimport sys")
    good = tmp_path / "good.md"
    good.write_text(MYST + "\n```{code-cell} ipython3\nassert total == 3, total\n```\n")
    bad = tmp_path / "bad.md"
    bad.write_text(MYST + "\n```{code-cell} ipython3\nassert total == 4, 'total is ' + str(total)\n```\n")
    assert run_md_cells.main([str(good)]) == 0
    assert run_md_cells.main([str(bad), str(good)]) == 1
    out = capsys.readouterr().out
    assert "good: all 3 code cells ran" in out
    assert "bad: cell 2 of 3 FAILED" in out and "total is 3" in out


OLD_SETUP_LAB = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
---

# Lab 99 · A lab written from the old setup cell

*Runs on a laptop CPU.*

```{code-cell} ipython3
# Setup
import sys

if "google.colab" in sys.modules:
    %pip install -q "attnlib @ git+https://github.com/attention-course/attention-from-theory-to-triton"
```
"""
RELEASE = {"url": "https://github.com/example-org/course-fork", "branch": "main", "tag": "v1.2.3",
           "colab": "https://colab.research.google.com", "path_to_book": ""}


def test_set_release_pins_an_old_setup_cell_and_adds_the_badge_once():
    import set_release

    new = set_release.fixed_text(OLD_SETUP_LAB, RELEASE, "lab99_new")
    assert '%pip install -q "attnlib @ git+https://github.com/example-org/course-fork@v1.2.3"' in new
    badge = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             "(https://colab.research.google.com/github/example-org/course-fork/blob/main/labs/lab99_new.ipynb)")
    assert "# Lab 99 · A lab written from the old setup cell\n\n" + badge + "\n\n*Runs on" in new
    assert set_release.fixed_text(new, RELEASE, "lab99_new") == new  # idempotent
    bumped = set_release.fixed_text(new, {**RELEASE, "tag": "v1.3.0", "branch": "spring"}, "lab99_new")
    assert bumped.count("colab-badge.svg") == 1 and "/blob/spring/labs/lab99_new.ipynb)" in bumped
    assert '@v1.3.0"' in bumped and "@v1.2.3" not in bumped
    tight = set_release.fixed_text(OLD_SETUP_LAB.replace("cell\n\n*Runs", "cell\n*Runs"), RELEASE, "lab99_new")
    assert tight == new, "a title with text right under it still gets the badge as a paragraph of its own"
    moved = new.replace(badge + "\n\n", "").replace("```{code-cell}", badge + "\n\n```{code-cell}")
    assert set_release.fixed_text(moved, RELEASE, "lab99_new") == new, "a badge elsewhere moves under the title"
    chapter = set_release.fixed_text(OLD_SETUP_LAB, RELEASE, None)  # chapters get the pin, not the badge
    assert "colab-badge" not in chapter and "@v1.2.3\"" in chapter
    with pytest.raises(SystemExit, match="no `%pip install"):
        set_release.fixed_text(OLD_SETUP_LAB.replace("%pip install -q", "print("), RELEASE, "lab99_new")


def test_set_release_reads_the_version_without_importing_attnlib(tmp_path):
    import set_release

    (tmp_path / "attnlib").mkdir()
    (tmp_path / "attnlib" / "__init__.py").write_text('import torch\n__version__ = "2.0.1"\n')
    assert set_release.version(tmp_path) == "2.0.1"


def test_set_release_check_passes_on_the_course():
    import set_release

    assert set_release.disagreements() == []


@pytest.mark.slow
def test_set_release_rewrites_config_sources_twins_and_labs(tmp_path):
    """tools/set_release.py on a copy of the course: a new URL, and a new lab from the old setup cell, follow."""
    import subprocess
    import sys

    copy = copy_course(tmp_path / "course")
    url = "https://github.com/example-org/attention-course-fork"
    solution = copy / "solutions" / "lab01_scaled_dot_product.md"
    text = solution.read_text()
    old = "\n".join(line for line in text.splitlines() if "colab-badge" not in line)
    solution.write_text(old.replace("@v", "@OLD-REF-v"))  # an old ref and no badge: both must be fixed
    assert subprocess.run([sys.executable, "tools/set_release.py", "not-a-url"], cwd=copy,
                          capture_output=True).returncode == 2
    assert subprocess.run([sys.executable, "tools/set_release.py", "--check"], cwd=copy,
                          capture_output=True).returncode == 1
    done = subprocess.run([sys.executable, "tools/set_release.py", url + "/"], cwd=copy, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert f"  url: {url}\n" in (copy / "_config.yml").read_text()
    assert f'Issues = "{url}/issues"' in (copy / "pyproject.toml").read_text()
    sources = sorted(copy.glob("chapters/*.md")) + sorted(copy.glob("solutions/*.md"))
    generated = sorted(copy.glob("*/*.ipynb")) + sorted(copy.glob("labs/*.md"))
    installs = [p for p in sources + generated if "attnlib @ git+" in p.read_text()]
    assert len(installs) >= len(sources) and len(generated) > len(sources)
    import set_release

    tag = f"v{set_release.version()}"
    for path in installs:
        assert f"attnlib @ git+{url}@{tag}" in path.read_text() and "OLD-REF" not in path.read_text(), path
        assert "attention-course/attention-from-theory-to-triton" not in path.read_text(), path
    for lab in [copy / "labs" / "lab01_scaled_dot_product.md", solution]:
        assert f"{url.removeprefix('https://github.com/')}/blob/main/labs/lab01_scaled_dot_product.ipynb)" in \
            lab.read_text(), lab
    check = subprocess.run([sys.executable, "tools/set_release.py", "--check"], cwd=copy, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_gpu_check_script_parses_and_names_files_that_exist():
    """tools/gpu_check.sh runs once per lent GPU, unattended: it must at least parse and point at real files."""
    import glob
    import re
    import subprocess

    script = ROOT / "tools" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for path in set(re.findall(r"\b(?:tools|tests|solutions|chapters)/[\w./\[\]*-]+", text)):
        path = path.rstrip(".")
        assert glob.glob(str(ROOT / path)), f"gpu_check.sh names {path}, which matches no file"
    assert "--set bench" in text and "DEADLINE" in text and "$OUT" in text  # the steps the header promises


SOLUTIONS = sorted((ROOT / "solutions").glob("lab*.md"))


def _resolve(dotted: str):
    """The attnlib object a dotted name such as ``attnlib.core.masked_softmax`` names (ImportError/AttributeError if none)."""
    import importlib

    module_name, _, attr = dotted.rpartition(".")
    parts = module_name.split(".")
    for n in range(len(parts), 0, -1):  # the longest importable prefix, then attributes (classes, functions)
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ModuleNotFoundError:
            continue
        for name in parts[n:] + [attr]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {dotted!r}")


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_every_exercise_names_the_attnlib_references_it_must_not_call(path):
    """The grader makes each ``forbidden`` name raise while the exercise's code runs: every exercise cell
    lists them (possibly none), and each name is a real attnlib function or class (a typo would forbid nothing)."""
    exercises = [c for c in notebooks.read_md(path).cells if "exercise" in c.metadata.get("tags", [])]
    assert exercises, f"{path.name} has no exercise cell"
    for cell in exercises:
        where = f"{path.name}, exercise {cell.metadata.get('exercise')}"
        forbidden = cell.metadata.get("forbidden")
        assert isinstance(forbidden, list), f"{where}: metadata 'forbidden' must be a list, got {forbidden!r}"
        for name in forbidden:
            assert isinstance(name, str) and name.startswith("attnlib."), f"{where}: {name!r} is not an attnlib name"
            obj = _resolve(name)
            assert callable(obj), f"{where}: {name} is not a function or class"
    lab = make_labs.make_lab(notebooks.read_md(path), name=path.name)
    kept = {c.metadata["exercise"]: c.metadata["forbidden"] for c in lab.cells if "exercise" in c.metadata.get("tags", [])}
    assert kept == {c.metadata["exercise"]: c.metadata["forbidden"] for c in exercises}  # the lab keeps them


def test_forbidden_names_resolve_or_fail():
    assert _resolve("attnlib.core.masked_softmax") is __import__("attnlib").core.masked_softmax
    assert _resolve("attnlib.heads.MultiHeadAttention").__name__ == "MultiHeadAttention"
    with pytest.raises(AttributeError):
        _resolve("attnlib.core.masked_softmx")


def _exercises_section(text: str) -> str:
    found = re.search(r"^## Exercises.*?$(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert found, "no '## Exercises' section"
    return found.group(1)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_written_exercises_have_an_answer_key_that_the_lab_does_not(path):
    """Each solution's written Exercises carry an instructor-only answer key; make_labs strips it from labs/."""
    section = _exercises_section(path.read_text(encoding="utf-8"))
    begin, end = section.find("<!-- BEGIN SOLUTION -->"), section.find("<!-- END SOLUTION -->")
    assert 0 <= begin < end, f"{path.name}: the Exercises section has no <!-- BEGIN/END SOLUTION --> answer key"
    key = section[begin:end]
    assert "Answer key" in key and len(key) > 600, f"{path.name}: the answer key is missing or too short"
    questions = len(re.findall(r"^\d+\. ", section[:begin], flags=re.MULTILINE))
    answers = len(re.findall(r"^\d+\. ", key, flags=re.MULTILINE))
    assert answers >= questions > 0, f"{path.name}: {questions} written exercises but {answers} numbered answers"
    lab_md, lab_nb = make_labs.lab_texts(path)
    for text in (lab_md, lab_nb, (ROOT / "labs" / path.name).read_text(encoding="utf-8")):
        assert "Answer key" not in text and "BEGIN SOLUTION" not in text
    assert _exercises_section(lab_md).strip(), f"{path.name}: the lab lost its written exercises"
