"""Coarse jobs of the default DAG (iterative.granularity: chain): work that per-artifact jobs would repeat is done
once, in one process.

- oneshot_group: one model, one method, every sparsity, each pruned model evaluated in process.
- iterative_chain: every round of one variant (one sparsity; every sparsity for a sparsity-free variant, dense_ft,
  whose dense states do not depend on it: registry.sparsity_free_variants), each round's sparse model evaluated in
  process. Round 1 of every variant is one-shot SparseGPT (the projection of the dense model with batch 0): it is
  read from the oneshot_group job's artifacts, not recomputed. The last round takes no gradient steps
  (iobs.iterative.rounds.run_rounds takes them lazily).
  A killed chain resumes from its last finished round: a checkpoint folder (params.checkpoint, not an output, so
  Snakemake keeps it across --rerun-incomplete) holds that round's state, masks and written files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from iobs import registry
from iobs.atomic import atomic_write_json
from iobs.data.files import load_tensor
from iobs.errors import DataError
from iobs.iterative.rounds import History, current_masks, run_rounds, variant
from iobs.iterative.steps import StepConfig
from iobs.models.bos import job_bos_policy
from iobs.models.load import load_model, load_tokenizer, quiet_progress_bars
from iobs.pipeline.eval import score_streams
from iobs.pipeline.runner import JobContext
from iobs.prune.driver import prune_model, prunable_weight_copies, restore_weights
from iobs.prune.save import load_masks, load_masks_and_support, save_masks, save_pruned_model

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "iobs-chain-checkpoint/2"


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _eval_setup(ctx: JobContext, model, source):
    p = ctx.params["eval"]  # seqlen, max_windows, eval_batch_size, streams (labels), bos, bos_key
    key = ctx.params.get("model_key")
    streams = _list(ctx.input["streams"])
    if len(streams) != len(p["streams"]):
        raise DataError(f"job {ctx.name}: {len(streams)} stream files for {len(p['streams'])} stream labels")
    bos = job_bos_policy(p.get("bos", "auto"), model, lambda: load_tokenizer(source, key=key),
                         p.get("bos_key", "bos"))

    def score(m, labels: dict, label: str) -> dict:
        home = next(m.parameters()).device
        m.to(ctx.device)
        record = score_streams(m, streams, p["streams"], bos, labels=labels, source=label,
                               dtype=ctx.params.get("dtype", "float32"), seqlen=int(p.get("seqlen", 256)),
                               max_windows=p.get("max_windows"), batch_size=int(p.get("eval_batch_size", 8)),
                               device=ctx.device)
        m.to(home)
        return record
    return score


def _dense(ctx: JobContext):
    source = ctx.input.get("model") or ctx.params["model"]
    key = None if ctx.input.get("model") else ctx.params.get("model_key")
    return source, key


def oneshot_group(ctx: JobContext) -> dict:
    """One-shot pruning of one model with one method at every sparsity, each evaluated in process.

    inputs: windows (calibration batch 0), streams (eval streams), model (optional: a directory made here).
    outputs: models, metrics, evals: lists in the order of params.sparsities (round0/model, round0/metrics.json and
             the round-0 perplexity.json of each).
    params: method, sparsities, options, batch_size, model, model_key, dtype, labels (model), eval (a dict:
            streams, seqlen, max_windows, eval_batch_size, bos, bos_key).
    """
    quiet_progress_bars()
    p = ctx.params
    source, key = _dense(ctx)
    windows = load_tensor(ctx.input["windows"], "calibration windows")
    outputs = {k: _list(ctx.output[k]) for k in ("models", "metrics", "evals")}
    summary = {}
    # The model is loaded once (a GGUF file takes ~25 s to dequantise): pruning changes only the decoder layers'
    # Linear weights, so a CPU copy of those restores the dense model between sparsities.
    model = load_model(source, p.get("dtype", "float32"), "cpu", key=key)
    tokenizer = load_tokenizer(source, key=key)
    score = _eval_setup(ctx, model, source)
    dense_weights = prunable_weight_copies(model) if len(p["sparsities"]) > 1 else None
    for i, sparsity in enumerate(p["sparsities"]):
        if i:
            restore_weights(model, dense_weights)
        report = prune_model(model, windows, p["method"], sparsity, options=p.get("options") or {},
                             batch_size=int(p.get("batch_size", 8)), device=ctx.device, keep_masks=True,
                             progress=False)
        save_pruned_model(model, outputs["models"][i], masks=report.masks, tokenizer=tokenizer)
        metrics = report.to_dict()
        atomic_write_json(outputs["metrics"][i], metrics)
        labels = {"model": p["labels"]["model"], "method": p["method"], "sparsity": sparsity, "round": 0}
        atomic_write_json(outputs["evals"][i], score(model, labels, str(outputs["models"][i])))
        log.info("%s %s: total sparsity %.4f in %.1f s", p["method"], sparsity, report.total_sparsity,
                 report.total_seconds)
        summary[sparsity] = {k: metrics[k] for k in ("total_sparsity", "total_seconds")}
    return {"pruning": summary}


# ---- chains ---------------------------------------------------------------------------------------------------


def _fingerprint(ctx: JobContext) -> str:
    payload = {"params": {k: v for k, v in ctx.params.items() if k != "checkpoint"},
               "inputs": {k: _list(v) for k, v in sorted(ctx.input.items())}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class Checkpoint:
    """The end of the chain's last finished round: manifest.json (written last), state_r{r}/ and copies of the
    files the chain has written (outputs, which Snakemake removes when a job fails). The masks of rounds r and 1
    that the next round needs are read back from those outputs: nothing is packed twice, and each output is
    copied once, at the first checkpoint after it was written."""

    def __init__(self, folder, fingerprint: str):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.copies: dict[str, str] = {}  # output path -> name of its copy under files/, made in this job run

    def load(self) -> dict | None:
        manifest = self.folder / "manifest.json"
        if not manifest.is_file():
            return None
        try:
            record = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            return None
        if record.get("format") != CHECKPOINT_FORMAT or record.get("fingerprint") != self.fingerprint:
            log.info("checkpoint %s is from other params or inputs (or an older format): starting over",
                     self.folder)
            return None
        return record

    def save(self, round_index: int, state, tokenizer, mask_files: dict[str, dict[str, str]],
             files: list[str]) -> None:
        """mask_files: {sparsity: {"previous": path, "first": path}}, the masks files (among `files`) of the
        round just finished and of round 1."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"state_r{round_index}"
        save_pruned_model(state, self.folder / name, tokenizer=tokenizer)
        (self.folder / "files").mkdir(exist_ok=True)
        for path in files:  # every output is written once per job run, so a copy made earlier stays valid
            if str(path) not in self.copies:
                copy = hashlib.sha1(str(path).encode()).hexdigest()
                shutil.copyfile(path, self.folder / "files" / copy)
                self.copies[str(path)] = copy
        atomic_write_json(self.folder / "manifest.json", {
            "format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "round": round_index, "state": name,
            "histories": mask_files, "files": {str(path): self.copies[str(path)] for path in files}})
        for old in self.folder.iterdir():  # earlier rounds' states (and an older format's mask files)
            if old.name.startswith(("state_r", "r")) and old.name != name:
                shutil.rmtree(old) if old.is_dir() else old.unlink()

    def restore(self, record: dict, dtype: str):
        for dest, copy in record["files"].items():
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.folder / "files" / copy, dest)
            self.copies[dest] = copy
        state = load_model(self.folder / record["state"], dtype, "cpu")
        histories = {}
        for sparsity, paths in record["histories"].items():
            prev, prev_support = load_masks_and_support(paths["previous"])
            first, first_support = load_masks_and_support(paths["first"])
            histories[sparsity] = History(previous_masks=prev, previous_support=prev_support, first_masks=first,
                                          first_support=first_support)
        return state, histories

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def iterative_chain(ctx: JobContext) -> dict:
    """Rounds 1..T of one variant, every round's sparse model evaluated in process.

    inputs: round1_models, round1_metrics, round1_evals (the one-shot solver's round-0 artifacts, per sparsity);
            windows (round r's calibration batch at index r-1); streams; model (optional dense directory);
            dense_eval (sparsity-free variants: the dense model's evaluation, the dense reference of round 1).
    outputs: metrics, masks, evals (per sparsity, then per round: index s * T + r - 1); dense_evals (sparsity-free
             variants: the dense reference of every (sparsity, round), whose state is shared by the sparsities,
             labelled registry.dense_reference(variant), dense_ft_dense); models (the last round's sparse model per
             sparsity).
    params: variant, rounds, sparsities, solver, options, steps, seed, batch_size, checkpoint (folder), labels
            (model), model, model_key, dtype, eval (as oneshot_group's).
    """
    quiet_progress_bars()
    p = ctx.params
    schedule = variant(p["variant"])
    rounds, sparsities = int(p["rounds"]), list(p["sparsities"])
    dtype = p.get("dtype", "float32")
    out = {k: _list(ctx.output[k]) for k in ("metrics", "masks", "evals", "models")}
    dense_evals = _list(ctx.output["dense_evals"]) if "dense_evals" in ctx.output else None
    windows = _list(ctx.input["windows"])
    batches: dict[str, object] = {}

    def batch_for(r: int):
        path = windows[r - 1]
        if path not in batches:
            batches[path] = load_tensor(path, "calibration windows")
        return batches[path]

    def at(sparsity: str, r: int) -> int:
        return sparsities.index(sparsity) * rounds + r - 1

    source, key = _dense(ctx)
    tokenizer = load_tokenizer(source, key=key)
    labels = {"model": p["labels"]["model"]}
    reference = registry.dense_reference(p["variant"])  # the method name of its dense states (dense_ft_dense)
    written: list[str] = []

    def write_round1() -> tuple[object, dict[str, History]]:
        """Round 1 = one-shot projection of the dense model with batch 0: copied from the one-shot artifacts."""
        histories, state = {}, None
        for i, sparsity in enumerate(sparsities):
            oneshot = load_model(_list(ctx.input["round1_models"])[i], dtype, "cpu")
            masks = load_masks(Path(_list(ctx.input["round1_models"])[i]) / "masks.pt")
            support = current_masks(oneshot, masks)
            histories[sparsity] = History().after(_Result(masks, support))
            projection = json.loads(Path(_list(ctx.input["round1_metrics"])[i]).read_text())
            atomic_write_json(out["metrics"][at(sparsity, 1)], {
                "variant": p["variant"], "round": 1, "sparsity": sparsity, "solver": p["solver"],
                "projection": projection, "step_losses": [], "dynamics": {},
                "seconds": {"projection": float(projection.get("total_seconds", 0.0)), "steps": 0.0},
                "round1_from": str(_list(ctx.input["round1_models"])[i])})
            save_masks(masks, out["masks"][at(sparsity, 1)], support=support)
            record = json.loads(Path(_list(ctx.input["round1_evals"])[i]).read_text())
            record["labels"] = {**labels, "method": p["variant"], "sparsity": sparsity, "round": 1}
            atomic_write_json(out["evals"][at(sparsity, 1)], record)
            written.extend([out["metrics"][at(sparsity, 1)], out["masks"][at(sparsity, 1)],
                            out["evals"][at(sparsity, 1)]])
            if dense_evals is not None:
                dense = json.loads(Path(ctx.input["dense_eval"]).read_text())
                dense["labels"] = {**labels, "method": reference, "sparsity": sparsity, "round": 1}
                atomic_write_json(dense_evals[at(sparsity, 1)], dense)
                written.append(dense_evals[at(sparsity, 1)])
            if schedule.carry_projection:
                state = oneshot
        if state is None:  # a sparsity-free variant (dense_ft) continues from the dense model
            state = load_model(source, dtype, "cpu", key=key)
        return state, histories

    checkpoint = Checkpoint(p["checkpoint"], _fingerprint(ctx))
    record = checkpoint.load()
    if record is not None and record["round"] < rounds:
        state, histories = checkpoint.restore(record, dtype)
        written += list(record["files"])
        first_round = record["round"] + 1
        log.info("resuming %s after round %d (checkpoint %s)", p["variant"], record["round"], checkpoint.folder)
    else:
        state, histories = write_round1()
        first_round = 2
    score = _eval_setup(ctx, state, source)

    def on_sparse(r, sparsity, model, masks):
        i = at(sparsity, r)
        if r == rounds:
            save_pruned_model(model, out["models"][sparsities.index(sparsity)], masks=masks, tokenizer=tokenizer)
        atomic_write_json(out["evals"][i], score(model, {**labels, "method": p["variant"], "sparsity": sparsity,
                                                         "round": r}, f"{p['variant']} round {r}"))

    def on_round(r, results, histories_after):
        dense_record = None
        if dense_evals is not None:  # the dense reference of round r: the variant's state after r-1 blocks of steps
            dense_record = score(state, {**labels, "method": reference, "sparsity": None, "round": r},
                                 f"{p['variant']} state before round {r}")
        for sparsity, result in results.items():
            i = at(sparsity, r)
            save_masks(result.masks, out["masks"][i], support=result.support)
            atomic_write_json(out["metrics"][i], {
                "variant": p["variant"], "round": r, "sparsity": sparsity, "solver": p["solver"],
                "projection": result.projection.to_dict() if result.projection else None,
                "step_losses": result.step_losses, "dynamics": result.dynamics, "seconds": result.seconds})
            written.extend([out["metrics"][i], out["masks"][i], out["evals"][i]])
            if dense_record is not None:
                atomic_write_json(dense_evals[i], {**dense_record, "labels": {**dense_record["labels"],
                                                                              "sparsity": sparsity}})
                written.append(dense_evals[i])
            changed = result.dynamics.get("changed_since_previous", {}).get("total")
            log.info("%s %s round %d: %d steps before it, mask changed since previous round: %s", p["variant"],
                     sparsity, r, len(result.step_losses), changed)
        if r < rounds:
            mask_files = {sparsity: {"previous": out["masks"][at(sparsity, r)], "first": out["masks"][at(sparsity, 1)]}
                          for sparsity in histories_after}
            checkpoint.save(r, state, tokenizer, mask_files, written)

    run_rounds(state, batch_for, schedule, rounds=rounds, solver=p["solver"], sparsities=sparsities,
               steps=StepConfig(**p["steps"]), solver_options=p.get("options") or {}, seed=int(p.get("seed", 0)),
               first_round=first_round, histories=histories, on_round=on_round, on_sparse=on_sparse,
               device=ctx.device, batch_size=int(p.get("batch_size", 8)))
    if rounds == 1:  # nothing ran: the last (= first) round's model is the one-shot model
        for i, sparsity in enumerate(sparsities):
            shutil.copytree(_list(ctx.input["round1_models"])[i], out["models"][i], dirs_exist_ok=True)
    checkpoint.remove()
    return {"chain": {"rounds": rounds, "resumed_after": first_round - 1 if first_round > 2 else None}}


class _Result:
    """The two fields of a RoundResult that History.after reads."""

    def __init__(self, masks, support):
        self.masks, self.support = masks, support
