"""ruff passes with the project's rules, those rules catch what they promise, and the pre-commit hooks run."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

VENV_BIN = Path(sys.executable).parent


def _ruff() -> str:
    ruff = VENV_BIN / "ruff"
    found = str(ruff) if ruff.exists() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: it is in the dev extra (pip install -e '.[dev]')")
    return found


def test_ruff_check_passes():
    proc = subprocess.run([_ruff(), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("path, code, rule", [
    ("attnlib/_lint_probe.py", "def f():\n    return undefined_name\n", "F821"),
    ("tools/_lint_probe.py", "fs = []\nfor i in range(3):\n    fs.append(lambda: i)\n", "B023"),
    ("tests/_lint_probe.py", "__all__ = sorted(['a'])\n", "PLE0605"),
])
def test_ruff_configuration_catches_the_slips_it_selects(path, code, rule):
    """The [tool.ruff] rules apply where the code lives (a configuration that matched no file would pass anything)."""
    proc = subprocess.run([_ruff(), "check", "--no-cache", "--stdin-filename", path, "-"], cwd=ROOT, input=code,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and rule in proc.stdout, proc.stdout + proc.stderr


def test_pre_commit_hooks_are_local_and_run_what_the_suite_checks():
    """Each hook runs a tool of this checkout with the venv's Python or ruff (pre-commit's `language: system`).

    The commands themselves are run by the suite already (test_pairing: sync and make_labs --check;
    test_tools: set_release --check; test_ruff_check_passes above): here, that the hooks name exactly them."""
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"
    entries = {hook["id"]: hook["entry"] for hook in repo["hooks"]}
    assert entries == {
        "sync-check": ".venv/bin/python tools/sync.py --check",
        "labs-check": ".venv/bin/python tools/make_labs.py --check",
        "release-check": ".venv/bin/python tools/set_release.py --check",
        "ruff": ".venv/bin/ruff check --force-exclude",
    }
    for hook in repo["hooks"]:
        assert hook["language"] == "system", hook["id"]
        script = hook["entry"].split()[1]
        assert hook["id"] == "ruff" or (ROOT / script).is_file(), f"{hook['id']}: {script} does not exist"
    assert (VENV_BIN / "python").exists() or (VENV_BIN / "python3").exists()

