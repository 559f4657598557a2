"""`iobs eval`: perplexity of one model on one text (iobs.eval.perplexity, the function the DAG's eval job calls)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from iobs.cli.common import load_model_and_tokenizer, model_location, pick_device
from iobs.cli.data import check_seqlen, evaluation_windows, resolve_source
from iobs.cli.outputs import check_writable
from iobs.data.bos import resolve_bos
from iobs.errors import IobsError
from iobs.eval.perplexity import perplexity
from iobs.models.bos import model_type_of
from iobs.models.families import decoder_layers
from iobs.models.gguf import source_record
from iobs.atomic import atomic_write_json
from iobs.provenance import build_record

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
    """Run `iobs eval`: with --json, write the result and its provenance; print one summary line. Returns the result.

    A nan or inf perplexity is an error (NonFinitePerplexity), and then nothing is written."""
    start = time.perf_counter()
    if args.seqlen < 2:
        raise IobsError(f"--seqlen must be at least 2 tokens, got {args.seqlen}")
    if args.batch_size < 1:
        raise IobsError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_windows is not None and args.max_windows < 1:
        raise IobsError(f"--max-windows must be at least 1 (or left out for all windows), got {args.max_windows}")
    if args.json:
        check_writable(Path(args.json).expanduser(), "--json", folder=False)
    spec = resolve_source(args.data, "eval", "--data")
    device = pick_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model, args.tokenizer, args.dtype, device)
    check_seqlen(args.seqlen, model)
    bos = resolve_bos(args.bos, model_type_of(model), tokenizer, "--bos")
    windows = evaluation_windows(spec, tokenizer, args.seqlen, args.max_windows, model.config.vocab_size, bos=bos)
    result = perplexity(model, windows, args.batch_size, device, progress=not args.no_progress, label=args.model)
    result.update(model=model_location(args.model), data=spec, dtype=args.dtype,
                  decoder_sparsity=decoder_sparsity(model), bos=bos.record(), **source_record(model))
    if args.json:
        params = {k: v for k, v in vars(args).items() if k not in ("command", "verbose")}
        result["provenance"] = build_record(job=JOB_NAME, params=params, seed=None,
                                            wall_seconds=time.perf_counter() - start,
                                            extra={"command": ["iobs", *argv], "device": str(device),
                                                   "bos": bos.record()},
                                            inputs=[model_location(args.model), spec.get("path") or spec["kind"]],
                                            outputs=[args.json])
        atomic_write_json(Path(args.json).expanduser(), result)
    print(summary_line(result, spec, time.perf_counter() - start))
    return result


def data_label(spec: dict) -> str:
    """'wikitext2:test' for a hub text, the path (and ':SPLIT' for a folder) for a local one."""
    if not spec.get("path"):
        return f"{spec['kind']}:{spec['split']}"
    return f"{spec['path']}:{spec['split']}" if Path(spec["path"]).is_dir() else spec["path"]


def summary_line(result: dict, spec: dict, seconds: float) -> str:
    """'iobs: perplexity 27.6512 on wikitext2:test (141 windows x 2048, decoder sparsity 50.0%, 63 s)'; windows
    that begin with BOS read '141 windows x 2048 from BOS'."""
    start = " from BOS" if result.get("bos", {}).get("prepend") else ""
    return (f"iobs: perplexity {result['perplexity']:.4f} on {data_label(spec)} ({result['windows']} windows x "
            f"{result['seqlen']}{start}, decoder sparsity {100 * result['decoder_sparsity']:.1f}%, {seconds:.0f} s)")
