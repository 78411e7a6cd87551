"""pyproject.toml and environment.yml agree, and the wheel ships attnlib only."""

import subprocess
import sys
import tomllib
import zipfile

import pytest
import yaml
from helpers import ROOT, copy_course
from packaging.requirements import Requirement


def _normalise(spec: str) -> str:
    req = Requirement(spec)
    marker = f"; {req.marker}" if req.marker else ""
    return f"{req.name.lower().replace('_', '-')}{req.specifier}{marker}"


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs one pip: section"
    listed = {s for s in pip_lists[0] if not s.startswith("-e")}
    assert "-e ." in pip_lists[0], "environment.yml must install attnlib itself (-e .)"
    ours, theirs = {_normalise(s) for s in wanted}, {_normalise(s) for s in listed}
    assert ours == theirs, f"only in pyproject: {sorted(ours - theirs)}; only in environment.yml: {sorted(theirs - ours)}"
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == [f"python{project['requires-python']}"]


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
