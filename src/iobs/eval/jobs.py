"""Job function (see iobs.jobs) that measures the perplexity of one model on one token stream."""

from __future__ import annotations

from iobs.data.streams import load_stream
from iobs.data.windows import eval_windows
from iobs.errors import DataError
from iobs.eval.perplexity import perplexity
from iobs.jobs import JobContext
from iobs.models.load import load_model, quiet_progress_bars
from iobs.provenance import atomic_write_json


def evaluate_perplexity(ctx: JobContext) -> dict:
    """Perplexity per the SparseGPT protocol on non-overlapping windows of a stream (iobs.eval.perplexity).

    inputs: model (directory; or param model = a hub id or path), tokens (.pt stream made with the model's tokenizer).
    outputs: metrics (JSON: perplexity, nll, tokens, windows, seqlen, seconds, plus the model, split and dtype).
    params: seqlen (default 256; the paper's models: 2048), max_windows (null = the whole stream; default null),
            batch_size (default 8), dtype (float32 | bfloat16 | float16, default float32), device (default cpu),
            split (a label copied into the metrics, e.g. "valid"), model_key (config key named in error messages).
    """
    quiet_progress_bars()
    p = ctx.params
    source = ctx.input.get("model") or p.get("model")
    if not source:
        raise DataError(f"job {ctx.name} needs a model: give a 'model' input directory or param")
    model = load_model(source, p.get("dtype", "float32"), p.get("device", "cpu"), key=p.get("model_key", "model"))
    windows = eval_windows(load_stream(ctx.input["tokens"]), int(p.get("seqlen", 256)), p.get("max_windows"))
    result = perplexity(model, windows, int(p.get("batch_size", 8)), p.get("device", "cpu"))
    result.update(model=str(source), split=p.get("split"), dtype=p.get("dtype", "float32"))
    atomic_write_json(ctx.out("metrics"), result)
    return {"perplexity": result}


def evaluate_model(ctx: JobContext) -> dict:
    """Perplexity of one model on every configured eval stream, loading the model once (iobs.eval.perplexity).

    inputs: model (directory; or param model = a hub id or path), streams (list of .pt streams, same order as the
            streams param).
    outputs: metrics (JSON: {"labels": params.labels, "model": ..., "results": [{eval_set, split, perplexity, nll,
             tokens, windows, seqlen, seconds}, ...]}).
    params: streams (list of {eval_set, split}), labels (model, method, sparsity, round: copied into the JSON),
            seqlen, max_windows, batch_size, dtype, model_key.
    """
    quiet_progress_bars()
    p = ctx.params
    source = ctx.input.get("model") or p.get("model")
    if not source:
        raise DataError(f"job {ctx.name} needs a model: give a 'model' input directory or param")
    streams = ctx.input["streams"] if isinstance(ctx.input["streams"], list) else [ctx.input["streams"]]
    if len(streams) != len(p["streams"]):
        raise DataError(f"job {ctx.name}: {len(streams)} stream files for {len(p['streams'])} stream labels")
    model = load_model(source, p.get("dtype", "float32"), ctx.device, key=p.get("model_key"))
    results = []
    for path, names in zip(streams, p["streams"]):
        windows = eval_windows(load_stream(path), int(p.get("seqlen", 256)), p.get("max_windows"))
        result = perplexity(model, windows, int(p.get("batch_size", 8)), ctx.device)
        results.append({**names, **result})
    record = {"labels": p.get("labels", {}), "model": str(source), "dtype": p.get("dtype", "float32"),
              "results": results}
    atomic_write_json(ctx.out("metrics"), record)
    return {"perplexity": {f"{r['eval_set']}-{r['split']}": r["perplexity"] for r in results}}
