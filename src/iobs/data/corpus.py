"""A text corpus every machine has: the Python standard library source of the running interpreter.

Choices (each a parameter of build_corpus, defaults in the constants below):
- Which files: every *.py under the stdlib directory except installed packages (site-packages is never walked) and
  DEFAULT_EXCLUDE: the test suites (Debian and others ship them in a separate package, so including them would make
  the corpus depend on the distribution; they are also 17 MB of repetitive asserts), pydoc_data (757 kB of English
  prose generated from the docs: in valid or test it would dominate the split) and encodings (1.4 MB of generated
  charmap tables). Empty files and files that are not UTF-8 are skipped and counted in the manifest.
- Split: by file, from the sha256 of the file's path relative to the stdlib directory, so a file never straddles
  splits and adding or removing one file moves no other. Default 90/5/5.
- Balance: a file larger than max_eval_file_bytes (default 100 kB, e.g. _pydecimal.py, tkinter/__init__.py) always
  goes to train, so that valid and test (0.25 and 0.66 MB with CPython 3.11.7) are made of ordinary files and no
  single one skews them.
- Text of a split: its files in path order, each ending in a newline, separated by one blank line.

Different Python patch versions give different corpora; the manifest's files_sha256 (over split, path and content
hash of every file) says whether two corpora are identical.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from iobs.errors import DataError

SPLITS = ("train", "valid", "test")
DEFAULT_FRACTIONS = {"train": 0.90, "valid": 0.05, "test": 0.05}
DEFAULT_EXCLUDE = ("test/*", "*/test/*", "*/tests/*", "*/idle_test/*",
                   "pydoc_data/*", "encodings/*")
DEFAULT_MAX_EVAL_FILE_BYTES = 100_000
_NEVER_WALK = {"site-packages", "dist-packages", "__pycache__"}


@dataclass
class Corpus:
    """The three split texts and a JSON-able manifest describing how they were made."""

    texts: dict[str, str]
    manifest: dict


def stdlib_dir() -> Path:
    """The standard library directory of the running interpreter (not the virtualenv's site-packages)."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str, fractions: dict[str, float] = DEFAULT_FRACTIONS) -> str:
    """Deterministic split of one file: the first 64 bits of sha256(path) as a number in [0, 1)."""
    position = int(hashlib.sha256(relative_path.encode()).hexdigest()[:16], 16) / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += fractions[name]
        if position < edge:
            return name
    return SPLITS[-1]


def _check_fractions(fractions: dict[str, float]) -> dict[str, float]:
    if set(fractions) != set(SPLITS) or any(v < 0 for v in fractions.values()):
        raise DataError(f"corpus split fractions must give train, valid and test as non-negative numbers, "
                        f"got {fractions}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise DataError(f"corpus split fractions must sum to 1, got {total:.4f}: fix the train/valid/test fractions")
    return dict(fractions)


def source_files(root: Path, exclude: tuple[str, ...] | list[str]) -> tuple[list[str], int]:
    """Sorted relative posix paths of the *.py files under root not matched by an exclude glob, and how many were
    excluded. Globs are fnmatch patterns on the relative path ('*' also matches '/'). Installed packages
    (site-packages, dist-packages) and __pycache__ are never walked: they are not the standard library."""
    kept, excluded = [], 0
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in _NEVER_WALK]
        for name in names:
            if not name.endswith(".py") or not os.path.isfile(os.path.join(folder, name)):
                continue
            relative = (Path(folder) / name).relative_to(root).as_posix()
            if any(fnmatch.fnmatchcase(relative, pattern) for pattern in exclude):
                excluded += 1
            else:
                kept.append(relative)
    return sorted(kept), excluded


def build_corpus(root: str | Path | None = None, fractions: dict[str, float] = DEFAULT_FRACTIONS,
                 exclude: tuple[str, ...] | list[str] = DEFAULT_EXCLUDE,
                 max_eval_file_bytes: int | None = DEFAULT_MAX_EVAL_FILE_BYTES) -> Corpus:
    """Read, filter and split the stdlib sources (see the module docstring); nothing is written."""
    root = Path(root) if root else stdlib_dir()
    fractions = _check_fractions(fractions)
    if not root.is_dir():
        raise DataError(f"standard library directory {root} does not exist: "
                        "set the corpus stdlib_dir to a folder of .py files")
    relatives, excluded = source_files(root, tuple(exclude))
    parts: dict[str, list[str]] = {name: [] for name in SPLITS}
    file_lines, empty, undecodable, oversize = [], 0, [], []
    for relative in relatives:
        raw = (root / relative).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            undecodable.append(relative)
            continue
        if not text.strip():
            empty += 1
            continue
        split = split_of(relative, fractions)
        if max_eval_file_bytes is not None and len(raw) > max_eval_file_bytes and split != "train":
            oversize.append(relative)
            split = "train"
        parts[split].append(text if text.endswith("\n") else text + "\n")
        file_lines.append(f"{split}\t{relative}\t{hashlib.sha256(raw).hexdigest()}\n")
    if not file_lines:
        raise DataError(f"no usable .py files under {root} after exclusions: check the corpus stdlib_dir and exclude")
    texts = {name: "\n".join(parts[name]) for name in SPLITS}
    for name in SPLITS:
        if not texts[name]:
            raise DataError(f"corpus split '{name}' is empty ({len(file_lines)} files in all): raise its fraction")
    manifest = {
        "source": "python-stdlib",
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "stdlib_dir": str(root),
        "exclude": list(exclude),
        "fractions": fractions,
        "max_eval_file_bytes": max_eval_file_bytes,
        "files_sha256": hashlib.sha256("".join(file_lines).encode()).hexdigest(),
        "files_total": len(file_lines),
        "skipped": {"excluded": excluded, "empty": empty, "undecodable": undecodable,
                    "moved_to_train_as_oversize": oversize},
        "splits": {name: {"files": len(parts[name]), "bytes": len(texts[name].encode()), "chars": len(texts[name]),
                          "sha256": hashlib.sha256(texts[name].encode()).hexdigest()} for name in SPLITS},
    }
    return Corpus(texts=texts, manifest=manifest)
