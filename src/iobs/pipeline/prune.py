"""Job of rule prune_oneshot (workflow/rules/rounds.smk): one-shot pruning with one method at one sparsity."""

from __future__ import annotations

import logging

from iobs.atomic import atomic_write_json
from iobs.data.files import load_tensor
from iobs.models.gguf import source_record
from iobs.models.load import load_model, load_tokenizer
from iobs.pipeline.runner import JobContext
from iobs.prune.driver import prune_model
from iobs.prune.save import save_pruned_model

log = logging.getLogger(__name__)


def load_dense(ctx: JobContext, key: str = "model"):
    """The model named by input `model` (a directory made here) or param `model` (hub id / local path)."""
    source = ctx.input.get(key) or ctx.params["model"]
    model = load_model(source, ctx.params.get("dtype", "float32"), "cpu", key=ctx.params.get("model_key"))
    tokenizer = load_tokenizer(source, key=ctx.params.get("model_key"))
    return model, tokenizer


def prune_oneshot(ctx: JobContext) -> dict:
    """Prune every Linear of the decoder layers with one method (SparseGPT protocol, layer-sequential).

    inputs: windows (calibration Tensor[N, L] int64), model (optional: a directory made by this pipeline).
    outputs: model (directory: the pruned model, save_pretrained, with masks.pt), metrics (JSON: per-Linear
             reconstruction loss and sparsity, total sparsity, seconds, peak memory).
    params: model (hub id or path when there is no model input), model_key, dtype, method, sparsity (label such as
            "0.5" or "2:4"), options (solver options), batch_size.
    The model stays on the CPU; one decoder layer at a time runs on the rule's device (resources: gpu).
    """
    p = ctx.params
    model, tokenizer = load_dense(ctx)
    windows = load_tensor(ctx.input["windows"], "calibration windows")
    report = prune_model(model, windows, p["method"], p["sparsity"], options=p.get("options") or {},
                         batch_size=int(p.get("batch_size", 8)), device=ctx.device, keep_masks=True,
                         progress=False)
    save_pruned_model(model, ctx.out("model"), masks=report.masks, tokenizer=tokenizer)
    metrics = report.to_dict()
    atomic_write_json(ctx.out("metrics"), metrics)
    log.info("%s %s: total sparsity %.4f in %.1f s", p["method"], p["sparsity"], report.total_sparsity,
             report.total_seconds)
    return {"pruning": {k: metrics[k] for k in ("method", "sparsity", "total_sparsity", "total_seconds",
                                                  "peak_memory_mb")}, **source_record(model)}
