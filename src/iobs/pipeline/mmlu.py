"""Jobs of workflow/rules/mmlu.smk: the MMLU accuracy of one model, and the table over every evaluated model."""

from __future__ import annotations

from iobs.atomic import atomic_write_json, atomic_write_text
from iobs.errors import DataError
from iobs.eval.mmlu import MmluSettings, evaluate_mmlu, require_lm_eval
from iobs.models.load import load_model, load_tokenizer, quiet_progress_bars
from iobs.pipeline.runner import JobContext
from iobs.report.records import mmlu_frame


def mmlu_accuracy(ctx: JobContext) -> dict:
    """Few-shot accuracy of one model with lm-evaluation-harness (iobs.eval.mmlu).

    inputs: model (directory; or param model = a hub id or path; its tokenizer is read from the same place).
    outputs: metrics (JSON: labels, model, dtype, settings, average {acc, n}, groups {name: {acc, acc_stderr}},
             tasks {name: {acc, acc_stderr, n}}, lm_eval_version, seconds).
    params: settings (the config's mmlu section), labels (model, method, sparsity, round: copied into the JSON),
            dtype, model_key (config key named in error messages), bos (window policy setting, default auto:
            lm-eval's own BOS handling, see iobs.eval.mmlu.hflm_add_bos_token), bos_key.
    """
    require_lm_eval()  # fail before loading a 7B model
    quiet_progress_bars()
    p = ctx.params
    source = ctx.input.get("model") or p.get("model")
    if not source:
        raise DataError(f"job {ctx.name} needs a model: give a 'model' input directory or param")
    settings = MmluSettings.from_config(p.get("settings") or {})
    key = None if ctx.input.get("model") else p.get("model_key")
    model = load_model(source, p.get("dtype", "float32"), ctx.device, key=key)
    tokenizer = load_tokenizer(source, key=key)
    summary = evaluate_mmlu(model, tokenizer, settings, p.get("bos", "auto"), p.get("bos_key", "bos"))
    record = {"labels": p.get("labels", {}), "model": str(source), "dtype": p.get("dtype", "float32"),
              "settings": settings.to_dict(), **summary}
    atomic_write_json(ctx.out("metrics"), record)
    return {"mmlu": {"acc": summary["average"]["acc"], "n": summary["average"]["n"]}}


def mmlu_table(ctx: JobContext) -> dict:
    """inputs: results (list of mmlu.json). outputs: table (CSV with iobs.report.records.MMLU_COLUMNS)."""
    paths = ctx.input["results"] if isinstance(ctx.input["results"], list) else [ctx.input["results"]]
    frame = mmlu_frame(paths)
    atomic_write_text(ctx.out("table"), frame.to_csv(index=False))
    return {"rows": len(frame)}
