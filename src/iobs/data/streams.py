"""Token streams: a text tokenized once into a 1-D int32 tensor, saved atomically, reloaded as int64 windows later."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from iobs.data.files import atomic_save_tensor, load_tensor
from iobs.errors import DataError


CHUNK_CHARS = 10_000


def tokenize_text(tokenizer, text: str, max_tokens: int | None = None, add_special_tokens: bool = True) -> torch.Tensor:
    """Token ids of the whole text as one sequence, like the SparseGPT/GPTQ reference (`tokenizer(text)` once, so
    hub tokenizers add their BOS at the start only), truncated to max_tokens (C4 validation: 256 x seqlen).

    Returns Tensor[T] int32. Tokenizers of our own kind (see splits_exactly) are run on ~CHUNK_CHARS pieces cut at
    pre-token boundaries: the same ids, about twice as fast on megabytes of text.
    """
    if not text:
        raise DataError("cannot tokenize an empty text: check the source")
    if splits_exactly(tokenizer):
        pieces = tokenizer.backend_tokenizer.encode_batch(chunks_at_line_starts(text, CHUNK_CHARS),
                                                          add_special_tokens=False)
        ids = [i for piece in pieces for i in piece.ids]
    else:
        ids = tokenizer(text, add_special_tokens=add_special_tokens, verbose=False)["input_ids"]
    if max_tokens is not None:
        if max_tokens < 1:
            raise DataError(f"max_tokens must be a positive number of tokens, got {max_tokens}")
        ids = ids[:max_tokens]
    if max(ids) >= 2**31:
        raise DataError(f"token id {max(ids)} does not fit int32: this tokenizer's vocabulary is too large for streams")
    return torch.tensor(ids, dtype=torch.int32)


def splits_exactly(tokenizer) -> bool:
    """True for a plain byte-level BPE (no normalizer, GPT-2 regex, no prefix space, no special tokens added).

    Its pre-tokenizer never joins a newline to a preceding non-space character and has no look-behind, so
    encoding the text in pieces cut just before such a newline gives exactly the ids of encoding it whole.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    pre, post = spec.get("pre_tokenizer") or {}, spec.get("post_processor")
    plain_post = post is None or (post.get("type") == "TemplateProcessing" and not post.get("special_tokens")
                                  and post.get("single") == [{"Sequence": {"id": "A", "type_id": 0}}])
    return (spec.get("normalizer") is None and spec["model"].get("type") == "BPE" and pre.get("type") == "ByteLevel"
            and pre.get("use_regex", True) and not pre.get("add_prefix_space", False) and plain_post)


def chunks_at_line_starts(text: str, size: int) -> list[str]:
    """Pieces of about `size` characters, each cut just before a newline that follows a non-space character."""
    pieces, start = [], 0
    while start < len(text):
        cut = start + size
        while cut < len(text):
            cut = text.find("\n", cut)
            if cut == -1:
                cut = len(text)
            elif text[cut - 1].isspace():
                cut += 1
                continue
            break
        pieces.append(text[start:cut])
        start = cut
    return pieces


def save_stream(path: str | Path, stream: torch.Tensor) -> None:
    """Write Tensor[T] int32 atomically."""
    if stream.dim() != 1:
        raise ValueError(f"a token stream is 1-D, got shape {tuple(stream.shape)}")
    atomic_save_tensor(path, stream.to(torch.int32))


def load_stream(path: str | Path) -> torch.Tensor:
    """Tensor[T] int64 (what models take) from a file written by save_stream."""
    stream = load_tensor(path, "token stream")
    if stream.dim() != 1 or stream.dtype not in (torch.int32, torch.int64) or stream.numel() == 0:
        raise DataError(f"token stream {path} must be a non-empty 1-D integer tensor, got {stream.dtype} "
                        f"{tuple(stream.shape)}: rerun the tokenize step")
    return stream.long()
