"""Pretraining the tiny OPT / Llama / Phi models on a token stream, so the pipeline has real (if small) LMs offline.

Determinism: the run length is a fixed step count (`steps`) and nothing else (no wall-clock limit), so given the
seed the weights are the same on every machine with the same torch build and thread count, however loaded it is.
The learning rate warms up linearly for warmup_steps and then follows a cosine to min_lr_ratio x lr at `steps`.

Batches: `batch` windows of seq_len tokens at random starts in the train stream, drawn from a generator seeded with
`seed` (model initialisation uses the same seed through build_tiny_model).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from iobs.atomic import atomic_directory
from iobs.data.windows import eval_windows
from iobs.errors import IobsError
from iobs.eval.perplexity import perplexity
from iobs.models.families import TinyDims, build_tiny_model

log = logging.getLogger(__name__)

# Sizes chosen for ~2 minutes of ONE CPU thread (300 steps of 8 x 256 tokens, about 0.35 s per step on an idle
# 2.6 GHz EPYC core, 0.7-1.2 s when the cores are shared): hidden 256 trains 2.2x slower per step and ends worse in
# that budget. vocab_size is replaced by the tokenizer's. Llama's SwiGLU MLP has three matrices, so its ffn is about
# 2/3 of the others' for a similar parameter count; its embedding is not tied to the output layer.
DEFAULT_DIMS = {
    "opt": TinyDims(hidden=128, layers=4, heads=4, ffn=512, max_positions=512),
    "llama": TinyDims(hidden=128, layers=4, heads=4, kv_heads=4, ffn=352, max_positions=512),
    "phi": TinyDims(hidden=128, layers=4, heads=4, ffn=512, max_positions=512),
}


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser and schedule. AdamW(lr, betas=(0.9, beta2), weight_decay on matrices only), gradient clipping."""

    steps: int = 300
    seq_len: int = 256
    batch: int = 8
    lr: float = 3e-3  # OPT at 300 steps, valid ppl: lr 1.5e-3 -> 116, 2e-3 -> 111, 3e-3 -> 110, 5e-3 -> 134
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta2: float = 0.95
    grad_clip: float = 1.0
    log_every: int = 10
    seed: int = 0


def learning_rate(step: int, s: TrainSettings) -> float:
    """LR used for optimizer step `step` (0-based): linear warmup, then cosine from lr to min_lr_ratio x lr."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = min(1.0, (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    matrices = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]  # norms and biases: no decay
    groups = [{"params": matrices, "weight_decay": s.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, s.beta2))


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())


def pretrain(family: str, dims: TinyDims, train_tokens: torch.Tensor, settings: TrainSettings = TrainSettings(),
             valid_tokens: torch.Tensor | None = None, valid_max_windows: int | None = 64):
    """Train a tiny model from scratch; returns (model in eval mode, metrics dict).

    train_tokens / valid_tokens: Tensor[T] integer token streams. The valid perplexity (if valid_tokens is given) is
    measured on at most valid_max_windows non-overlapping windows of seq_len; uniform_perplexity = vocab_size is
    what a model that knows nothing scores.
    """
    s = settings
    if s.steps < 1 or s.batch < 1 or s.seq_len < 2:
        raise IobsError(f"pretraining needs steps >= 1, batch >= 1 and seq_len >= 2, got {s.steps}, {s.batch}, "
                        f"{s.seq_len}")
    if s.seq_len > dims.max_positions:
        raise IobsError(f"pretraining seq_len {s.seq_len} exceeds max_positions {dims.max_positions}: lower seq_len")
    if train_tokens.numel() <= s.seq_len:
        raise IobsError(f"the train stream has {train_tokens.numel()} tokens, not more than seq_len {s.seq_len}")
    if int(train_tokens.max()) >= dims.vocab_size:
        raise IobsError(f"token id {int(train_tokens.max())} >= vocab_size {dims.vocab_size}: use the tokenizer's size")
    model = build_tiny_model(family, dims, seed=s.seed).train()
    optimizer = _optimizer(model, s)
    generator = torch.Generator().manual_seed(s.seed)
    stream = train_tokens.long()
    offsets = torch.arange(s.seq_len)
    curve, window_losses = [], []
    start = time.perf_counter()
    step = 0
    for step in range(s.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, s)
        starts = torch.randint(0, stream.numel() - s.seq_len + 1, (s.batch,), generator=generator)
        batch = stream[starts[:, None] + offsets[None, :]]
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        if not torch.isfinite(loss):
            raise IobsError(f"pretraining {family} diverged at step {step} (loss {loss.item()}): lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
        window_losses.append(loss.item())
        if len(window_losses) == s.log_every or step == s.steps - 1:
            curve.append({"step": step + 1, "loss": sum(window_losses) / len(window_losses),
                          "lr": learning_rate(step, s), "seconds": round(time.perf_counter() - start, 2)})
            log.info("%s step %d loss %.3f", family, step + 1, curve[-1]["loss"])
            window_losses = []
    seconds = time.perf_counter() - start
    model.eval()
    steps_done = step + 1
    metrics = {
        "family": family,
        "dims": asdict(dims),
        "settings": asdict(s),
        "params": count_parameters(model),
        "steps": steps_done,
        "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / steps_done, 4),
        "tokens_seen": steps_done * s.batch * s.seq_len,
        "train_tokens": int(train_tokens.numel()),
        "loss_curve": curve,
        "final_train_loss": curve[-1]["loss"],
        "uniform_perplexity": dims.vocab_size,
    }
    if valid_tokens is not None:
        windows = eval_windows(valid_tokens, s.seq_len, valid_max_windows)
        metrics["valid"] = perplexity(model, windows)
    return model, metrics


def dims_for(family: str, vocab_size: int, overrides: dict | None = None) -> TinyDims:
    """The family's DEFAULT_DIMS with the tokenizer's vocab_size and any overrides (a dict of TinyDims fields)."""
    if family not in DEFAULT_DIMS:
        raise IobsError(f"unknown model family '{family}' (choose one of {', '.join(sorted(DEFAULT_DIMS))})")
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(TinyDims.__dataclass_fields__)
    if unknown:
        raise IobsError(f"unknown model dims {sorted(unknown)} (allowed: {', '.join(TinyDims.__dataclass_fields__)})")
    return replace(DEFAULT_DIMS[family], vocab_size=vocab_size, **overrides)


def save_model_dir(model, tokenizer, directory: str | Path) -> Path:
    """save_pretrained (safetensors) of model and tokenizer into one directory, atomically."""
    with atomic_directory(directory) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return Path(directory)
