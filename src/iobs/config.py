"""Loading and validating the experiment configuration against the schema shipped in the package
(src/iobs/schemas/config.schema.yaml), whose solver, variant and sparsity entries come from iobs.registry.

Validation stops at the first problem with one line naming the key path and what is allowed; it also fills
the defaults that the schema declares, so a user's config may omit any key that has one.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from iobs import registry
from iobs.errors import ConfigError
from iobs.targets import SparsitySpec, SparsitySpecError

# Package data, so that a non-editable install validates configs too.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path | None = None) -> dict:
    """The config schema with every ``x-registry: KIND`` node filled from iobs.registry (enums of solvers and
    variants, solver option blocks, the sparsity pattern)."""
    schema_path = Path(path) if path else SCHEMA_PATH
    if not schema_path.is_file():
        raise ConfigError(f"config schema not found at {schema_path}: reinstall iobs (`make setup`)")
    with open(schema_path) as fh:
        return _fill_registry(yaml.safe_load(fh))


def _fill_registry(node):
    if isinstance(node, dict):
        filled = {key: _fill_registry(value) for key, value in node.items() if key != "x-registry"}
        if "x-registry" in node:
            filled = {**copy.deepcopy(registry.schema_fragment(node["x-registry"])), **filled}
        return filled
    if isinstance(node, list):
        return [_fill_registry(item) for item in node]
    return node


def _record_positions(node, path: tuple, positions: dict, filename: str) -> None:
    """Key path -> 1-based line of every mapping key and sequence item below `node`; ConfigError on a key that
    appears twice in one mapping (YAML loaders keep the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                dotted = _key_path(path + (key_node.value,))
                raise ConfigError(f"{filename}: duplicate key '{dotted}' at lines {seen[key_node.value]} and {line}: "
                                  "the second would silently replace the first; merge them into one")
            seen[key_node.value] = line
            sub = path + (key_node.value,)
            positions[sub] = line
            _record_positions(value_node, sub, positions, filename)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            sub = path + (index,)
            positions[sub] = item.start_mark.line + 1
            _record_positions(item, sub, positions, filename)


def _syntax_error(path: Path, err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    why = f"{problem} ({context})" if context else problem
    hint = "indent with spaces, not tabs" if "\\t" in why or "tab" in why else "fix the YAML syntax there"
    return ConfigError(f"config file {path} is not valid YAML{where}: {why}: {hint}")


def read_config_file(path: str | Path) -> tuple[dict, dict[tuple, int]]:
    """Parse a YAML (or JSON) config file strictly: (data, {key path: line}). ConfigError (one line naming file,
    line and column) on a syntax error, a duplicate key at any depth, or a top level that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass an existing YAML file")
    text = path.read_text(encoding="utf-8")
    loader = yaml.SafeLoader(text)
    positions: dict[tuple, int] = {}
    try:
        node = loader.get_single_node()
        _record_positions(node, (), positions, str(path))
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        raise _syntax_error(path, err) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys at top level (e.g. 'synthetic:')")
    return data, positions


def load_config(path: str | Path) -> dict:
    """Read a YAML config file strictly (see read_config_file); raise ConfigError with one line."""
    return read_config_file(path)[0]


def check_config_files(paths) -> dict[tuple, str]:
    """Parse every config file strictly (the ones Snakemake merges); return {key path: "file line N"} of the keys
    they set, the last file winning as in Snakemake's merge, for locating validation errors."""
    where: dict[tuple, str] = {}
    for path in paths:
        _, positions = read_config_file(path)
        where.update({key: f"{path} line {line}" for key, line in positions.items()})
    return where


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
    if error.validator == "minItems":
        items = schema.get("items", {}) if isinstance(schema.get("items"), dict) else {}
        choices = f" (choose from {', '.join(map(str, items['enum']))})" if "enum" in items else ""
        return f"{where}: the list is empty: give at least {error.validator_value} value{choices}, or leave the key " \
               "out for its default"
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


def _non_finite(value: Any, path: tuple = ()) -> tuple | None:
    """The key path of the first NaN or infinite number in `value` (None if every number is finite)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, sub in items:
        found = _non_finite(sub, path + (key,))
        if found is not None:
            return found
    return None


def _locate(path, where: dict | None) -> str:
    """"config.yaml line 12: " for the deepest key of `path` that a config file sets, or ""."""
    if not where:
        return ""
    path = tuple(path)
    while path:
        if path in where:
            return f"{where[path]}: "
        path = path[:-1]
    return ""


def validate_config(config: dict, schema: dict | None = None, where: dict | None = None) -> dict:
    """Validate ``config`` in place (filling defaults) and return it; raise ConfigError with one line.

    where: {key path: "file line N"} (check_config_files) to name the file and line of the offending key."""
    schema = schema if schema is not None else load_schema()
    bad = _non_finite(config)
    if bad is not None:
        value = _get(config, bad)
        raise ConfigError(f"{_locate(bad, where)}{_key_path(bad)}: {value} is not a finite number: give a finite "
                          "value (.nan and .inf are not allowed)")
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        path = list(best.absolute_path)
        if best.validator == "additionalProperties" and isinstance(best.instance, dict):
            allowed = (best.schema or {}).get("properties", {}) if isinstance(best.schema, dict) else {}
            path += sorted(set(best.instance) - set(allowed))[:1]
        raise ConfigError(_locate(path, where) + _describe(best))
    try:
        _check_consistency(config)
        _check_positions(config)
    except _Located as err:
        raise ConfigError(f"{_locate(err.path, where)}{err.message}") from None
    return config


def _get(config: dict, path: tuple) -> Any:
    for part in path:
        config = config[part]
    return config


class _Located(Exception):
    def __init__(self, message: str, path: tuple):
        super().__init__(message)
        self.message, self.path = message, path


# max_positions of the tiny models when dims leave it out (iobs.models.pretrain.DEFAULT_DIMS, kept equal by a test;
# not imported here so that planning does not import torch).
TINY_DEFAULT_MAX_POSITIONS = {"opt": 512, "llama": 512, "phi": 512}


def sequence_lengths(config: dict) -> dict[str, tuple[tuple, int]]:
    """{config key: (key path, length)} of the token lengths a model must have positions for."""
    lengths = {}
    if "length" in config.get("calibration", {}):
        lengths["calibration.length"] = (("calibration", "length"), config["calibration"]["length"])
    if "seqlen" in config.get("eval", {}):
        lengths["eval.seqlen"] = (("eval", "seqlen"), config["eval"]["seqlen"])
    return lengths


def _check_positions(config: dict) -> None:
    """Calibration windows and eval windows must fit in the positions of every model pretrained here."""
    for name, model in config.get("models", {}).items():
        if "family" not in model:
            continue  # hub/path/gguf models: checked from their config.json or GGUF metadata (iobs.models.positions)
        dims = model.get("dims") or {}
        limit = dims.get("max_positions") or TINY_DEFAULT_MAX_POSITIONS.get(model["family"])
        origin = f"models.{name}.dims.max_positions" if dims.get("max_positions") else \
            f"the {model['family']} default of models.{name}.dims.max_positions"
        lengths = dict(sequence_lengths(config))
        seq_len = (model.get("pretrain") or {}).get("seq_len")
        if seq_len is not None:
            lengths[f"models.{name}.pretrain.seq_len"] = (("models", name, "pretrain", "seq_len"), seq_len)
        for key, (path, length) in lengths.items():
            if limit is not None and length > limit:
                raise _Located(f"{key} ({length}) is longer than model {name}'s positions ({limit}, {origin}): "
                               f"lower {key} to at most {limit} or raise models.{name}.dims.max_positions", path)


def _check_consistency(config: dict) -> None:
    """Cross-key rules that JSON schema cannot state."""
    for name, model in config.get("models", {}).items():
        here, existing = "family" in model, bool(model.get("hub") or model.get("path") or model.get("gguf"))
        if here == existing:
            raise ConfigError(f"models.{name}: give either family (pretrain a tiny model here) or hub/path/gguf "
                              "(an existing model), not both or neither")
        if model.get("gguf") and (model.get("hub") or model.get("path")):
            raise ConfigError(f"models.{name}: gguf names the model's weights itself: remove hub and path, or gguf")
        if existing and ("dims" in model or "pretrain" in model):
            raise ConfigError(f"models.{name}: dims and pretrain only apply to models pretrained here (family)")
    if config.get("models"):
        if not config.get("calibration", {}).get("source"):
            raise ConfigError("calibration.source is required when models are configured (e.g. {kind: c4, split: "
                              "train} for hub models, {kind: stdlib, split: train} for models pretrained here)")
        if not config.get("eval", {}).get("sets"):
            raise ConfigError("eval.sets is required when models are configured (e.g. wikitext2: {test: {kind: "
                              "wikitext2, split: test}})")
        if config.get("iterative", {}).get("rounds", 0) >= 1 and \
                not any("valid" in splits for splits in config["eval"]["sets"].values()):
            raise ConfigError("eval.sets: no set has a 'valid' split, which the report needs to choose each I-OBS "
                              "variant's best round: add one, e.g. eval.sets.<name>.valid, or set iterative.rounds: 0")
    for key in ("pruning", "iterative"):
        for text in config.get(key, {}).get("sparsities", []):
            try:
                SparsitySpec.parse(text)
            except SparsitySpecError as err:
                raise ConfigError(f"{key}.sparsities: {err}") from None
    iterative = config.get("iterative", {})
    fixed = [v for v in iterative.get("variants", []) if registry.VARIANTS[v].schedule.fixed_mask]
    solver = iterative.get("solver", "sparsegpt")
    if fixed and iterative.get("rounds", 0) >= 2 and not registry.SOLVERS[solver].keeps_mask:
        raise ConfigError(f"iterative.variants: {', '.join(fixed)} projects onto round 1's mask, which solver "
                          f"{solver} cannot keep: use iterative.solver "
                          f"{' or '.join(registry.mask_keeping_solvers())}, or drop {', '.join(fixed)}")
    for name, exp in config.get("synthetic", {}).get("experiments", {}).items():
        if exp.get("prior") == "gaussian":
            if exp["k"] < exp["k_true"]:
                raise ConfigError(f"synthetic.experiments.{name}.k ({exp['k']}) must be >= k_true ({exp['k_true']})")
            if exp["k"] > exp["d"]:
                raise ConfigError(f"synthetic.experiments.{name}.k ({exp['k']}) must be <= d ({exp['d']})")


def _merge(base: dict, extra: dict) -> dict:
    """Snakemake's merge of config files: nested mappings are merged, everything else is replaced."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def check_files(paths) -> dict:
    """Parse the config files strictly, merge them as Snakemake does and validate the result; ConfigError if not."""
    where = check_config_files(paths)
    merged: dict = {}
    for path in paths:
        _merge(merged, load_config(path))
    return validate_config(merged, where=where)


def main(argv=None) -> int:
    """`python -m iobs.config FILE...`: check config files before Snakemake reads them (Snakemake's own loader says
    only "not valid JSON or YAML" on a syntax error). Exit 2 with one line on the first problem."""
    import sys

    paths = list(sys.argv[1:] if argv is None else argv) or ["config.yaml"]
    if paths == ["--schema"]:  # the schema as validation sees it (registry entries filled in)
        yaml.safe_dump(load_schema(), sys.stdout, sort_keys=False, width=120)
        return 0
    try:
        check_files(paths)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
