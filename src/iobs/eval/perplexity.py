"""Perplexity as in the SparseGPT/GPTQ reference: exp(mean NLL) over non-overlapping windows of a test stream.

Each window is scored on its own: its first token has no context and is not predicted, so a window of L tokens
contributes L - 1 predicted tokens (the reference's per-window mean loss times L, divided by windows x L, is the same
number, since every window has the same length). Logits are converted to float32 and the summed NLL is accumulated
in float64, so half-precision models are scored without overflow in the mean.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from iobs.errors import DataError


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
def perplexity(model, windows: torch.Tensor, batch_size: int = 8, device: str | torch.device | None = None) -> dict:
    """Perplexity of a causal LM on Tensor[W, L] int64 windows (see eval_windows).

    model: called as model(input_ids=..., use_cache=False) and must return an object with .logits [B, L, V].
    Returns dict(perplexity, nll = mean NLL per predicted token in nats, tokens = W x (L - 1), windows, seqlen,
    seconds).
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
    try:
        for first in range(0, windows.shape[0], batch_size):
            batch = windows[first:first + batch_size].to(device)
            total += float(window_nll(model, batch).sum())
    finally:
        if was_training:
            model.train()
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    mean_nll = total / tokens
    return {
        "perplexity": math.inf if mean_nll > 709 else math.exp(mean_nll),  # NaN stays NaN
        "nll": mean_nll,
        "tokens": tokens,
        "windows": int(windows.shape[0]),
        "seqlen": int(windows.shape[1]),
        "seconds": round(time.perf_counter() - start, 3),
    }
