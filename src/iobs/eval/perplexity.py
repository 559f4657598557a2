"""Perplexity as in the SparseGPT/GPTQ reference: exp(mean NLL) over non-overlapping windows of a test stream.

Each window is scored on its own: its first token has no context and is not predicted, so a window of L tokens
contributes L - 1 predicted tokens (the reference's per-window mean loss times L, divided by windows x L, is the same
number, since every window has the same length). A window that begins with BOS (iobs.data.bos) is scored the same
way: the BOS position is never a target, and its L - 1 text tokens all are. Logits are converted to float32 and the
summed NLL is accumulated in float64, so half-precision models are scored without overflow in the mean.
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from iobs.data.windows import eval_windows
from iobs.errors import DataError, IobsError


class NonFinitePerplexity(IobsError):
    """The model's loss on the evaluation text is nan or inf: its weights are broken (a diverged step, an overflow
    in half precision), and a nan in a results table would pass for a number."""


def model_label(model) -> str:
    """Where the model came from (config._name_or_path), for messages; its class name if unknown."""
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None) or type(model).__name__


def _max_positions(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) if config is not None else None


@torch.no_grad()
def window_nll(model, windows: torch.Tensor) -> torch.Tensor:
    """Tensor[B] float64: summed NLL of tokens 1..L-1 of each window (Tensor[B, L] int64) given the tokens before."""
    logits = model(input_ids=windows, use_cache=False).logits  # [B, L, V]
    predicted = logits[:, :-1, :].float()
    targets = windows[:, 1:].to(predicted.device)
    nll = F.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view(windows.shape[0], -1).double().sum(dim=1).cpu()


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch_size: int = 8, device: str | torch.device | None = None, *,
               progress: bool = False, label: str | None = None) -> dict:
    """Perplexity of a causal LM on Tensor[W, L] int64 windows (see eval_windows).

    model: called as model(input_ids=..., use_cache=False) and must return an object with .logits [B, L, V].
    Returns dict(perplexity, nll = mean NLL per predicted token in nats, tokens = W x (L - 1), windows, seqlen,
    seconds). progress: a tqdm bar over the windows on stderr. A nan or inf result raises NonFinitePerplexity,
    naming the model by `label` (default: its config's name_or_path).
    """
    if windows.dim() != 2 or windows.shape[1] < 2 or windows.shape[0] < 1:
        raise DataError(f"evaluation windows must be [windows >= 1, seqlen >= 2], got {tuple(windows.shape)}")
    limit = _max_positions(model)
    if limit is not None and windows.shape[1] > limit:
        raise DataError(f"evaluation seqlen {windows.shape[1]} exceeds the model's {limit} positions: lower seqlen")
    if batch_size < 1:
        raise DataError(f"evaluation batch_size must be >= 1, got {batch_size}")
    if device is None:
        parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    start = time.perf_counter()
    total = 0.0
    bar = tqdm(total=windows.shape[0], desc="perplexity", unit="window", disable=not progress, file=sys.stderr)
    try:
        for first in range(0, windows.shape[0], batch_size):
            batch = windows[first:first + batch_size].to(device)
            total += float(window_nll(model, batch).sum())
            bar.update(batch.shape[0])
    finally:
        bar.close()
        if was_training:
            model.train()
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    mean_nll = total / tokens
    if not mean_nll <= 709:  # nan, inf, or beyond exp's float range (no real model is that wrong)
        raise NonFinitePerplexity(f"perplexity of {label or model_label(model)} is not finite (mean NLL {mean_nll} "
                                  f"over {windows.shape[0]} windows): its weights hold nan/inf or overflow in "
                                  "this dtype; re-run the pruning (e.g. with a lower learning rate) or evaluate in float32")
    return {
        "perplexity": math.exp(mean_nll),
        "nll": mean_nll,
        "tokens": tokens,
        "windows": int(windows.shape[0]),
        "seqlen": int(windows.shape[1]),
        "seconds": round(time.perf_counter() - start, 3),
    }


def stream_perplexities(model, streams, bos, seqlen: int, max_windows: int | None = None, batch_size: int = 8,
                        device=None, label: str | None = None) -> list[dict]:
    """Perplexity on each of several token streams: streams yields (names, Tensor[T] token ids), each cut into its
    evaluation windows (iobs.data.windows.eval_windows) under the window policy `bos` (iobs.data.bos.BosPolicy).
    One row per stream: {**names, **perplexity(...), "bos": bos.label}."""
    rows = []
    for names, tokens in streams:
        windows = eval_windows(tokens, int(seqlen), max_windows, bos.bos_id)
        rows.append({**names, **perplexity(model, windows, int(batch_size), device, label=label), "bos": bos.label})
    return rows
