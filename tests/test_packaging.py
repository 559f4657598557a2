"""pyproject.toml, environment.yml and the rules' conda env must name the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\s\[]", requirement, maxsplit=1)[0].lower()


def _conda_packages(path: Path) -> set[str]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    names = {CONDA_NAMES.get(_name(d), _name(d)) for d in deps if isinstance(d, str)}
    return names - {"python", "pip"}


def test_conda_files_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    tests = {_name(r) for r in project["optional-dependencies"]["test"]}
    assert _conda_packages(ROOT / "workflow" / "envs" / "iobs.yaml") == runtime
    assert _conda_packages(ROOT / "environment.yml") == runtime | tests


def test_torch_is_a_range_not_a_build():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(r for r in project["dependencies"] if _name(r) == "torch")
    assert "==" not in torch_req and "+cpu" not in torch_req
