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
    pipeline = {_name(r) for r in project["optional-dependencies"]["pipeline"]}
    tests = {_name(r) for r in project["optional-dependencies"]["test"]}
    assert _conda_packages(ROOT / "workflow" / "envs" / "iobs.yaml") == runtime | pipeline
    assert _conda_packages(ROOT / "environment.yml") == runtime | pipeline | tests


def test_torch_is_a_range_not_a_build():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(r for r in project["dependencies"] if _name(r) == "torch")
    assert "==" not in torch_req and "+cpu" not in torch_req


def test_library_needs_no_pipeline_packages():
    """`pip install iobs` (no extras) must give a working library and CLI: only iobs.pipeline may import the
    pipeline extra's packages."""
    import ast

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = {_name(r).replace("-", "_") for r in project["optional-dependencies"]["pipeline"]} | {"nbformat"}
    allowed = ("pipeline/",)
    offenders = []
    for path in sorted((ROOT / "src" / "iobs").rglob("*.py")):
        relative = path.relative_to(ROOT / "src" / "iobs").as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.split(".")[0] in extra and not relative.startswith(allowed):
                    offenders.append(f"{relative}: import {name}")
    assert not offenders, offenders


def test_schema_ships_inside_the_package():
    """A non-editable install validates configs: the schema is package data, found beside iobs.config."""
    import iobs.config

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["iobs"]
    schema = Path(iobs.config.SCHEMA_PATH)
    assert schema.is_file() and schema.is_relative_to(Path(iobs.config.__file__).parent)
    assert any(schema.relative_to(Path(iobs.config.__file__).parent).match(p) for p in patterns)
