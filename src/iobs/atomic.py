"""Atomic writers: every artifact iobs writes, file or folder, goes to a temporary sibling first and is renamed
into place on success, so an interrupted job never leaves a complete-looking artifact behind. The one home of this
rule (files: atomic_path; folders: atomic_directory); both follow the umask.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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


# Temporary siblings are named ".NAME.<8 chars>.SUFFIX"; stale_temporaries() recognises exactly these (and the
# names tempfile.mkstemp/mkdtemp gave them before, which have the same shape).
_TEMP_TOKEN = "[a-z0-9_]{8}"
TEMP_SUFFIXES = (".tmp", ".old", ".rounds.tmp")


def temporary_sibling(path: str | Path, suffix: str = ".tmp", directory: bool = False) -> Path:
    """Create (exclusively) an empty file or folder ".NAME.<random>SUFFIX" beside `path`, and return it.

    Unlike tempfile.mkstemp/mkdtemp (always 0600/0700) the mode follows the umask, as open() and save_pretrained's
    own files do: the renamed artifact gets the permissions any other file the user writes would get.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            if directory:
                os.mkdir(candidate, 0o777)  # the kernel applies the umask
            else:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored, which is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give `path` (and, for a folder, everything inside) the mode a plain open()/mkdir() would have given it.

    Some writers create their files 0600 whatever the umask (safetensors' save_file does, and so did the
    tempfile-based writers iobs had); the artifact a user gets should not depend on which library wrote it.
    """
    mask = current_umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def stale_temporaries(path: str | Path) -> list[Path]:
    """The temporary siblings of `path` that temporary_sibling made (e.g. left by a killed run)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_TEMP_TOKEN}({'|'.join(map(re.escape, TEMP_SUFFIXES))})")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place, on any failure delete it.

    Every file iobs writes goes through here, so an interrupted write never leaves a complete-looking artifact.
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        follow_umask(tmp)  # the writer may have replaced the file we made
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``path`` (an earlier folder is swapped out
    and deleted only after the new one is in place), on any failure it is deleted.

    Every folder artifact goes through here (see atomic_path for files).
    """
    path = Path(path)
    staging = temporary_sibling(path, directory=True)
    try:
        yield staging
        follow_umask(staging)
        if path.exists():  # a folder cannot be os.replace'd over a non-empty one: move the old one aside first
            trash = temporary_sibling(path, ".old", directory=True)
            os.replace(path, trash / path.name)
            os.replace(staging, path)
            remove_path(trash)
        else:
            os.replace(staging, path)
    except BaseException:
        remove_path(staging)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")
