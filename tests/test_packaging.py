"""One list of dependencies (pyproject.toml; environment.yml installs the project), the install options, the wheel."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
import yaml
from helpers import ROOT, copy_course
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
COLAB_PYTHON = "3.12"  # Colab's runtime (googlecolab/backend-info lists Python 3.12 for its 2025.10 and 2026.01 runtimes)


def test_environment_yml_installs_the_project_itself_with_every_extra():
    """One list of dependencies: environment.yml names none of pyproject's packages, it installs the project."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"], env["channels"]
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs one pip: section"
    (spec,) = pip_lists[0]
    match = re.fullmatch(r"-e \.\[([\w,]+)\]", spec)
    assert match, f"environment.yml's pip section must be the one line '-e .[extras]', got {pip_lists[0]}"
    assert set(match.group(1).split(",")) == set(PROJECT["optional-dependencies"]), "install every extra"
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert sorted(conda) == ["pip", f"python={COLAB_PYTHON}"], conda
    assert SpecifierSet(PROJECT["requires-python"]).contains(COLAB_PYTHON), "Colab's Python must satisfy the package"


def test_declared_floors_are_the_tested_versions():
    """torch >= 2.11 (GPU image, Colab) and Triton >= 3.6 (the compat run): the oldest that a test runs on."""
    reqs = {Requirement(s).name: Requirement(s) for s in PROJECT["dependencies"]}
    reqs |= {Requirement(s).name: Requirement(s) for extra in PROJECT["optional-dependencies"].values() for s in extra}
    assert str(reqs["torch"].specifier) == ">=2.11"
    assert str(reqs["triton"].specifier) == ">=3.6"
    assert str(SpecifierSet(PROJECT["requires-python"])) == ">=3.11"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_SPEC \?= torch>=2\.11$", makefile, re.MULTILINE), "make's default torch is the floor"
    assert re.search(r'^COMPAT_TRITON \?= triton==3\.6\.0$', makefile, re.MULTILINE), "the compat run tests the floor"


def test_project_urls_name_the_configured_repository():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert PROJECT["urls"] == {"Homepage": url, "Repository": url, "Issues": f"{url}/issues"}


def _clean_make_env():
    """The environment without make's own variables: under `make test`, MAKEFLAGS carries the caller's
    command-line assignments (CI's TORCH_SPEC=torch==2.13.0) into every make this test starts."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL", "TORCH_SPEC", "TORCH_INDEX_URL", "COMPAT_TRITON"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _make_dry_run(tmp_path, *assignments):
    out = subprocess.run(["make", "-n", "venv", f"VENV={tmp_path / 'venv'}", *assignments], cwd=ROOT,
                         capture_output=True, text=True, check=True, env=_clean_make_env()).stdout
    return [line for line in out.splitlines() if "pip install" in line]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_torch_index_url_reaches_the_torch_install_only(tmp_path):
    plain = _make_dry_run(tmp_path)
    assert len(plain) == 2 and not any("index-url" in line for line in plain), plain
    assert plain[0].endswith('"torch>=2.11"')
    cpu = "https://download.pytorch.org/whl/cpu"
    torch_line, project_line = _make_dry_run(tmp_path, f"TORCH_INDEX_URL={cpu}", "TORCH_SPEC=torch==2.13.0")
    assert f"--extra-index-url {cpu} " in torch_line and torch_line.endswith('"torch==2.13.0"'), torch_line
    assert "index-url" not in project_line, project_line
    compat = subprocess.run(["make", "-n", "test-triton-compat", f"COMPAT_VENV={tmp_path / 'compat'}",
                             f"TORCH_INDEX_URL={cpu}"], cwd=ROOT, capture_output=True, text=True, check=True,
                            env=_clean_make_env()).stdout
    assert f"--extra-index-url {cpu} " in compat and '"triton==3.6.0"' in compat
    ci = (ROOT / ".ci" / "run").read_text()
    assert "TORCH_INDEX_URL" not in ci, "CI's install stays as it was: no extra index"


@pytest.mark.slow
def test_wheel_contains_attnlib_only(tmp_path):
    # Build from a copy of the working tree: setuptools writes build/ and *.egg-info beside the sources.
    source = copy_course(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("attnlib-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= {"attnlib", next(t for t in top if t.endswith(".dist-info"))}, top
    assert "attnlib/core.py" in names and "attnlib/resources/seed_papers.csv" in names
    assert not any(n.startswith(("chapters", "labs", "solutions", "tools", "tests")) for n in names)
