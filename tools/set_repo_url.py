"""Point the course at its repository: ``python tools/set_repo_url.py https://github.com/OWNER/REPO``.

The URL is set in ``_config.yml`` (``repository.url``: the Colab and repository
buttons of the site) and in the setup cell of every notebook source (the
``pip install "attnlib @ git+URL"`` that runs on Colab); the ``.ipynb`` twins and
the labs are then regenerated. tests/test_structure.py checks that they agree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_labs  # noqa: E402
import sync  # noqa: E402
from notebooks import ROOT, notebook_sources  # noqa: E402

CONFIG_URL = re.compile(r"^(repository:\n(?:  .*\n)*?  url: )(\S+)$", re.MULTILINE)
INSTALL_URL = re.compile(r'("attnlib @ git\+)([^"]+)(")')


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not re.fullmatch(r"https://\S+", argv[0]):
        print(__doc__)
        return 2
    url = argv[0].rstrip("/")
    config = ROOT / "_config.yml"
    text, n = CONFIG_URL.subn(lambda m: m.group(1) + url, config.read_text(encoding="utf-8"))
    if n != 1:
        raise SystemExit("_config.yml: no repository.url found")
    config.write_text(text, encoding="utf-8")
    for src in notebook_sources(("chapters", "solutions")):
        src.write_text(INSTALL_URL.sub(lambda m: m.group(1) + url + m.group(3), src.read_text(encoding="utf-8")),
                       encoding="utf-8")
    make_labs.main([])
    sync.main([])
    print(f"repository URL set to {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
