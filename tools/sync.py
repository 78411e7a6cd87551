"""Regenerate every ``.ipynb`` from its paired MyST ``.md`` source (``make sync``).

    python tools/sync.py           # rewrite the .ipynb twins that changed
    python tools/sync.py --check   # exit 1 and list the pairs that are out of sync

The ``.md`` is the source; the ``.ipynb`` is derived from it with no outputs
and stable cell ids (see tools/notebooks.py), so "in sync" means "byte-equal
to what this tool would write". Timestamps are never consulted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from notebooks import NOTEBOOK_DIRS, ROOT, ipynb_path, notebook_sources, read_md, to_ipynb_text, write_if_changed  # noqa: E402


def problems(root: Path = ROOT) -> list[str]:
    """Human-readable descriptions of every pair that is out of sync."""
    found = []
    sources = notebook_sources(root=root)
    for md in sources:
        nb_path = ipynb_path(md)
        expected = to_ipynb_text(read_md(md))
        if not nb_path.exists():
            found.append(f"{nb_path.relative_to(root)} is missing (run `make sync`)")
        elif nb_path.read_text(encoding="utf-8") != expected:
            found.append(f"{nb_path.relative_to(root)} differs from {md.relative_to(root)} (run `make sync`)")
    paired = {ipynb_path(md) for md in sources}
    for d in NOTEBOOK_DIRS:
        for nb_path in sorted((root / d).glob("*.ipynb")):
            if nb_path not in paired:
                found.append(f"{nb_path.relative_to(root)} has no .md source; write one (the .md is the source)")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report pairs that are out of sync")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        for line in found:
            print(line)
        return 1 if found else 0
    for md in notebook_sources():
        if write_if_changed(ipynb_path(md), to_ipynb_text(read_md(md))):
            print(f"wrote {ipynb_path(md).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
