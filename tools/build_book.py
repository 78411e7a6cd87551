"""Build the Jupyter Book without executing notebooks, treating warnings as errors.

    python tools/build_book.py [--out DIR]

A broken cross-reference, an unknown citation key or a page missing from
``_toc.yml`` fails the build. Notebook execution is nbval's job (and
``make book``'s), so this build is fast. By default it writes into a fresh
temporary folder, so several builds can run at once.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path) -> subprocess.CompletedProcess:
    """Run ``jupyter-book build`` with execution off and ``-W``; return the finished process."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    # Jupyter Book resolves local extensions' folders against the config file's folder, which is `out` here.
    local = config.get("sphinx", {}).get("local_extensions") or {}
    for name, folder in local.items():
        local[name] = str((ROOT / folder).resolve())
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "_config_noexec.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(ROOT), "--config", str(config_path),
           "--path-output", str(out), "--builder", "html", "-W", "-n", "--keep-going"]
    return subprocess.run(cmd, capture_output=True, text=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary folder, removed after)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="book-"))
    try:
        proc = build(out)
        sys.stdout.write(proc.stdout[-20000:])
        sys.stderr.write(proc.stderr[-20000:])
        print(f"\njupyter-book exited with {proc.returncode}" + (f"; site in {out}/_build/html" if args.out else ""))
        return proc.returncode
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
