"""Job of rule evaluate (workflow/rules/eval.smk): the perplexity of one model on every configured token stream."""

from __future__ import annotations

from iobs.atomic import atomic_write_json
from iobs.data.streams import load_stream
from iobs.errors import DataError
from iobs.eval.perplexity import stream_perplexities
from iobs.models.bos import job_bos_policy
from iobs.models.gguf import source_record
from iobs.models.load import load_model, load_tokenizer, quiet_progress_bars
from iobs.pipeline.runner import JobContext


def evaluate_model(ctx: JobContext) -> dict:
    """Perplexity of one model on every configured eval stream, loading the model once (iobs.eval.perplexity).

    inputs: model (directory; or param model = a hub id or path), streams (list of .pt streams, same order as the
            streams param).
    outputs: metrics (JSON: {"labels": params.labels, "model": ..., "results": [{eval_set, split, perplexity, nll,
             tokens, windows, seqlen, seconds}, ...]}).
    params: streams (list of {eval_set, split}), labels (model, method, sparsity, round: copied into the JSON),
            seqlen, max_windows, batch_size, dtype, model_key, bos (window policy auto | always | never, default
            auto: decided from the model's type and tokenizer, see iobs.data.bos; recorded as "bos" in the JSON),
            bos_key (its config key, for messages).
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
    bos = job_bos_policy(p.get("bos", "auto"), model, lambda: load_tokenizer(source, key=p.get("model_key")),
                         p.get("bos_key", "bos"))
    record = score_streams(model, streams, p["streams"], bos, labels=p.get("labels", {}), source=str(source),
                           dtype=p.get("dtype", "float32"), seqlen=int(p.get("seqlen", 256)),
                           max_windows=p.get("max_windows"), batch_size=int(p.get("batch_size", 8)),
                           device=ctx.device)
    results = record["results"]
    atomic_write_json(ctx.out("metrics"), record)
    return {"perplexity": {f"{r['eval_set']}-{r['split']}": r["perplexity"] for r in results},
            "bos": bos.record()}


def score_streams(model, stream_paths, stream_names, bos, *, labels: dict, source: str, dtype: str = "float32",
                  seqlen: int = 256, max_windows=None, batch_size: int = 8, device="cpu") -> dict:
    """The evaluation record of a model in memory (the evaluate job's JSON): its perplexity on every stream.
    Jobs that make models score them here, in process, rather than in one more job per model."""
    streams = ((names, load_stream(path)) for path, names in zip(stream_paths, stream_names))  # one at a time
    results = stream_perplexities(model, streams, bos, seqlen, max_windows, batch_size, device, label=str(source))
    return {"labels": labels, "model": str(source), "dtype": dtype, "bos": bos.record(), "results": results,
            **source_record(model)}
