"""requirements-lock.txt: it pins every dependency within pyproject's ranges, leaves torch to the machine, and the
provenance records which lock (and how much drift from it) a result was made under."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement

from iobs import lock
from iobs.provenance import build_record
from tests.conftest import REPO

LOCK_FILE = REPO / lock.LOCK_NAME


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def test_lock_pins_every_requirement_within_its_range():
    pins = lock.parse_pins(LOCK_FILE.read_text())
    for requirement in _pyproject_requirements():
        name = lock.normalise(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{name} is not in the lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{name}=={pins[name]} in the lock is outside pyproject's {requirement}: run `make lock`"


def test_lock_leaves_torch_and_cuda_libraries_to_the_machine():
    pins = lock.parse_pins(LOCK_FILE.read_text())
    assert "torch" not in pins
    assert not [name for name in pins if name.startswith(("nvidia-", "triton", "cuda-"))]


def test_parse_pins_ignores_comments_options_and_markers():
    text = "# header\n--index-url x\nFoo_Bar==1.2 ; python_version >= '3.11'\n    # via baz\nqux[extra]==3.0\n"
    assert lock.parse_pins(text) == {"foo-bar": "1.2", "qux": "3.0"}


def test_drift_names_each_package_that_differs():
    installed_pytest = __import__("pytest").__version__
    pins = {"pytest": installed_pytest, "packaging": "0.0.1", "surely-not-installed-xyz": "1.0"}
    assert lock.drift(pins) == {
        "packaging": {"locked": "0.0.1", "installed": __import__("packaging").__version__},
        "surely-not-installed-xyz": {"locked": "1.0", "installed": None},
    }


def test_provenance_records_the_lock_hash():
    record = build_record(job="x", params={}, seed=0, wall_seconds=0.0)
    assert record["lock"]["file"] == lock.LOCK_NAME
    assert record["lock"]["sha256"] == hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    json.dumps(record)  # serialisable as it stands


def test_check_fails_and_names_the_drifted_package(tmp_path):
    fake = tmp_path / "lock.txt"
    fake.write_text("packaging==0.0.1\n")
    out = subprocess.run([sys.executable, "-m", "iobs.lock", "--check"], capture_output=True, text=True,
                         env=dict(os.environ, IOBS_LOCK_FILE=str(fake)), timeout=60)
    assert out.returncode == 1
    assert "packaging: locked 0.0.1, installed" in out.stdout
