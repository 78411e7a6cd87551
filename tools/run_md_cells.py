"""Run the code cells of MyST notebooks in order, without Jupyter (for machines that have none).

    python tools/run_md_cells.py solutions/lab15_triton_basics.md [more.md ...]

Each file's ``{code-cell} ipython3`` blocks run top to bottom in one namespace, IPython
magics (``%pip`` on Colab) become ``pass``, and each cell's source is registered with
:mod:`linecache` (Triton reads a kernel's source to compile it). The first failing cell of
a file is reported with its traceback and the next file starts; the exit status is the
number of files that failed. ``tools/gpu_check.sh`` uses it on the GPU image, which has
no Jupyter, nbval or jupytext.
"""

from __future__ import annotations

import linecache
import re
import sys
import time
import traceback
import types
from pathlib import Path

CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", flags=re.S | re.M)
METADATA = re.compile(r"\A---\n.*?\n---\n", flags=re.S)
MAGIC = re.compile(r"^(\s*)[%!].*$", flags=re.M)


def code_cells(text: str) -> list[str]:
    """The code cells of a MyST notebook, metadata stripped and magics replaced by ``pass``."""
    return [MAGIC.sub(r"\1pass", METADATA.sub("", src)) for src in CELL.findall(text)]


def run_file(path: Path) -> bool:
    cells = code_cells(path.read_text())
    # A fresh module as __main__, as Jupyter and runpy give: torch.compile's guards look globals up there.
    module, saved = types.ModuleType("__main__"), sys.modules["__main__"]
    sys.modules["__main__"] = module
    start = time.time()
    try:
        for i, src in enumerate(cells):
            name = f"<{path.stem}[{i}]>"
            linecache.cache[name] = (len(src), None, src.splitlines(True), name)
            try:
                exec(compile(src, name, "exec"), module.__dict__)
            except Exception:  # noqa: BLE001 - reported, and the next file runs
                print(f"{path.stem}: cell {i} of {len(cells)} FAILED\n{traceback.format_exc()[-3000:]}", flush=True)
                return False
    finally:
        sys.modules["__main__"] = saved
    print(f"{path.stem}: all {len(cells)} code cells ran in {time.time() - start:.0f} s", flush=True)
    return True


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip())
        return 2
    import matplotlib

    matplotlib.use("Agg")
    return sum(not run_file(Path(p)) for p in argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
