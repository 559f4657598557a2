"""Resuming after a kill: Snakemake's lock of a working directory outlives a Snakemake killed with SIGKILL.

Snakemake's lock files (.snakemake/locks) name no process, so a killed run's lock stops every later run with a
LockException until `snakemake --unlock`. The workflow records which process holds the lock (onstart, in
workflow/rules/common.smk) and, while planning the next run, removes the lock only when that process is gone: same
host, pid no longer a Snakemake process. A lock of a live run, of another host, or without a record is left alone.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

OWNER_FILE = "iobs-lock-owner.json"


def _meta(workdir: str | Path) -> Path:
    return Path(workdir) / ".snakemake"


def record_lock_owner(workdir: str | Path = ".", pid: int | None = None) -> Path:
    """Write {host, pid} of the Snakemake process that holds the lock (call it from onstart)."""
    path = _meta(workdir) / OWNER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": pid or os.getpid()}) + "\n")
    return path


def is_snakemake_alive(pid: int) -> bool:
    """True if `pid` runs here and (where /proc says) is a Snakemake process; a reused pid of another program is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, and not ours to judge
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True  # no /proc (e.g. macOS): alive is all we know
    try:
        return b"snakemake" in cmdline.read_bytes()
    except OSError:
        return True
    

def remove_stale_lock(workdir: str | Path = ".") -> str | None:
    """Remove the locks of a Snakemake run that was killed; return a one-line note of what was removed, else None."""
    meta = _meta(workdir)
    locks = sorted((meta / "locks").glob("*.lock")) if (meta / "locks").is_dir() else []
    owner_path = meta / OWNER_FILE
    if not locks or not owner_path.is_file():
        return None
    try:
        owner = json.loads(owner_path.read_text())
        host, pid = owner["host"], int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or pid == os.getpid() or is_snakemake_alive(pid):
        return None
    for lock in locks:
        lock.unlink(missing_ok=True)
    owner_path.unlink(missing_ok=True)
    return (f"iobs: removed the stale lock of Snakemake pid {pid} (no longer running, e.g. killed); "
            "its interrupted jobs rerun with --rerun-incomplete")
