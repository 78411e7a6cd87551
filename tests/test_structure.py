"""The layout the design fixes, the table of contents, the Colab cells and the bibliography."""

import re

import pytest
import yaml
from helpers import ROOT

import notebooks

REQUIRED = ["chapters", "labs", "solutions", "attnlib", "tools", "tests", "environment.yml", "pyproject.toml",
            "_config.yml", "_toc.yml", "intro.md", "references.bib", "Makefile", "README.md", ".ci/run",
            "jupytext.toml"]
SOURCES = notebooks.notebook_sources()
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
BIB_KEYS = set(re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "references.bib").read_text(), re.MULTILINE))


def _toc_files(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "file" or key == "root":
                yield value
            else:
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def test_layout():
    missing = [p for p in REQUIRED if not (ROOT / p).exists()]
    assert not missing, missing


def test_toc_lists_existing_pages_and_every_chapter_and_lab():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = list(_toc_files(toc))
    for f in files:
        assert (ROOT / f"{f}.md").exists(), f"_toc.yml names {f}, which has no .md"
        assert not f.startswith("solutions/"), "solutions stay out of the site"
    listed = set(files)
    for src in SOURCES:
        stem = str(src.relative_to(ROOT).with_suffix(""))
        if not stem.startswith("solutions/"):
            assert stem in listed, f"{stem} is not in _toc.yml"
    captions = [part["caption"] for part in toc["parts"]]
    assert captions[0].startswith("Part I") and captions[1].startswith("Part II")


def _attnlib_version():
    """attnlib.__version__ as the package reports it (imported: the value users see)."""
    import attnlib

    return attnlib.__version__


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_first_code_cell_installs_the_release_from_the_configured_repository(src):
    """Colab installs attnlib at the tag named after attnlib.__version__, from _config.yml's repository."""
    nb = notebooks.read_md(src)
    first = next(c for c in nb.cells if c.cell_type == "code").source
    assert '"google.colab" in sys.modules' in first, f"{src.name}: the first code cell must be the setup cell"
    installs = re.findall(r'%pip install[^\n"]*"attnlib @ git\+([^"]*)"', first)
    wanted = f"{CONFIG['repository']['url']}@v{_attnlib_version()}"
    assert installs == [wanted], (f"{src.name}: Colab installs attnlib from {installs}, but _config.yml and "
                                  f"attnlib.__version__ say {wanted}: run `python tools/set_release.py`")
    rest = "".join(c.source for c in nb.cells if c.cell_type == "code" and c.source != first)
    assert "attnlib @ git+" not in rest, f"{src.name}: only the setup cell installs attnlib"


def test_package_version_is_attnlibs():
    """pyproject.toml reads its version from attnlib.__version__, so the tag, the wheel and the notebooks agree."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "attnlib.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", _attnlib_version()), "tags are v<major>.<minor>.<patch>"


LABS = [p for p in SOURCES if p.parent.name in ("labs", "solutions")]


@pytest.mark.parametrize("src", LABS, ids=lambda p: str(p.relative_to(ROOT)))
def test_lab_has_an_open_in_colab_badge_under_its_title_pointing_where_the_launch_button_does(src):
    """The badge opens the student lab on the branch the site's launch button uses (sphinx-book-theme's URL)."""
    repo = CONFIG["repository"]
    owner_repo = repo["url"].removeprefix("https://github.com/").rstrip("/")
    path = "/".join(p for p in (str(repo.get("path_to_book") or "").strip("/"), "labs", f"{src.stem}.ipynb") if p)
    link = f"{CONFIG['launch_buttons']['colab_url'].rstrip('/')}/github/{owner_repo}/blob/{repo['branch']}/{path}"
    nb = notebooks.read_md(src)
    title = nb.cells[0].source if nb.cells[0].cell_type == "markdown" else ""
    lines = [line for line in title.splitlines() if line.strip()]
    assert lines and lines[0].startswith("# "), f"{src.name}: the first cell starts with the lab's title"
    badge = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](" + link + ")"
    assert len(lines) > 1 and lines[1] == badge, (f"{src.name}: the line under the title must be the Colab badge "
                                                   f"{badge}: run `python tools/set_release.py`")


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_citations_exist_and_page_has_references(src):
    text = src.read_text(encoding="utf-8")
    keys = set()
    for group in re.findall(r"\{foot(?:cite)(?::[a-z]+)?\}`([^`]+)`", text):
        keys |= {k.strip() for k in group.split(",")}
    assert keys, f"{src.name} cites nothing"
    assert keys <= BIB_KEYS, f"{src.name}: unknown keys {keys - BIB_KEYS}"
    assert "```{footbibliography}" in text, f"{src.name}: end with a References section"


def test_seed_entries_use_the_exact_seed_titles():
    seed_file = ROOT.parent / "shared" / "reference" / "seed-papers.txt"
    if not seed_file.exists():
        pytest.skip("../shared/reference/seed-papers.txt is not beside this checkout")
    titles = set(seed_file.read_text(encoding="utf-8").splitlines()[0::2])
    bib = (ROOT / "references.bib").read_text(encoding="utf-8")
    entries = re.findall(r"@\w+\{(seed-[^,]+),\s*title = \{\{(.*?)\}\}", bib, re.DOTALL)
    assert len(entries) == 201
    for key, title in entries:
        assert title.replace("\\&", "&") in titles, f"{key}: title not in the seed file: {title}"


def test_seed_paper_table_matches_the_seed_file():
    from attnlib.resources import CATEGORIES, load_seed_papers

    papers = load_seed_papers()
    assert [p["number"] for p in papers] == list(range(1, 202))
    assert {p["category"] for p in papers} <= set(CATEGORIES)
    seed_file = ROOT.parent / "shared" / "reference" / "seed-papers.txt"
    if seed_file.exists():
        assert [p["title"] for p in papers] == seed_file.read_text(encoding="utf-8").splitlines()[0::2]
