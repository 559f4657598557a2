"""Loading and validating the experiment configuration against workflow/schemas/config.schema.yaml.

Validation stops at the first problem with one line naming the key path and what is allowed; it also fills
the defaults that the schema declares, so a user's config may omit any key that has one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from iobs.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path | None = None) -> dict:
    schema_path = Path(path) if path else SCHEMA_PATH
    if not schema_path.is_file():
        raise ConfigError(f"config schema not found at {schema_path}: run from a full checkout of the iobs repository")
    with open(schema_path) as fh:
        return yaml.safe_load(fh)


def load_config(path: str | Path) -> dict:
    """Read a YAML config file; raise ConfigError with one line if it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass an existing YAML file")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: fix its syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys at top level")
    return data


def _key_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        prefix = f"{where}." if error.absolute_path else ""
        hint = f"allowed keys: {', '.join(allowed)}" if allowed else "no keys are allowed here"
        return f"unknown key '{prefix}{extra[0]}' ({hint})"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "enum":
        choices = ", ".join(repr(c) for c in error.validator_value)
        return f"{where}: {error.instance!r} is not allowed (choose one of {choices})"
    if error.validator == "type":
        return f"{where}: {error.instance!r} has the wrong type (expected {error.validator_value})"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[error.validator]
        return f"{where}: {error.instance!r} is out of range (must be {bound} {error.validator_value})"
    description = schema.get("description")
    hint = f" ({description})" if description else ""
    return f"{where}: {error.message}{hint}"


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if ref and ref.startswith("#/"):
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        return _resolve(target, root)
    return schema


def _fill_defaults(instance: Any, schema: dict, root: dict | None = None) -> None:
    """Insert schema defaults for absent keys: recurses into properties, additionalProperties maps, $ref and
    if/then/else (the branch is picked by validating ``if`` against the instance)."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if not isinstance(instance, dict) or not isinstance(schema, dict):
        return
    if "if" in schema:
        cond = jsonschema.Draft202012Validator(schema["if"]).is_valid(instance)
        branch = schema.get("then" if cond else "else")
        if branch is not None:
            _fill_defaults(instance, branch, root)
    for key, raw in schema.get("properties", {}).items():
        sub = _resolve(raw, root)
        default_from = raw if isinstance(raw, dict) and "default" in raw else sub
        if key not in instance and isinstance(default_from, dict) and "default" in default_from:
            instance[key] = copy.deepcopy(default_from["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate ``config`` in place (filling defaults) and return it; raise ConfigError with one line."""
    schema = schema if schema is not None else load_schema()
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_describe(best))
    _check_consistency(config)
    return config


def _check_consistency(config: dict) -> None:
    """Cross-key rules that JSON schema cannot state."""
    for name, model in config.get("models", {}).items():
        here, existing = "family" in model, bool(model.get("hub") or model.get("path"))
        if here == existing:
            raise ConfigError(f"models.{name}: give either family (pretrain a tiny model here) or hub/path "
                              "(an existing model), not both or neither")
        if existing and ("dims" in model or "pretrain" in model):
            raise ConfigError(f"models.{name}: dims and pretrain only apply to models pretrained here (family)")
    if config.get("models"):
        if not config.get("calibration", {}).get("source"):
            raise ConfigError("calibration.source is required when models are configured (e.g. {kind: c4, split: "
                              "train} for hub models, {kind: stdlib, split: train} for models pretrained here)")
        if not config.get("eval", {}).get("sets"):
            raise ConfigError("eval.sets is required when models are configured (e.g. wikitext2: {test: {kind: "
                              "wikitext2, split: test}})")
    for key in ("pruning", "iterative"):
        for text in config.get(key, {}).get("sparsities", []):
            if ":" in text:
                n, m = (int(x) for x in text.split(":"))
                if not 0 < n < m:
                    raise ConfigError(f"{key}.sparsities: '{text}' must be N:M with 0 < N < M")
            elif not 0 < float(text) < 1:
                raise ConfigError(f"{key}.sparsities: '{text}' must be a fraction strictly between 0 and 1")
    for name, exp in config.get("synthetic", {}).get("experiments", {}).items():
        if exp.get("prior") == "gaussian":
            if exp["k"] < exp["k_true"]:
                raise ConfigError(f"synthetic.experiments.{name}.k ({exp['k']}) must be >= k_true ({exp['k_true']})")
            if exp["k"] > exp["d"]:
                raise ConfigError(f"synthetic.experiments.{name}.k ({exp['k']}) must be <= d ({exp['d']})")
