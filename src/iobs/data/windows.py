"""Calibration and evaluation windows cut from token streams (or, for the C4 protocol, from documents).

- Calibration (stream): N windows of L tokens at uniformly random starts in the stream, from a torch.Generator
  seeded with `seed`; windows may overlap each other and cross file boundaries of the corpus.
- Calibration (documents, the SparseGPT/GPTQ C4 recipe): with Python's random.Random(seed), repeatedly pick a random
  document until its token count exceeds L, then a random L-token window inside it. Same draws as the reference
  (which seeds the global `random`), so with the same documents and tokenizer it gives the same windows.
- Fresh batches per round: round_seed(seed, r) is `seed` for r = 0 (the calibration set itself, so the first round
  of I-OBS prunes exactly like SparseGPT) and an independent seed derived from (seed, r) for r >= 1.
- Evaluation: non-overlapping consecutive windows of seqlen from the start of the stream, the incomplete tail
  dropped (as the reference does). An optional cap (max_windows, not part of the reference protocol, which scores
  all of WikiText-2 and truncates C4's token stream instead: tokenize with max_tokens) keeps windows spread evenly
  over the stream rather than its beginning: the stdlib test split's first files are unlike the rest (OPT tiny:
  ppl 181 on the first 128 windows vs 133 on all 826).
- BOS per window (bos_id given, see iobs.data.bos): every window of L tokens is [BOS] + L - 1 text tokens, cut as
  above from the stream without its leading BOS (tokenize_text keeps the one a tokenizer adds at the start of the
  text); documents likewise. bos_id None gives the reference windows, unchanged.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np
import torch

from iobs.errors import DataError


def round_seed(seed: int, round_index: int) -> int:
    """Seed of the calibration batch of round `round_index` (0 = the base calibration set)."""
    if round_index < 0:
        raise ValueError(f"round_index must be >= 0, got {round_index}")
    if round_index == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed), int(round_index)]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def text_tokens(ids, bos_id: int | None):
    """ids (Tensor[T] or list) without the BOS that the tokenizer put first; unchanged if bos_id is None."""
    if bos_id is not None and len(ids) and int(ids[0]) == bos_id:
        return ids[1:]
    return ids


def with_bos(windows: torch.Tensor, bos_id: int | None) -> torch.Tensor:
    """Tensor[N, L] int64 -> Tensor[N, L + 1] int64 with bos_id in column 0 (unchanged if bos_id is None)."""
    if bos_id is None:
        return windows
    return torch.cat([torch.full((windows.shape[0], 1), int(bos_id), dtype=torch.int64), windows], dim=1)


def _text_length(length: int, bos_id: int | None, what: str) -> int:
    """Text tokens per window: length, or length - 1 after the BOS."""
    if bos_id is None:
        return length
    if length < 2:
        raise DataError(f"{what} windows of {length} token cannot hold BOS and text: use at least 2 tokens")
    return length - 1


def random_windows(stream: torch.Tensor, num_windows: int, length: int, seed: int,
                   bos_id: int | None = None) -> torch.Tensor:
    """Tensor[num_windows, length] int64 of windows at seeded random starts in stream (Tensor[T], any int dtype);
    with bos_id, [BOS] + length - 1 tokens of the stream (without its leading BOS)."""
    if num_windows < 1 or length < 1:
        raise DataError(f"calibration needs at least one window of at least one token, got {num_windows} x {length}")
    if bos_id is not None:
        text = _text_length(length, bos_id, "calibration")
        return with_bos(random_windows(text_tokens(stream, bos_id), num_windows, text, seed), bos_id)
    if stream.numel() < length:
        raise DataError(f"the token stream has {stream.numel()} tokens, fewer than one window of {length}: "
                        "use shorter windows or a larger source")
    generator = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, stream.numel() - length + 1, (num_windows,), generator=generator)
    offsets = torch.arange(length)
    return stream.long()[starts[:, None] + offsets[None, :]]


def calibration_batch(stream: torch.Tensor, num_windows: int, length: int, seed: int = 0,
                      round_index: int = 0, bos_id: int | None = None) -> torch.Tensor:
    """The calibration windows of one round: Tensor[num_windows, length] int64 (round 0 = the calibration set)."""
    return random_windows(stream, num_windows, length, round_seed(seed, round_index), bos_id)


def document_windows(documents: Sequence[str], encode: Callable[[str], list[int]], num_windows: int, length: int,
                     seed: int = 0, max_draws: int = 1_000_000, bos_id: int | None = None) -> torch.Tensor:
    """SparseGPT/GPTQ C4 calibration: Tensor[num_windows, length] int64 (see the module docstring).

    encode(text) -> token ids of one document (the reference calls the tokenizer with its defaults). With bos_id,
    each window is [BOS] + length - 1 tokens of a document longer than that (its own leading BOS removed).
    """
    if not documents:
        raise DataError("document calibration needs at least one document")
    if bos_id is not None:
        text = _text_length(length, bos_id, "calibration")
        windows = document_windows(documents, lambda doc: text_tokens(encode(doc), bos_id), num_windows, text, seed,
                                   max_draws)
        return with_bos(windows, bos_id)
    rng = random.Random(seed)
    rows, draws = [], 0
    for _ in range(num_windows):
        while True:
            draws += 1
            if draws > max_draws:
                raise DataError(f"found no document longer than {length} tokens in {max_draws} draws: "
                                "use shorter calibration windows or another source")
            ids = encode(documents[rng.randint(0, len(documents) - 1)])
            if len(ids) > length:
                break
        start = rng.randint(0, len(ids) - length - 1)
        rows.append(ids[start:start + length])
    return torch.tensor(rows, dtype=torch.int64)


def eval_windows(stream: torch.Tensor, seqlen: int, max_windows: int | None = None,
                 bos_id: int | None = None) -> torch.Tensor:
    """Tensor[W, seqlen] int64: the stream's consecutive non-overlapping windows (tail dropped), or, if there are
    more than max_windows of them, max_windows of those spread evenly over the stream (always including the first).
    With bos_id: [BOS] + consecutive non-overlapping pieces of seqlen - 1 tokens of the stream without its leading
    BOS, so every text token of a window is scored and none twice.
    """
    if seqlen < 2:
        raise DataError(f"evaluation seqlen must be at least 2 tokens (one is predicted from the other), got {seqlen}")
    pieces = _consecutive(text_tokens(stream, bos_id), _text_length(seqlen, bos_id, "evaluation"), max_windows)
    return with_bos(pieces, bos_id)


def _consecutive(stream: torch.Tensor, length: int, max_windows: int | None) -> torch.Tensor:
    """Tensor[W, length] int64: eval_windows without BOS."""
    count = stream.numel() // length
    if count == 0:
        raise DataError(f"the token stream has {stream.numel()} tokens, fewer than one window of {length}: "
                        "use a shorter seqlen or a larger source")
    windows = stream[: count * length].long().view(count, length)
    if max_windows is None or max_windows >= count:
        return windows
    if max_windows < 1:
        raise DataError(f"max_windows must be >= 1 or null (all windows), got {max_windows}")
    return windows[torch.arange(max_windows) * count // max_windows]
