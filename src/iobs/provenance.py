"""Provenance records: a small JSON beside every artifact that says how it was made."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from iobs.atomic import atomic_write_json
from iobs.lock import lock_record

TRACKED_PACKAGES = ("iobs", "torch", "numpy", "transformers", "tokenizers", "datasets", "pandas", "snakemake")


def package_versions(names=TRACKED_PACKAGES) -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def build_record(*, job: str, params: dict, seed: int | None, wall_seconds: float, extra: dict | None = None,
                 wildcards: dict | None = None, inputs: list | None = None, outputs: list | None = None) -> dict:
    return {
        "job": job,
        "wildcards": wildcards or {},
        "params": params,
        "seed": seed,
        "inputs": inputs or [],
        "outputs": outputs or [],
        "wall_seconds": round(wall_seconds, 3),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "git_commit": git_commit(Path(__file__).parent),
        "versions": package_versions(),
        "lock": lock_record(),
        **(extra or {}),
    }


def write_provenance(path: str | Path, **kwargs) -> dict:
    record = build_record(**kwargs)
    atomic_write_json(path, record)
    return record
