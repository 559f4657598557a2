"""Job of rule iterative_round (workflow/rules/rounds.smk): one round of I-OBS or of one of its controls."""

from __future__ import annotations

import logging

from iobs.atomic import atomic_write_json
from iobs.data.files import load_tensor
from iobs.iterative.rounds import History, run_rounds, variant
from iobs.iterative.steps import StepConfig
from iobs.models.gguf import source_record
from iobs.models.load import load_model, load_tokenizer
from iobs.pipeline.runner import JobContext
from iobs.prune.save import load_masks_and_support, save_masks, save_pruned_model

log = logging.getLogger(__name__)


def iterative_round(ctx: JobContext) -> dict:
    """Round r of a variant (iobs | sparsegpt_ft | dense_ft), from round r-1's state.

    inputs: windows (this round's calibration batch, Tensor[N, L] int64); state (round r-1's state directory;
            absent at r = 1, where the dense model comes from input `model` or param `model`); previous_masks and
            first_masks (masks.pt of rounds r-1 and 1, from r = 2 on).
    outputs: model (directory: the round's sparse model, evaluated), state (directory: what round r+1 starts
             from), masks (masks.pt, with the sparse model's nonzero pattern), metrics (JSON: projection report,
             step losses, mask dynamics, seconds).
    params: variant, round, solver, sparsity, options (solver options), steps (StepConfig fields), seed, model,
            model_key, dtype, batch_size.
    """
    p = ctx.params
    round_index = int(p["round"])
    source = ctx.input.get("state") or ctx.input.get("model") or p["model"]
    key = None if ctx.input.get("state") else p.get("model_key")
    state = load_model(source, p.get("dtype", "float32"), "cpu", key=key)
    tokenizer = load_tokenizer(source, key=key)
    history = History()
    if ctx.input.get("previous_masks"):
        history.previous_masks, history.previous_support = load_masks_and_support(ctx.input["previous_masks"])
        history.first_masks, history.first_support = history.previous_masks, history.previous_support
    if ctx.input.get("first_masks") and ctx.input["first_masks"] != ctx.input.get("previous_masks"):
        history.first_masks, history.first_support = load_masks_and_support(ctx.input["first_masks"])
    batch = load_tensor(ctx.input["windows"], "calibration windows")
    seen: dict = {}

    def save_sparse(r, sparsity, model, masks):
        save_pruned_model(model, ctx.out("model"), masks=masks, tokenizer=tokenizer)

    def keep_result(r, results, histories):
        seen["result"] = results[p["sparsity"]]

    def keep_steps(r, losses, seconds):
        seen["steps"] = (losses, seconds)

    # One round of the library's round loop: the state input took round r-1's steps already (the previous job
    # saved it after them), and this round's steps are taken here, since its state is the next job's input.
    run_rounds(state, lambda r: batch, variant(p["variant"]), rounds=round_index, solver=p["solver"],
               sparsities=p["sparsity"], steps=StepConfig(**p["steps"]), solver_options=p.get("options") or {},
               seed=int(p.get("seed", 0)), first_round=round_index, histories={p["sparsity"]: history},
               pending_steps=False, final_steps=True, on_round=keep_result, on_sparse=save_sparse,
               on_steps=keep_steps, device=ctx.device, batch_size=int(p.get("batch_size", 8)))
    result = seen["result"]
    result.step_losses, result.seconds["steps"] = seen["steps"]
    save_pruned_model(state, ctx.out("state"), tokenizer=tokenizer)
    save_masks(result.masks, ctx.out("masks"), support=result.support)
    metrics = {
        "variant": p["variant"], "round": round_index, "sparsity": p["sparsity"], "solver": p["solver"],
        "projection": result.projection.to_dict() if result.projection else None,
        "step_losses": result.step_losses, "dynamics": result.dynamics, "seconds": result.seconds,
    }
    atomic_write_json(ctx.out("metrics"), metrics)
    changed = result.dynamics.get("changed_since_previous", {}).get("total")
    log.info("%s round %d: %d steps, loss %s -> %s, mask changed since previous round: %s", p["variant"],
             round_index, len(result.step_losses), result.step_losses[:1], result.step_losses[-1:], changed)
    return {"round": {"seconds": result.seconds, "mask_changed_since_previous": changed}, **source_record(state)}
