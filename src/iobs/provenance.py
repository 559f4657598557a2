"""Provenance records: a small JSON beside every artifact that says how it was made."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place, on any failure delete it.

    Every file iobs writes goes through here, so an interrupted write never leaves a complete-looking artifact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


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
