"""The window policy (iobs.data.bos) of a model given by name: its config.model_type read from a loaded model, a
folder, a hub id or a GGUF file. It lives with the models so that iobs.data needs nothing of iobs.models."""

from __future__ import annotations

from iobs.data.bos import BosPolicy, check_setting, resolve_bos
from iobs.errors import DataError
from iobs.models.gguf import gguf_model_type, is_gguf_source


def model_type_of(source, key: str = "bos") -> str | None:
    """config.model_type of a loaded model, a config, or a model folder / hub id (reads config.json only)."""
    config = getattr(source, "config", source)
    if hasattr(config, "model_type"):
        return config.model_type
    if is_gguf_source(source):
        return gguf_model_type(source)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(source)).model_type
    except (OSError, ValueError) as err:  # offline without a cached copy, no config.json, an unknown model type
        raise DataError(f"{key} auto needs the model type of {source}, whose config cannot be read "
                        f"({type(err).__name__}): give a local path, or set {key} always or never") from None


def job_bos_policy(setting: str, model_type_source, load_tokenizer, key: str = "bos") -> BosPolicy:
    """resolve_bos for a DAG job: "never" needs neither the tokenizer nor the model's config, so neither is loaded.

    model_type_source: a model, its config, a folder or hub id (see model_type_of), or None (a tokenizer made
    here, shared by the tiny models: no reference family); load_tokenizer() -> the tokenizer.
    """
    check_setting(setting, key)
    if setting == "never":
        return resolve_bos(setting, None, None, key)
    model_type = model_type_of(model_type_source, key) if model_type_source is not None else None
    return resolve_bos(setting, model_type, load_tokenizer(), key)
