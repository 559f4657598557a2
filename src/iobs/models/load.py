"""Loading causal LMs and tokenizers from a local directory (save_pretrained) or a Hugging Face hub id.

Anything that looks like a path (see looks_local) is treated as local and must exist. Anything else is a hub id;
with HF_HUB_OFFLINE set only the local HF cache is tried. Every failure to find or fetch becomes one DataError line
naming the model and the config key to set (`key`, if given).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError

from iobs.data.sources import hub_offline
from iobs.errors import DataError
from iobs.models.gguf import is_gguf_source, load_gguf_model, load_gguf_tokenizer

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def quiet_progress_bars() -> None:
    """Turn off transformers' tqdm bars (loading / writing weights): noise in job logs. Process-wide."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise DataError(f"dtype '{dtype}' is not supported: choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def looks_local(name_or_path: str | Path) -> bool:
    """A Path, an absolute path, one starting with . or ~, an existing directory, or more than one '/' (hub ids are
    'name' or 'owner/name')."""
    text = str(name_or_path)
    return (isinstance(name_or_path, Path) or os.path.isabs(text) or text.startswith((".", "~"))
            or text.count("/") > 1 or "\\" in text or Path(text).is_dir())


def _source(name_or_path: str | Path, key: str | None, what: str) -> tuple[str, bool]:
    """The string to pass to from_pretrained and whether it is local; DataError if a local path is missing."""
    hint = f"set {key}" if key else "pass"
    if looks_local(name_or_path):
        path = Path(os.path.expanduser(str(name_or_path)))
        if not path.is_dir():
            raise DataError(f"{what} directory {path} does not exist: {hint} to a folder written by save_pretrained")
        return str(path), True
    return str(name_or_path), False


def _fetch_error(name: str, key: str | None, what: str, err: Exception) -> DataError:
    hint = f"set {key}" if key else "pass"
    reason = "offline mode is on and it is not in the HF cache" if hub_offline() else type(err).__name__
    return DataError(f"cannot load {what} '{name}' from the Hugging Face hub ({reason}): "
                     f"{hint} to a local directory saved with save_pretrained")


def _hub_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [OSError, ValueError]
    try:
        from huggingface_hub.errors import HfHubHTTPError

        errors.append(HfHubHTTPError)
    except ImportError:
        pass
    return tuple(errors)


def _damaged_safetensors(folder: Path) -> Path | None:
    """The first *.safetensors file in `folder` whose header safetensors cannot read."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError):
            return path
    return None


def _corrupt_weights(source: str, local: bool, err: Exception) -> DataError:
    """One line for weights that safetensors cannot read: an interrupted download or copy, a full disk."""
    folder = Path(source) if local else _hub_snapshot(source)
    damaged = _damaged_safetensors(folder) if folder is not None else None
    what = str(damaged) if damaged else f"a weights file of model {source}"
    fix = "re-save or re-copy the model" if local else "delete it from the Hugging Face cache and re-download"
    reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
    return DataError(f"{what} is truncated or corrupt ({reason}): {fix}")


def _hub_snapshot(repo_id: str) -> Path | None:
    """The HF cache folder of a hub model's files, if its config is cached."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub library rejects: nothing to point at
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def load_model(name_or_path: str | Path, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu",
               key: str | None = None):
    """AutoModelForCausalLM in eval mode on `device`; `key` = the config key that named it (for messages).
    A source ending in .gguf is a GGUF file (iobs.models.gguf), dequantised into a plain model."""
    if is_gguf_source(name_or_path):
        return load_gguf_model(name_or_path, dtype, device, key)
    from transformers import AutoModelForCausalLM

    source, local = _source(name_or_path, key, "model")
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=parse_dtype(dtype),
                                                     local_files_only=local or hub_offline())
    except SafetensorError as err:
        raise _corrupt_weights(source, local, err) from None
    except _hub_errors() as err:
        if local:  # a directory that is not a model: say so, not "hub"
            raise DataError(f"{source} is not a loadable model directory ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:160]}): rerun the step that writes it") from None
        raise _fetch_error(source, key, "model", err) from None
    return model.to(device).eval()


def load_tokenizer(name_or_path: str | Path, key: str | None = None):
    """transformers.AutoTokenizer from a local directory or a hub id (same rules and errors as load_model), or the
    tokenizer stored in a GGUF file."""
    if is_gguf_source(name_or_path):
        return load_gguf_tokenizer(name_or_path, key)
    from transformers import AutoTokenizer

    source, local = _source(name_or_path, key, "tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local or hub_offline())
    except _hub_errors() as err:
        if local:
            raise DataError(f"{source} is not a loadable tokenizer directory ({type(err).__name__}): "
                            "rerun the step that writes it") from None
        raise _fetch_error(source, key, "tokenizer", err) from None
    if len(tokenizer) <= 1:  # transformers 5 falls back to an empty tokenizer for a folder without tokenizer files
        where = f" (named by {key})" if key else ""
        raise DataError(f"{source}{where} holds no tokenizer files: save the tokenizer there "
                        "(tokenizer.save_pretrained) or point at a directory or hub id that has one")
    return tokenizer
