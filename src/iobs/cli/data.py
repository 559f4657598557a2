"""Text for the command line: the `--calibration` / `--data` shorthand, calibration batches and evaluation windows.

A shorthand names a source of iobs.data.sources (the same specs the DAG's config uses):

  c4[:SPLIT]            hub allenai/c4; calibration: train shard, document mode (SparseGPT protocol);
                        evaluation: validation, first 1100 documents joined with " ", 256 x seqlen tokens
  wikitext2[:SPLIT]     hub WikiText-2 raw; calibration: train, evaluation: test
  FILE.raw              a WikiText-2 raw split file (rows as the hub has them)
  FILE.json[l][.gz]     C4-style JSON lines, treated like c4 (document mode / the C4 evaluation protocol)
  FILE (anything else)  plain text
  DIR[:SPLIT]           a folder of JSON-lines files (like c4), or of wiki.SPLIT.raw, or of SPLIT.txt files

Calibration batches of stream sources are seeded random windows of the tokenized text (iobs.data.windows); a
later I-OBS round r draws batch r-1 (round_seed), so round 1 prunes with exactly the one-shot calibration set.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import torch

from iobs.data.bos import NO_BOS, BosPolicy
from iobs.data.sources import load_documents, load_text
from iobs.data.streams import tokenize_text
from iobs.data.windows import calibration_batch, document_windows, eval_windows, round_seed
from iobs.errors import DataError

HUB_NAMES = ("c4", "wikitext2")
C4_EVAL_WINDOWS = 256  # the C4 evaluation text is truncated to 256 x seqlen tokens (SparseGPT protocol)
JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
DEFAULT_SPLITS = {  # purpose -> kind -> split
    "calibration": {"c4": "train", "wikitext2": "train", "stdlib": "train"},
    "eval": {"c4": "validation", "wikitext2": "test", "stdlib": "test"},
}


def resolve_source(text: str, purpose: str, option: str) -> dict:
    """The source spec (iobs.data.sources) of a shorthand; purpose "calibration" or "eval" picks default splits.

    A DataError names `option` and the fix when the shorthand names no existing file, folder or hub dataset.
    """
    splits = DEFAULT_SPLITS[purpose]
    path = Path(text).expanduser()
    name, colon, split = text.partition(":")
    if not path.exists() and name in HUB_NAMES:
        if colon and not split:
            raise DataError(f"{option} {text}: the split after ':' is empty; e.g. {name}:{splits[name]}")
        return {"kind": name, "split": split or splits[name]}
    if not path.exists() and colon and Path(name).expanduser().is_dir():
        path = Path(name).expanduser()  # DIR:SPLIT
    elif not path.exists():
        raise DataError(f"{option} {text}: no such file or folder (and not one of {', '.join(HUB_NAMES)}): "
                        "fix the path")
    else:
        split = ""
    path = path.resolve()  # provenance records where the text really was
    if path.is_file():
        return _file_spec(path, splits)
    return _folder_spec(path, split, splits, option)


def _file_spec(path: Path, splits: dict) -> dict:
    if path.name.endswith(JSON_SUFFIXES):
        return {"kind": "c4", "split": splits["c4"], "path": str(path)}
    if path.suffix == ".raw":
        return {"kind": "wikitext2", "path": str(path)}
    return {"kind": "text", "path": str(path)}


def _folder_spec(path: Path, split: str, splits: dict, option: str) -> dict:
    names = {p.name for p in path.iterdir() if p.is_file()}
    if any(n.endswith(JSON_SUFFIXES) for n in names):
        if split:  # every JSON-lines file of the folder is read; a split would be silently ignored
            raise DataError(f"{option} {path}:{split}: a folder of JSON-lines files has no splits: "
                            "point at the folder (or one file) without ':SPLIT'")
        return {"kind": "c4", "split": splits["c4"], "path": str(path)}
    for kind, prefix, suffix in (("wikitext2", "wiki.", ".raw"), ("stdlib", "", ".txt")):
        if any(re.fullmatch(re.escape(prefix) + r"\w+" + re.escape(suffix), n) for n in names):
            wanted = split or splits[kind]
            if f"{prefix}{wanted}{suffix}" not in names:
                raise DataError(f"{option}: {path} has no {prefix}{wanted}{suffix}: give the file itself, or "
                                f"{path}:SPLIT for another split")
            return {"kind": kind, "split": wanted, "path": str(path)}
    raise DataError(f"{option}: {path} holds no .json(l)(.gz), wiki.SPLIT.raw or SPLIT.txt files: "
                    "point at a text file or at such a folder")


def describe(spec: dict) -> str:
    """Short human label of a spec: 'wikitext2 test', 'c4 validation', a file path or 'folder (split)'."""
    if not spec.get("path"):
        return f"{spec['kind']} {spec['split']}"
    return f"{spec['path']} ({spec['split']})" if Path(spec["path"]).is_dir() else spec["path"]


@contextmanager
def hub_hint(spec: dict, option: str):
    """Re-word the library's "set <key>.path to a local copy" hint of a failed hub load as the option to pass."""
    try:
        yield
    except DataError as err:
        found = re.search(r"from the Hugging Face hub \(([^)]*)\)", str(err))
        if spec.get("path") or not found:
            raise
        raise DataError(f"cannot load {describe(spec)} from the Hugging Face hub ({found.group(1)}): pass "
                        f"{option} PATH with a local copy (a file or folder, see iobs --help)") from None


