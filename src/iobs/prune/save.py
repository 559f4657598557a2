"""Saving pruned models (save_pretrained, safetensors) and their masks (bit-packed), atomically.

A model directory is written under a temporary name and renamed into place, so an interrupted save never
leaves a complete-looking directory. Masks are packed 8 per byte: a 7B model's masks take ~0.8 GB, not 6.5 GB.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from iobs.errors import DataError
from iobs.atomic import atomic_directory, atomic_path

MASKS_FORMAT = "iobs-masks-packbits-v1"
MASKS_FILENAME = "masks.pt"
_BIT_VALUES = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """bool tensor (any shape) -> uint8 [ceil(numel / 8)], most significant bit first (numpy.packbits order)."""
    bits = mask.detach().reshape(-1).to("cpu", torch.uint8)
    bits = torch.cat([bits, bits.new_zeros(-bits.numel() % 8)]).reshape(-1, 8)
    return (bits * _BIT_VALUES).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of pack_mask: uint8 [ceil(numel / 8)] -> bool tensor of `shape`."""
    numel = 1
    for size in shape:
        numel *= size
    bits = (packed.reshape(-1, 1) & _BIT_VALUES).ne(0).reshape(-1)
    if bits.numel() < numel:
        raise DataError(f"packed mask has {bits.numel()} bits but shape {tuple(shape)} needs {numel}: "
                        "the mask file is corrupt, re-run the pruning job")
    return bits[:numel].reshape(shape)


def save_masks(masks: dict[str, torch.Tensor], path: str | Path,
               support: dict[str, torch.Tensor] | None = None) -> None:
    """Write {module name: bool mask (True = kept)} to `path` (torch.save, via tmp + rename).

    support (optional, same names and shapes): where the saved weights are nonzero. It differs from the mask where
    a kept weight is exactly zero, e.g. in the columns of inputs that are never active (dead ReLU units), whose
    kept/pruned state is an arbitrary tie-break of the solver.
    """
    payload = {"format": MASKS_FORMAT, "masks": _packed(masks)}
    if support is not None:
        payload["support"] = _packed(support)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _packed(masks: dict[str, torch.Tensor]) -> dict:
    return {name: {"shape": list(m.shape), "bits": pack_mask(m)} for name, m in masks.items()}


def _unpacked(entries: dict) -> dict[str, torch.Tensor]:
    return {name: unpack_mask(entry["bits"], tuple(entry["shape"])) for name, entry in entries.items()}


def _read_masks_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file {path} does not exist: run the pruning job that writes it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise DataError(f"cannot read mask file {path} ({type(exc).__name__}): delete it and re-run pruning") \
            from None
    if not isinstance(payload, dict) or payload.get("format") != MASKS_FORMAT:
        raise DataError(f"{path} is not an iobs mask file (expected format {MASKS_FORMAT}): re-run pruning")
    return payload


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a file written by save_masks: {module name: bool mask}."""
    return _unpacked(_read_masks_file(path)["masks"])


def load_masks_and_support(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Both halves of a file written by save_masks, in one read: the masks, and the support (None if not saved)."""
    payload = _read_masks_file(path)
    support = payload.get("support")
    return _unpacked(payload["masks"]), None if support is None else _unpacked(support)


def load_support(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The nonzero pattern saved beside the masks ({module name: bool}), or None if the file has none."""
    return load_masks_and_support(path)[1]


def save_pruned_model(model: nn.Module, directory: str | Path, *, masks: dict[str, torch.Tensor] | None = None,
                      tokenizer=None) -> Path:
    """save_pretrained (safetensors) into `directory`, plus masks.pt when masks are given; replaces atomically.

    Reload with AutoModelForCausalLM.from_pretrained(directory): zeros and logits are preserved exactly.
    """
    directory = Path(directory)
    with atomic_directory(directory) as staging:
        model.save_pretrained(staging)  # transformers 5 always writes safetensors
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if masks is not None:
            save_masks(masks, staging / MASKS_FILENAME)
    return directory
