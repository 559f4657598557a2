"""`iobs prune`: one-shot pruning (iobs.prune.driver.prune_model) or I-OBS rounds (iobs.iterative.rounds.run_rounds)
of one model, saved like the DAG's jobs save theirs (iobs.prune.save.save_pruned_model).

Layout of --out DIR (the folder is itself the pruned model: AutoModelForCausalLM.from_pretrained(DIR) loads it):
  config.json, model.safetensors, tokenizer files, masks.pt   the sparse model (I-OBS: the last round's, I-OBS(T))
  metrics.json       the pruning report (I-OBS: one entry per round)
  provenance.json    command, parameters, versions, git commit, wall time; written last, so its presence marks a
                     complete run
  rounds/round<r>/   with --save-every-round: every round's sparse model
Beside DIR, .DIR.lock is held (flock) while a run writes DIR; a second run into DIR is refused, and a run that finds
the lock free removes the temporaries (.DIR.*.tmp) of an earlier, killed one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from iobs.cli.common import load_model_and_tokenizer, model_location, pick_device
from iobs.cli.data import CalibrationSampler, check_seqlen, resolve_source
from iobs.cli.outputs import check_writable, exclusive_output
from iobs.cli.parser import solver_options, step_config
from iobs.data.bos import resolve_bos
from iobs.errors import IobsError
from iobs.iterative.rounds import run_rounds, variant
from iobs.models.bos import model_type_of
from iobs.models.families import decoder_layers
from iobs.models.gguf import source_record
from iobs.prune.driver import prunable_linears, prune_model
from iobs.prune.save import save_pruned_model
from iobs.targets import SparsitySpec, check_nm_fits
from iobs.atomic import atomic_write_json, remove_path, temporary_sibling
from iobs.provenance import write_provenance

JOB_NAME = "iobs prune"
METRICS_FILE = "metrics.json"
PROVENANCE_FILE = "provenance.json"
ROUNDS_DIR = "rounds"


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an earlier `iobs prune` result (the save swaps the whole folder)."""
    if out.exists() and not out.is_dir():
        raise IobsError(f"--out {out} is a file: give a folder path")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise IobsError(f"--out {out} already exists: pass --overwrite to replace it, or choose another folder")
    try:
        job = json.loads((out / PROVENANCE_FILE).read_text()).get("job")
    except (OSError, ValueError, AttributeError):
        job = None
    if job != JOB_NAME:
        raise IobsError(f"refusing to replace --out {out}: it holds no {PROVENANCE_FILE} of an `iobs prune` run; "
                        "remove it yourself or choose another folder")


@contextmanager
def staging_folder(out: Path, wanted: bool):
    """A temporary sibling of `out` for the per-round models (moved into out/rounds at the end); None if unwanted."""
    if not wanted:
        yield None
        return
    staging = temporary_sibling(out, ".rounds.tmp", directory=True)
    try:
        yield staging
    finally:
        remove_path(staging)


def check_nm_applies(model, spec: SparsitySpec) -> None:
    """Fail before the calibration pass if an N:M pattern does not tile some Linear's inputs."""
    if spec.is_nm:
        for layer in decoder_layers(model):
            for linear in prunable_linears(layer, "layer").values():
                check_nm_fits(linear.in_features, spec)


def run_oneshot(model, tokenizer, sampler: CalibrationSampler, spec: SparsitySpec, args, device, out: Path) -> dict:
    """Prune with args.method on the base calibration batch; save the model with its masks; the driver's report."""
    windows = sampler.batch(0)
    report = prune_model(model, windows, args.method, spec, options=solver_options(args), batch_size=args.batch_size,
                         device=device, keep_masks=True, progress=not args.no_progress)
    save_pruned_model(model, out, masks=report.masks, tokenizer=tokenizer)
    return report.to_dict()


