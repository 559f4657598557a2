"""Token positions of existing (hub / local) models: calibration and eval windows must fit in them.

The tiny models' positions are in the config and checked by iobs.config. For a hub id or a local path the limit is
in the model's config.json: read while planning when it is already on disk (a local directory or the HF cache),
else at the start of the calibration job, before any pruning starts. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from iobs.config import sequence_lengths
from iobs.errors import ConfigError, DataError
from iobs.models.gguf import gguf_max_positions, is_gguf_source, source_string

POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def _config_file(source: str) -> Path | None:
    """config.json of a local model directory, or of a hub id in the HF cache; None when neither is on disk."""
    local = Path(os.path.expanduser(source))
    if local.is_dir():
        return local / "config.json" if (local / "config.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(source, "config.json")
    except Exception:  # an id that is not a valid repo name: the loader's own error explains it later
        return None
    return Path(found) if isinstance(found, str) else None


def read_max_positions(source: str) -> tuple[int, str] | None:
    """(positions, the config.json field holding them) of a local or cached model; None when unknown. For a GGUF
    source: the file's context_length, when the file and the gguf package are here."""
    if is_gguf_source(source):
        return gguf_max_positions(source)
    path = _config_file(str(source))
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return _positions_of(data)


def fetch_max_positions(source: str) -> tuple[int, str] | None:
    """Like read_max_positions, but may fetch config.json from the hub (transformers' AutoConfig, in a job)."""
    found = read_max_positions(source)
    if found is not None:
        return found
    try:
        from transformers import AutoConfig

        from iobs.data.sources import hub_offline

        data = AutoConfig.from_pretrained(source, local_files_only=hub_offline()).to_dict()
    except Exception:  # unreachable or not a model: loading it later fails with the loader's one-line error
        return None
    return _positions_of(data)


def _positions_of(config: dict) -> tuple[int, str] | None:
    """(max positions, the key that said so) of a model config dict (multimodal: its text_config), else None."""
    for section in (config, config.get("text_config") or {}):
        for key in POSITION_KEYS:
            if isinstance(section.get(key), int):
                return section[key], key
    return None


def check_positions(model: str, model_key: str, limit: tuple[int, str] | None, lengths: dict[str, int]) -> None:
    """ConfigError (one line) if a length exceeds the model's positions; nothing when the limit is unknown."""
    if limit is None:
        return
    positions, field = limit
    for key, length in lengths.items():
        if length > positions:
            raise ConfigError(f"{key} ({length}) is longer than model {model}'s {field} ({positions}, from "
                              f"{model_key}): set {key} to at most {positions}")


def check_planned_positions(config: dict) -> None:
    """While planning: a models.<name>.path must be a directory, and every hub/path model whose config.json is on
    disk must have positions for calibration.length and eval.seqlen."""
    lengths = {key: length for key, (_, length) in sequence_lengths(config).items()}
    for name, spec in config.get("models", {}).items():
        source = spec.get("path") or spec.get("hub")
        if "family" in spec or not (source or spec.get("gguf")):
            continue
        if spec.get("gguf"):  # the file may not be installed yet while planning: then the calibration job checks
            key = f"models.{name}.gguf"
            try:
                source = source_string(spec["gguf"], key)
            except DataError as err:
                raise ConfigError(str(err)) from None
            check_positions(name, key, read_max_positions(source), lengths)
            continue
        key = f"models.{name}.path" if spec.get("path") else f"models.{name}.hub"
        if spec.get("path") and not Path(os.path.expanduser(spec["path"])).is_dir():
            hub = f" (or remove it to load models.{name}.hub)" if spec.get("hub") else ""
            raise ConfigError(f"{key}: {spec['path']} is not a directory (relative paths start at the working "
                              f"directory {Path.cwd()}): set {key} to a folder written by save_pretrained{hub}")
        check_positions(name, key, read_max_positions(source), lengths)
