"""Atomic writers for tensors and directories, and a checked tensor reader.

Same rule as iobs.provenance: write to a temporary sibling and rename, so an interrupted job never leaves a
complete-looking artifact behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from iobs.errors import DataError
from iobs.provenance import atomic_path


def atomic_save_tensor(path: str | Path, tensor: torch.Tensor) -> None:
    """torch.save via a temporary file in the same directory, then rename."""
    with atomic_path(path) as tmp:
        torch.save(tensor.contiguous().clone(), tmp)


def load_tensor(path: str | Path, what: str = "tensor") -> torch.Tensor:
    """Read a tensor written by atomic_save_tensor; DataError (one line) if missing or not a tensor file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist: run the step that makes it first")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of many kinds all mean "not a tensor file"
        raise DataError(f"{what} file {path} is not a readable torch tensor file ({type(err).__name__}): "
                        "delete it and rerun the step that makes it") from None
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{what} file {path} holds a {type(value).__name__}, not a tensor: "
                        "rerun the step that makes it")
    return value


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
