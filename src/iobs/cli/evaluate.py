"""`iobs eval`: perplexity of one model on one text (iobs.eval.perplexity, the function the DAG's eval job calls)."""

from __future__ import annotations

import argparse
import time

import torch

from iobs.cli.common import load_model_and_tokenizer, model_location, pick_device
from iobs.cli.data import check_seqlen, describe, evaluation_windows, resolve_source
from iobs.errors import IobsError
from iobs.eval.perplexity import perplexity
from iobs.models.families import decoder_layers
from iobs.provenance import atomic_write_json, build_record

JOB_NAME = "iobs eval"


def decoder_sparsity(model) -> float:
    """Fraction of exact zeros over the weights of every nn.Linear inside the decoder layers (what pruning touches)."""
    zeros = total = 0
    for module in decoder_layers(model).modules():
        if isinstance(module, torch.nn.Linear):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / max(total, 1)


def eval_command(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run `iobs eval`: print one result line; with --json, write the result and its provenance. Returns the result."""
    start = time.perf_counter()
    if args.seqlen < 2:
        raise IobsError(f"--seqlen must be at least 2 tokens, got {args.seqlen}")
    if args.batch_size < 1:
        raise IobsError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_windows is not None and args.max_windows < 1:
        raise IobsError(f"--max-windows must be at least 1 (or left out for all windows), got {args.max_windows}")
    spec = resolve_source(args.data, "eval", "--data")
    device = pick_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model, args.tokenizer, args.dtype, device)
    check_seqlen(args.seqlen, model)
    windows = evaluation_windows(spec, tokenizer, args.seqlen, args.max_windows, model.config.vocab_size)
    result = perplexity(model, windows, args.batch_size, device)
    result.update(model=model_location(args.model), data=spec, dtype=args.dtype,
                  decoder_sparsity=decoder_sparsity(model))
    print(f"perplexity {result['perplexity']:.4f}  ({describe(spec)}: {result['windows']} windows x "
          f"{result['seqlen']} tokens; decoder sparsity {result['decoder_sparsity']:.4f})")
    if args.json:
        params = {k: v for k, v in vars(args).items() if k not in ("command", "verbose")}
        result["provenance"] = build_record(job=JOB_NAME, params=params, seed=None,
                                            wall_seconds=time.perf_counter() - start,
                                            extra={"command": ["iobs", *argv], "device": str(device)},
                                            inputs=[model_location(args.model), spec.get("path") or spec["kind"]],
                                            outputs=[args.json])
        atomic_write_json(args.json, result)
    return result
