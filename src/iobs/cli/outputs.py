"""Where the commands write: checked before any compute, and --out held by one `iobs prune` at a time.

An unwritable --out or --json must fail in the first second, not after hours of pruning with an OSError naming a
temporary path. Two runs into the same --out would replace each other's result; the second one is refused. A run
killed with -9 leaves its temporary siblings of --out behind (e.g. the per-round staging folder); the next run that
holds the lock removes them, since no other run can be writing them.
"""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from iobs.errors import IobsError
from iobs.atomic import remove_path, stale_temporaries, temporary_sibling


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: Path, option: str, folder: bool) -> None:
    """IobsError (one line naming `option` and the path) unless `path` (a folder if `folder`, else a file) can be
    written: the atomic writers create a temporary sibling, so its nearest existing ancestor must take a new file."""
    if path.name in ("", ".", ".."):  # the result replaces the folder as a whole: it needs a name of its own
        raise IobsError(f"{option} {path}: name the {'folder' if folder else 'file'} to write, e.g. {option} "
                        f"{'pruned-model' if folder else 'result.json'}")
    if path.exists() and path.is_dir() != folder:
        kind = "a file" if folder else "a folder"
        raise IobsError(f"{option} {path} is {kind}: give a {'folder' if folder else 'file'} path")
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise IobsError(f"{option} {path}: {ancestor} is a file, not a folder: choose another path")
    try:
        temporary_sibling(ancestor / "iobs-write-check").unlink()
    except OSError as err:
        raise IobsError(f"{option} {path}: cannot write in {ancestor} ({err.strerror or type(err).__name__}): "
                        "choose a writable location") from None


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; returns the folders it created, outermost first (to remove them again on failure)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return missing[::-1]


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return f" ({text})" if text else ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextmanager
def _flock(path: Path, out: Path) -> Iterator[None]:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise IobsError(f"--out {out} is being written by another iobs prune{holder}: wait for it to finish, "
                            f"or choose another --out (lock: {path})") from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the previous holder removed this file as we opened it: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked, so no one else can lock the removed file and go on
        os.close(fd)


@contextmanager
def exclusive_output(out: Path) -> Iterator[None]:
    """Hold the lock file .OUT.lock beside `out` for the block (IobsError if another run holds it), after removing
    stale temporary siblings of `out`. Folders made for the lock are removed again if the block fails early."""
    created = _make_parents(out.parent)
    try:
        with _flock(lock_path(out), out):
            for stale in stale_temporaries(out):
                remove_path(stale)
            yield
    except BaseException:
        for folder in reversed(created):  # innermost first; stops at the first one that holds something
            try:
                folder.rmdir()
            except OSError:
                break
        raise
