"""The environment lock (`requirements-lock.txt`): which one this process runs under, and how far it drifted.

`make setup` installs exactly the lock's versions (torch excepted: its build is the machine's choice, see the
Makefile). Every provenance JSON records the lock's sha256 and the packages whose installed version differs from
it, so a result made outside the locked environment says so.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from functools import lru_cache
from pathlib import Path

LOCK_NAME = "requirements-lock.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)")


def find_lock() -> Path | None:
    """The lock of the checkout iobs is imported from (editable install), else of the working directory."""
    override = os.environ.get("IOBS_LOCK_FILE")
    candidates = [Path(override)] if override else []
    candidates += [Path(__file__).resolve().parents[2] / LOCK_NAME, Path.cwd() / LOCK_NAME]
    return next((path for path in candidates if path.is_file()), None)


def parse_pins(text: str) -> dict[str, str]:
    """{normalised name: version} of every `name==version` line (comments, options and markers ignored)."""
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def drift(pins: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """{name: {"locked": v, "installed": v or None}} for each pinned package whose installed version differs."""
    out = {}
    for name, locked in sorted(pins.items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != locked:
            out[name] = {"locked": locked, "installed": installed}
    return out


@lru_cache(maxsize=1)
def lock_record() -> dict:
    """{"file", "sha256", "packages", "drift"}; {"file": None} where no lock is found (a plain pip install)."""
    path = find_lock()
    if path is None:
        return {"file": None}
    data = path.read_bytes()
    pins = parse_pins(data.decode("utf-8", errors="replace"))
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "packages": len(pins),
            "drift": drift(pins)}


def main(argv: list[str] | None = None) -> int:
    """`python -m iobs.lock [--check]`: list the packages whose installed version differs from the lock."""
    import sys

    check = "--check" in (sys.argv[1:] if argv is None else argv)
    record = lock_record()
    if record["file"] is None:
        print("iobs.lock: no requirements-lock.txt found (set IOBS_LOCK_FILE)", file=sys.stderr)
        return 2 if check else 0
    if not record["drift"]:
        print(f"iobs.lock: all {record['packages']} packages match {record['file']} (sha256 {record['sha256'][:12]})")
        return 0
    print(f"iobs.lock: {len(record['drift'])} of {record['packages']} packages differ from {record['file']}:")
    for name, versions in record["drift"].items():
        print(f"  {name}: locked {versions['locked']}, installed {versions['installed'] or 'nothing'}")
    if check:
        print("iobs.lock: run `make setup` again (or pip install -r requirements-lock.txt) to install the lock",
              file=sys.stderr)
    return 1 if check else 0


if __name__ == "__main__":
    raise SystemExit(main())
