"""Tables gathered from the pipeline's JSON artifacts (the notebooks draw from these)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from iobs.errors import DataError
from iobs.pipeline.runner import JobContext
from iobs.atomic import atomic_write_text

# bos: the window policy the perplexity was measured under ("bos": every window began with BOS, "none": the
# reference windows; see iobs.data.bos)
PRUNING_COLUMNS = ["model", "method", "sparsity", "round", "eval_set", "split", "perplexity", "seconds",
                   "eval_tokens", "eval_seconds", "bos"]


def _read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path} ({type(err).__name__}): delete it and rerun the job that writes it") \
            from None


def prune_seconds(metrics: dict) -> float:
    """Wall time of the job that made a model: one-shot total, or a round's projection + gradient steps."""
    if "total_seconds" in metrics:
        return float(metrics["total_seconds"])
    return float(sum(metrics.get("seconds", {}).values()))


def _metrics_key(path: str | Path) -> tuple:
    """(model, method, sparsity, round) from .../prune/{model}/{method}/{sparsity}/round{r}/metrics.json."""
    parts = Path(path).parts
    return parts[-5], parts[-4], parts[-3], int(parts[-2].removeprefix("round"))


def pruning_frame(eval_paths, prune_metric_paths=()) -> pd.DataFrame:
    """One row per (evaluated model, eval set, split): labels, perplexity, and the pruning job's seconds.

    eval_paths: perplexity.json files of the evaluate job ({"labels": {...}, "results": [{eval_set, split,
    perplexity, tokens, seconds, ...}]}); prune_metric_paths: metrics.json of the jobs that made the models.
    """
    seconds = {_metrics_key(p): prune_seconds(_read_json(p)) for p in prune_metric_paths}
    rows = []
    for path in eval_paths:
        record = _read_json(path)
        labels = record.get("labels")
        if not labels or "results" not in record:
            raise DataError(f"{path} is not an evaluation record: rerun its evaluate job")
        key = (labels["model"], labels["method"], labels["sparsity"], int(labels["round"]))
        for result in record["results"]:
            rows.append({**labels, "eval_set": result["eval_set"], "split": result["split"],
                         "perplexity": result["perplexity"], "seconds": seconds.get(key, 0.0),
                         "eval_tokens": result.get("tokens"), "eval_seconds": result.get("seconds"),
                         # records from before the window policy all used the reference windows
                         "bos": result.get("bos", "none")})
    frame = pd.DataFrame(rows, columns=PRUNING_COLUMNS)
    return frame.sort_values(["model", "method", "sparsity", "round", "eval_set", "split"], ignore_index=True)


def pruning_table(ctx: JobContext) -> dict:
    """Job: results/tables/pruning.csv from every evaluation JSON.

    inputs: evals (list of eval JSONs), prune_metrics (list of metrics JSONs of the pruning jobs).
    outputs: table (CSV).
    """
    evals = ctx.input["evals"]
    frame = pruning_frame(evals if isinstance(evals, list) else [evals], ctx.input.get("prune_metrics") or [])
    atomic_write_text(ctx.out("table"), frame.to_csv(index=False))
    return {"rows": len(frame)}
