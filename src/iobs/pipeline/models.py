"""Job of rule pretrain (workflow/rules/models.smk): one tiny model pretrained here."""

from __future__ import annotations

from dataclasses import fields

from iobs.atomic import atomic_write_json
from iobs.data.streams import load_stream
from iobs.models.load import load_tokenizer, quiet_progress_bars
from iobs.models.pretrain import TrainSettings, dims_for, pretrain, save_model_dir
from iobs.pipeline.runner import JobContext

_SETTINGS = {f.name for f in fields(TrainSettings)}


def pretrain_tiny(ctx: JobContext) -> dict:
    """Pretrain one tiny model of a family on the train stream, report its valid perplexity (iobs.models.pretrain).

    inputs: tokenizer (directory), train (.pt stream), valid (.pt stream, optional).
    outputs: model (directory: safetensors weights, config and the tokenizer), metrics (JSON: loss curve, valid
             perplexity, uniform baseline, params, steps, seconds).
    params: family (opt | llama | phi), dims (optional overrides of pretrain.DEFAULT_DIMS[family], e.g.
            {hidden: 128}; vocab_size is the tokenizer's), valid_max_windows (default 64), and any TrainSettings
            field, top-level or inside a `pretrain` mapping (the config's models.<name>.pretrain): steps,
            seq_len, batch, lr, min_lr_ratio, warmup_steps, weight_decay, beta2, grad_clip, log_every,
            seed.
    """
    quiet_progress_bars()
    p = ctx.params
    tok = load_tokenizer(ctx.input["tokenizer"], key="tokenizer input")
    settings = TrainSettings(**{k: v for k, v in {**p, **(p.get("pretrain") or {})}.items() if k in _SETTINGS})
    dims = dims_for(p["family"], len(tok), p.get("dims"))
    valid = load_stream(ctx.input["valid"]) if ctx.input.get("valid") else None
    model, metrics = pretrain(p["family"], dims, load_stream(ctx.input["train"]), settings, valid,
                              p.get("valid_max_windows", 64))
    save_model_dir(model, tok, ctx.out("model"))
    atomic_write_json(ctx.out("metrics"), metrics)
    summary = {k: metrics[k] for k in ("params", "steps", "seconds", "uniform_perplexity")}
    if "valid" in metrics:
        summary["valid_perplexity"] = metrics["valid"]["perplexity"]
    return {"pretrain": summary}