def check_tokens(ids: torch.Tensor, vocab_size: int, tokenizer_name: str) -> None:
    """A token id beyond the model's embedding table means the tokenizer belongs to another model."""
    if ids.numel() and int(ids.max()) >= vocab_size:
        raise DataError(f"tokenizer {tokenizer_name} produced token id {int(ids.max())} but the model has only "
                        f"{vocab_size} embeddings: pass the model's own tokenizer with --tokenizer")


def check_seqlen(seqlen: int, model, option: str = "--seqlen") -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and seqlen > limit:
        raise DataError(f"{option} {seqlen} exceeds the model's {limit} positions: lower {option}")


class CalibrationSampler:
    """Calibration batches Tensor[samples, seqlen] int64 of one source, for round 0 (one-shot) and later rounds.

    The text is loaded and tokenized once; c4 / JSON-lines sources use the SparseGPT document recipe (a random
    window inside a random document longer than seqlen tokens), every other source random windows of its stream.
    """

    def __init__(self, spec: dict, tokenizer, samples: int, seqlen: int, seed: int, vocab_size: int,
                 option: str = "--calibration", bos: BosPolicy = NO_BOS):
        self.spec, self.tokenizer, self.samples, self.seqlen, self.seed = spec, tokenizer, samples, seqlen, seed
        self.vocab_size, self.bos = vocab_size, bos
        self.mode = "documents" if spec["kind"] == "c4" else "stream"
        with hub_hint(spec, option):
            if self.mode == "documents":
                self.documents = load_documents(spec, option)
                self._encoded: dict[str, list[int]] = {}
            else:
                self.stream = tokenize_text(tokenizer, load_text(spec, option))
                check_tokens(self.stream, vocab_size, tokenizer.name_or_path)

    def _encode(self, text: str) -> list[int]:
        # The recipe may draw the same document many times; encoding it once gives the same ids, much faster.
        if text not in self._encoded:
            self._encoded[text] = self.tokenizer(text, verbose=False)["input_ids"]
        return self._encoded[text]

    def batch(self, round_index: int = 0) -> torch.Tensor:
        """The batch of round `round_index` (0 = the base calibration set): Tensor[samples, seqlen] int64."""
        if self.mode == "documents":
            windows = document_windows(self.documents, self._encode, self.samples, self.seqlen,
                                       round_seed(self.seed, round_index), bos_id=self.bos.bos_id)
            check_tokens(windows, self.vocab_size, self.tokenizer.name_or_path)
            return windows
        return calibration_batch(self.stream, self.samples, self.seqlen, self.seed, round_index, self.bos.bos_id)

    def describe(self) -> dict:
        return {"source": self.spec, "mode": self.mode, "samples": self.samples, "seqlen": self.seqlen,
                "seed": self.seed, "bos": self.bos.record()}


def evaluation_windows(spec: dict, tokenizer, seqlen: int, max_windows: int | None, vocab_size: int,
                       option: str = "--data", bos: BosPolicy = NO_BOS) -> torch.Tensor:
    """Tensor[W, seqlen] int64: non-overlapping windows of the source's text (C4: the first 256 x seqlen tokens;
    with BOS per window, 256 x (seqlen - 1) text tokens and the stream's own leading BOS, still 256 windows)."""
    with hub_hint(spec, option):
        text = load_text(spec, option)
    per_window = seqlen - 1 if bos.prepend else seqlen
    max_tokens = C4_EVAL_WINDOWS * per_window + int(bos.prepend) if spec["kind"] == "c4" else None
    stream = tokenize_text(tokenizer, text, max_tokens)
    check_tokens(stream, vocab_size, tokenizer.name_or_path)
    return eval_windows(stream, seqlen, max_windows, bos.bos_id)