def run_iobs(model, tokenizer, sampler: CalibrationSampler, spec: SparsitySpec, args, device, out: Path) -> dict:
    """Rounds 1..T of I-OBS (projection with args.solver, then gradient steps); saves I-OBS(T) and, if asked, every
    round. Round 1 uses the one-shot calibration batch, so I-OBS(1) is exactly one-shot SparseGPT (or OBC)."""
    steps = step_config(args)
    if device.type == "cuda":  # the gradient steps need the whole model on the device, not one layer at a time
        model.to(device)
    per_round = []
    with staging_folder(out, args.save_every_round) as staging, \
            tqdm(total=args.rounds, desc="I-OBS rounds", disable=args.no_progress, file=sys.stderr) as bar:

        def save_round(r, sparsity, sparse_model, masks):
            if staging is not None:
                save_pruned_model(sparse_model, staging / f"round{r}", masks=masks, tokenizer=tokenizer)

        def record(r, results, histories):
            result = results[spec.label]
            # The library's loop takes round r-1's steps at the start of round r (none after the last round): they
            # are reported with round r-1, whose steps they are.
            if per_round:
                per_round[-1]["step_losses"] = result.step_losses
                per_round[-1]["seconds"]["steps"] = result.seconds["steps"]
            per_round.append({"round": r, "projection": result.projection.to_dict(), "step_losses": [],
                              "dynamics": _totals(result.dynamics),
                              "seconds": {"projection": result.seconds["projection"], "steps": 0.0}})
            bar.update()

        history = run_rounds(model, lambda r: sampler.batch(r - 1 if args.batches == "fresh" else 0), variant("iobs"),
                             rounds=args.rounds, solver=args.solver, sparsities=spec.label, steps=steps,
                             solver_options=solver_options(args), seed=args.seed, on_sparse=save_round,
                             on_round=record, progress=not args.no_progress, device=device)[spec.label]
        save_pruned_model(model, out, masks=history.previous_masks, tokenizer=tokenizer)
        if staging is not None:
            os.replace(staging, out / ROUNDS_DIR)
    return {"method": "iobs", "solver": args.solver, "sparsity": spec.label, "rounds": per_round,
            "steps": asdict(steps), "batches": args.batches,
            "total_sparsity": per_round[-1]["projection"]["total_sparsity"],
            "total_seconds": sum(sum(r["seconds"].values()) for r in per_round)}


def _totals(dynamics: dict) -> dict:
    """Mask dynamics with changed fractions in total only (the per-Linear breakdown would swamp metrics.json)."""
    return {k: v["total"] if "changed_since" in k else v for k, v in dynamics.items()}


def prune_command(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run `iobs prune`; returns the metrics written to DIR/metrics.json."""
    start = time.perf_counter()
    spec = SparsitySpec.parse(args.sparsity)
    out = Path(args.out).expanduser()
    check_writable(out, "--out", folder=True)
    source = resolve_source(args.calibration, "calibration", "--calibration")
    device = pick_device(args.device)
    with exclusive_output(out):
        check_output_dir(out, args.overwrite)
        model, tokenizer = load_model_and_tokenizer(args.model, args.tokenizer, args.dtype, "cpu")
        check_seqlen(args.seqlen, model)
        check_nm_applies(model, spec)
        bos = resolve_bos(args.bos, model_type_of(model), tokenizer, "--bos")
        sampler = CalibrationSampler(source, tokenizer, args.samples, args.seqlen, args.seed,
                                     model.config.vocab_size, bos=bos)
        run = run_iobs if args.method == "iobs" else run_oneshot
        metrics = run(model, tokenizer, sampler, spec, args, device, out)
        metrics["calibration"] = sampler.describe()
        metrics["bos"] = bos.record()
        metrics["model"] = model_location(args.model)
        metrics.update(source_record(model))
        atomic_write_json(out / METRICS_FILE, metrics)
        params = {k: v for k, v in vars(args).items() if k not in ("command", "no_progress", "verbose")}
        seconds = time.perf_counter() - start
        write_provenance(out / PROVENANCE_FILE, job=JOB_NAME, params=params, seed=args.seed, wall_seconds=seconds,
                         extra={"command": ["iobs", *argv], "calibration": sampler.describe(), "bos": bos.record(),
                                "device": str(device),
                                "pruning": {k: metrics[k] for k in ("method", "sparsity", "total_sparsity")}},
                         inputs=[model_location(args.model), source.get("path") or source["kind"]],
                         outputs=[str(out)])
    print(summary_line(args, metrics, out, seconds))
    return metrics


def reconstruction_loss(report: dict) -> float:
    """The solver's layer-wise reconstruction loss summed over every pruned Linear of a PruneReport dict."""
    return sum(linear["loss"] for linear in report["linears"])


def summary_line(args: argparse.Namespace, metrics: dict, out: Path, seconds: float) -> str:
    """'iobs: pruned MODEL with METHOD to 50.0% -> DIR/ (reconstruction loss 1.2e-03, 41 s)'."""
    method = args.method if args.method != "iobs" else f"iobs ({args.rounds} rounds of {args.solver})"
    if args.method == "iobs":
        last = metrics["rounds"][-1]["projection"]
        losses = [loss for r in metrics["rounds"] for loss in r["step_losses"]]
        loss = f"reconstruction loss {reconstruction_loss(last):.3g} in round {args.rounds}" + \
            (f", last calibration loss {losses[-1]:.4g}" if losses else "")
    else:
        loss = f"reconstruction loss {reconstruction_loss(metrics):.3g}"
    target = "" if ":" not in metrics["sparsity"] else f" ({metrics['sparsity']})"
    return (f"iobs: pruned {args.model} with {method} to {100 * metrics['total_sparsity']:.1f}%{target} -> "
            f"{out}/ ({loss}, {seconds:.0f} s)")
