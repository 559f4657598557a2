"""An atomic tensor writer and a checked tensor reader (the atomic rule itself lives in iobs.atomic)."""

from __future__ import annotations

from pathlib import Path

import torch

from iobs.atomic import atomic_path
from iobs.errors import DataError


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
