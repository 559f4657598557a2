"""Evaluation and calibration text, from the Hugging Face hub or from local copies, behind one interface.

A source spec is a mapping with a `kind` (a bare string is shorthand for {"kind": <string>}):

  kind       other keys (defaults)                               load_text gives
  wikitext2  split (test), path (null)                           "\\n\\n".join of the rows of wikitext-2-raw-v1
  c4         split (validation), path (null), documents          " ".join of the first `documents` documents
             (1100 for validation, all for train), join (" ")
  jsonl      path, documents (all), join ("\\n\\n"), field (text)  the same, from local JSON-lines (.gz) files
  text       path                                                the file's content
  stdlib     path (corpus directory or a split file), split      that split of the stdlib corpus (iobs.data.corpus)

`path` null means the hub (wikitext2: datasets "Salesforce/wikitext", config wikitext-2-raw-v1, the current name of
"wikitext"; c4: "allenai/c4" with data_files en/c4-{validation.00000-of-00008,train.00000-of-01024}.json.gz, since the
old "allenai--c4" config no longer loads). Offline, that fails with a DataError that names `<key>.path`, where
`key` is the config key the spec came from (pass it to load_text), so the user knows what to set.

Local WikiText-2 raw (wiki.test.raw, or a folder holding wiki.{split}.raw): the hub rows are the file's lines as
Python iterates them (text mode, newline kept), with whitespace-only lines replaced by "" (what the hub's loading
script did and its parquet export keeps). So for the original file the joined text is identical to the hub's.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from iobs.errors import DataError

KINDS = ("wikitext2", "c4", "jsonl", "text", "stdlib")
WIKITEXT_HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1")
C4_HUB = "allenai/c4"
C4_SHARDS = {"validation": "en/c4-validation.00000-of-00008.json.gz", "train": "en/c4-train.00000-of-01024.json.gz"}
C4_VALIDATION_DOCUMENTS = 1100  # SparseGPT/GPTQ protocol
_TRUTHY = {"1", "true", "yes", "on"}


def normalize_spec(spec: Any, key: str = "source") -> dict:
    """A copy of the spec as a dict with a known kind; DataError naming `key` otherwise."""
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise DataError(f"{key}: {spec!r} is not a text source (give a mapping with kind one of {', '.join(KINDS)})")
    return dict(spec)


def hub_offline() -> bool:
    """True if the environment asks for offline mode (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUTHY
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _local_path(spec: dict, key: str) -> Path:
    path = Path(os.path.expanduser(str(spec["path"])))
    if not path.exists():
        raise DataError(f"{key}.path: {path} does not exist (relative paths are from {Path.cwd()}): fix the path")
    return path


def _hub_rows(dataset: str, key: str, what: str, **kwargs) -> list[str]:
    """The `text` column of a hub dataset split; any failure to reach or read it becomes one DataError line."""
    try:
        import datasets

        rows = datasets.load_dataset(dataset, **kwargs)["text"]
    except Exception as err:  # connection, offline mode, missing cache, auth: all mean "use a local copy"
        mode = "offline mode is on" if hub_offline() else f"{type(err).__name__}"
        raise DataError(f"cannot load {what} from the Hugging Face hub ({mode}): "
                        f"set {key}.path to a local copy") from None
    return list(rows)


# --- WikiText-2 -------------------------------------------------------------------------------------------------

def wikitext_rows_from_file(path: str | Path) -> list[str]:
    """Rows as the hub has them: each line with its newline, whitespace-only lines as ""."""
    with open(path, encoding="utf-8") as fh:
        return [line if line.strip() else "" for line in fh]


def _wikitext2(spec: dict, key: str) -> str:
    split = spec.get("split", "test")
    if spec.get("path"):
        path = _local_path(spec, key)
        if path.is_dir():
            path = path / f"wiki.{split}.raw"
            if not path.is_file():
                raise DataError(f"{key}.path: no wiki.{split}.raw in {path.parent}: point it at the raw split file")
        rows = wikitext_rows_from_file(path)
    else:
        rows = _hub_rows(WIKITEXT_HUB[0], key, f"WikiText-2 raw {split}", name=WIKITEXT_HUB[1], split=split)
    return "\n\n".join(rows)


# --- C4 and other JSON-lines documents ----------------------------------------------------------------------------

def _jsonl_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")))
    if not files:
        raise DataError(f"no .json/.jsonl(.gz) files in {path}: point the source path at C4-style JSON-lines files")
    return files


def read_jsonl_documents(path: str | Path, field: str = "text", limit: int | None = None) -> list[str]:
    """The `field` of each JSON line of a file, or of every JSON-lines file in a folder (sorted by name)."""
    documents: list[str] = []
    for file in _jsonl_files(Path(path)):
        opener = gzip.open if file.name.endswith(".gz") else open
        with opener(file, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if limit is not None and len(documents) >= limit:
                    return documents
                if not line.strip():
                    continue
                try:
                    documents.append(json.loads(line)[field])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{file}:{number} is not a JSON object with a '{field}' string: "
                                    "give C4-style JSON lines") from None
    return documents


def load_documents(spec: Any, key: str = "source") -> list[str]:
    """The documents of a c4 or jsonl source (after its `documents` limit), for document-wise calibration."""
    spec = normalize_spec(spec, key)
    kind = spec["kind"]
    if kind not in ("c4", "jsonl"):
        raise DataError(f"{key}: kind '{kind}' has no documents (use kind c4 or jsonl)")
    split = spec.get("split", "validation")
    default_limit = C4_VALIDATION_DOCUMENTS if kind == "c4" and split == "validation" else None
    limit = spec.get("documents", default_limit)
    if spec.get("path"):
        documents = read_jsonl_documents(_local_path(spec, key), spec.get("field", "text"), limit)
    elif kind == "c4":
        if split not in C4_SHARDS:
            raise DataError(f"{key}.split: '{split}' is not a C4 split (choose validation or train)")
        documents = _hub_rows(C4_HUB, key, f"C4 {C4_SHARDS[split]}", data_files={split: C4_SHARDS[split]}, split=split)
        documents = documents[:limit] if limit is not None else documents
    else:
        raise DataError(f"{key}.path is required for kind jsonl: set it to a JSON-lines file or folder")
    if not documents:
        raise DataError(f"{key}: the source holds no documents: check its path")
    return documents


# --- the one entry point ------------------------------------------------------------------------------------------

def load_text(spec: Any, key: str = "source") -> str:
    """The text of a source spec (see the module docstring). `key` is the config key of the spec, for messages."""
    spec = normalize_spec(spec, key)
    kind = spec["kind"]
    if kind == "wikitext2":
        return _wikitext2(spec, key)
    if kind in ("c4", "jsonl"):
        default_join = " " if kind == "c4" else "\n\n"
        return spec.get("join", default_join).join(load_documents(spec, key))
    if not spec.get("path"):
        raise DataError(f"{key}.path is required for kind {kind}: set it to a local file")
    path = _local_path(spec, key)
    if kind == "stdlib" and path.is_dir():
        path = path / f"{spec.get('split', 'test')}.txt"
        if not path.is_file():
            raise DataError(f"{key}.path: no {path.name} in {path.parent}: build the corpus there first")
    if not path.is_file():
        raise DataError(f"{key}.path: {path} is not a file: point it at a text file")
    return path.read_text(encoding="utf-8")
