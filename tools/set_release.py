"""Pin every notebook to the course's repository and release, from one place.

    python tools/set_release.py          # write _config.yml's repository and attnlib's version into every notebook
    python tools/set_release.py URL      # first set repository.url in _config.yml (https://github.com/OWNER/REPO)
    python tools/set_release.py --check  # change nothing; exit 1 and list every source that disagrees

The one place is two lines: ``repository.url`` (and ``repository.branch``) in ``_config.yml``, which the
site's launch and repository buttons use (and ``pyproject.toml``'s ``[project.urls]`` follow), and ``__version__`` in ``attnlib/__init__.py``, which
``pyproject.toml`` reads as the package version. From them, in every notebook source (``chapters/``,
``solutions/``):

* the setup cell's Colab install becomes ``%pip install -q "attnlib @ git+URL@vVERSION"``: the tag named
  after the version, so a student who opens last term's lab installs last term's attnlib, not ``main``.
  Whatever URL or ref the line named before (none, another tag, a branch) is replaced;
* each lab (``solutions/lab*.md``) gets an "Open in Colab" badge under its title, linking to the student
  version ``labs/<lab>.ipynb`` on ``repository.branch``: the notebook the site's launch button opens on
  that lab's page. A badge already there is rewritten, a missing one is added.

Then the labs and every ``.ipynb`` twin are regenerated (``make labs``, ``make sync``). Running it twice
changes nothing the second time, and a new notebook written from an old setup cell is fixed by running it
once. ``tests/test_structure.py`` checks that every notebook agrees with ``_config.yml`` and
``attnlib.__version__``.

The tag must exist for Colab's install to work: when you release, bump ``__version__``, run this tool,
commit, and tag that commit ``v<version>`` (``git tag v0.2.0 && git push origin v0.2.0``).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from notebooks import ROOT, notebook_sources  # noqa: E402

CONFIG_URL = re.compile(r"^(repository:\n(?:  .*\n)*?  url: )(\S+)$", re.MULTILINE)
# The install line of a setup cell, with or without a ref after the URL.
INSTALL = re.compile(r'^(?P<head>[ \t]*%pip install[^\n"]*"attnlib @ git\+)(?P<url>[^"@\s]+)(?:@(?P<ref>[^"\s]+))?"',
                     re.MULTILINE)
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = re.compile(r"\n*^\[!\[Open In Colab\]\([^)\s]*\)\]\([^)\s]*\)[ \t]*$\n*", re.MULTILINE)  # with its blank lines
PROJECT_URLS = re.compile(r"^(\[project\.urls\]\n)((?:[^\[\n].*\n|\n)*)", re.MULTILINE)
GITHUB = re.compile(r"https://github\.com/(?P<owner>[^/\s]+)/(?P<repo>[^/\s]+?)(?:\.git)?/?")


def version(root: Path = ROOT) -> str:
    """attnlib's ``__version__``, read from ``attnlib/__init__.py`` without importing it (no torch needed)."""
    tree = ast.parse((root / "attnlib" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("attnlib/__init__.py: no __version__ = '...' found")


def release(root: Path = ROOT) -> dict:
    """What the notebooks must say: the repository URL, its branch, the tag and the Colab prefix."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    repo = config["repository"]
    url = repo["url"].rstrip("/")
    if not GITHUB.fullmatch(url):
        raise SystemExit(f"_config.yml: repository.url must be https://github.com/OWNER/REPO (Colab opens GitHub "
                         f"notebooks only), got {url!r}")
    colab = config.get("launch_buttons", {}).get("colab_url", "https://colab.research.google.com").rstrip("/")
    path_to_book = str(repo.get("path_to_book") or "").strip("/")
    return {"url": url, "branch": repo.get("branch", "main"), "tag": f"v{version(root)}", "colab": colab,
            "path_to_book": path_to_book}


def install_spec(rel: dict) -> str:
    return f"attnlib @ git+{rel['url']}@{rel['tag']}"


def badge(rel: dict, lab_stem: str) -> str:
    """The Markdown of a lab's badge: the student lab on the branch the launch button uses."""
    m = GITHUB.fullmatch(rel["url"])
    path = "/".join(p for p in (rel["path_to_book"], "labs", f"{lab_stem}.ipynb") if p)
    link = f"{rel['colab']}/github/{m['owner']}/{m['repo']}/blob/{rel['branch']}/{path}"
    return f"[![Open In Colab]({BADGE_IMAGE})]({link})"


def _body_start(text: str) -> int:
    """Offset just past the YAML front matter (``---`` ... ``---``), or 0."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            return end + len("\n---\n")
    return 0


def fixed_text(text: str, rel: dict, lab_stem: str | None, where: str = "notebook") -> str:
    """``text`` (a MyST notebook) with its install line pinned and, for a lab, its badge in place."""
    spec_head = install_spec(rel)
    text, n = INSTALL.subn(lambda m: f'{m["head"]}{rel["url"]}@{rel["tag"]}"', text)
    if n == 0 and f'"{spec_head}"' not in text:
        raise SystemExit(f'{where}: no `%pip install ... "attnlib @ git+..."` line in its setup cell')
    if lab_stem is None:
        return text
    line = badge(rel, lab_stem)
    text = BADGE.sub("\n\n", text)  # an old badge, wherever it is, goes; the current one goes under the title
    start = _body_start(text)
    title = re.compile(r"^# .*$", re.MULTILINE).search(text, start)
    if title is None:
        raise SystemExit(f"{where}: no '# Title' line to put the Colab badge under")
    return text[:title.end()] + "\n\n" + line + "\n\n" + text[title.end():].lstrip("\n")  # its own paragraph


def fixed_pyproject(text: str, url: str) -> str:
    """``pyproject.toml`` with its ``[project.urls]`` (Homepage, Repository, Issues) on ``url``."""
    table = (f'Homepage = "{url}"\nRepository = "{url}"\nIssues = "{url}/issues"\n\n')
    new, n = PROJECT_URLS.subn(lambda m: m.group(1) + table, text, count=1)
    if n != 1:
        raise SystemExit("pyproject.toml: no [project.urls] table")
    return new


def targets(root: Path = ROOT) -> list[tuple[Path, str | None]]:
    """(notebook source, lab stem or None) for every chapter and solution."""
    return [(p, p.stem if p.parent.name == "solutions" else None)
            for p in notebook_sources(("chapters", "solutions"), root=root)]


def disagreements(root: Path = ROOT) -> list[str]:
    rel = release(root)
    found = []
    for path, stem in targets(root):
        where = str(path.relative_to(root))
        text = path.read_text(encoding="utf-8")
        if fixed_text(text, rel, stem, where) != text:
            found.append(f"{where}: install line or Colab badge differs from {install_spec(rel)!r}")
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    if fixed_pyproject(pyproject, rel["url"]) != pyproject:
        found.append(f"pyproject.toml: [project.urls] do not name {rel['url']}")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", help="set repository.url in _config.yml first (https://github.com/OWNER/REPO)")
    parser.add_argument("--check", action="store_true", help="change nothing; list the files that disagree")
    args = parser.parse_args(argv)
    if args.check:
        if args.url:
            parser.error("--check takes no URL")
        found = disagreements()  # the generated files: `tools/make_labs.py --check`, `tools/sync.py --check`
        for line in found:
            print(line)
        return 1 if found else 0
    if args.url:
        url = args.url.rstrip("/")
        if not GITHUB.fullmatch(url):
            parser.error(f"URL must be https://github.com/OWNER/REPO, got {args.url!r}")
        config = ROOT / "_config.yml"
        text, n = CONFIG_URL.subn(lambda m: m.group(1) + url, config.read_text(encoding="utf-8"))
        if n != 1:
            raise SystemExit("_config.yml: no repository.url found")
        config.write_text(text, encoding="utf-8")
    rel = release()
    pyproject = ROOT / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    if fixed_pyproject(text, rel["url"]) != text:
        pyproject.write_text(fixed_pyproject(text, rel["url"]), encoding="utf-8")
        print("wrote pyproject.toml")
    for path, stem in targets():
        text = path.read_text(encoding="utf-8")
        new = fixed_text(text, rel, stem, str(path.relative_to(ROOT)))
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    import make_labs
    import sync

    make_labs.main([])
    sync.main([])
    print(f"notebooks install {install_spec(rel)!r}; the tag {rel['tag']} must exist in {rel['url']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
