"""What both commands need: the compute device, the thread budget, and a model with its own tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from iobs.data.tokenizer import limit_tokenizer_threads
from iobs.errors import DataError, IobsError
from iobs.models.gguf import is_gguf_source
from iobs.models.load import load_model, load_tokenizer


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when torch sees a GPU, else cpu; 'cpu', 'cuda', 'cuda:1' as given (CUDA must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise IobsError(f"--device {name!r} is not a device: use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IobsError(f"--device {name}: torch sees no CUDA GPU on this machine: use --device cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        raise IobsError(f"--device {name}: only cpu and cuda are supported: use auto, cpu or cuda")
    return device


def set_threads(threads: int | None) -> None:
    """Cap torch's and the tokenizers' CPU threads (None: their defaults, every core)."""
    if threads is None:
        return
    if threads < 1:
        raise IobsError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    limit_tokenizer_threads(threads)


def model_location(name: str) -> str:
    """A local model (folder or .gguf file) as an absolute path (for provenance), a hub id as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() or (is_gguf_source(name) and path.is_file()) else name


def check_not_a_mistyped_path(name: str) -> None:
    """'results/model' reads as a hub id (owner/name) to iobs.models.load; if 'results' is a folder here, the user
    meant a path, so say that it is missing instead of failing on the hub."""
    head, sep, _ = name.partition("/")
    if is_gguf_source(name):  # a GGUF file or package:DIST/FILE.gguf: iobs.models.gguf says what is missing
        return
    if sep and head and not Path(name).expanduser().exists() and Path(head).expanduser().is_dir():
        raise DataError(f"MODEL {name}: no such folder (though {head}/ exists here): fix the path, or run from "
                        "another directory to mean the hub id")


def load_model_and_tokenizer(model_name: str, tokenizer_name: str | None, dtype: str, device: str | torch.device):
    """The causal LM (eval mode, on `device`) and its tokenizer (MODEL's own unless --tokenizer is given)."""
    check_not_a_mistyped_path(model_name)
    model = load_model(model_name, dtype, device, key="MODEL")
    source = tokenizer_name or model_name
    tokenizer = load_tokenizer(source, key="--tokenizer" if tokenizer_name else "MODEL (or pass --tokenizer)")
    return model, tokenizer
