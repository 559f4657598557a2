"""The report's first step: tables gathered from the pipeline's JSON records (evaluations, pruning metrics, MMLU).

The records arrive as paths, the pruning metrics keyed by (model, method, sparsity, round) since their files do not
name their model; where they lie in a results folder is iobs.pipeline.layout's business, not this module's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from iobs.errors import DataError

# bos: the window policy the perplexity was measured under ("bos": every window began with BOS, "none": the
# reference windows; see iobs.data.bos)
PRUNING_COLUMNS = ["model", "method", "sparsity", "round", "eval_set", "split", "perplexity", "seconds",
                   "eval_tokens", "eval_seconds", "bos"]
MMLU_COLUMNS = ["model", "method", "sparsity", "round", "kind", "task", "acc", "acc_stderr", "n", "bos"]


def read_record(path: str | Path, job: str = "the job that writes it") -> dict:
    """A JSON record; a missing or torn file is one DataError line that says which job remakes it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path} ({type(err).__name__}): delete it and rerun {job}") from None


def prune_seconds(metrics: dict) -> float:
    """Wall time of the job that made a model: one-shot total, or a round's projection + gradient steps."""
    if "total_seconds" in metrics:
        return float(metrics["total_seconds"])
    return float(sum(metrics.get("seconds", {}).values()))


def pruning_frame(eval_paths, prune_metrics=None) -> pd.DataFrame:
    """One row per (evaluated model, eval set, split): labels, perplexity, and the pruning job's seconds.

    eval_paths: perplexity.json files of the evaluate job ({"labels": {...}, "results": [{eval_set, split,
    perplexity, tokens, seconds, ...}]}); prune_metrics: {(model, method, sparsity, round): metrics.json of the job
    that made that model}.
    """
    seconds = {key: prune_seconds(read_record(path)) for key, path in (prune_metrics or {}).items()}
    rows = []
    for path in eval_paths:
        record = read_record(path)
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


def mmlu_frame(paths) -> pd.DataFrame:
    """One row per (evaluated model, average | group | task) from the mmlu.json records."""
    rows = []
    for path in paths:
        record = read_record(path, "its mmlu job")
        labels = record.get("labels")
        if not labels or "average" not in record:
            raise DataError(f"{path} is not an MMLU record: rerun its mmlu job")
        base = {k: labels[k] for k in ("model", "method", "sparsity")} | {"round": int(labels["round"])}
        bos = record.get("bos", {}).get("label", "unknown")  # a record from before the window policy
        rows.append({**base, "kind": "average", "task": "+".join(record.get("tasks_requested", [])),
                     "acc": record["average"]["acc"], "acc_stderr": None, "n": record["average"]["n"], "bos": bos})
        rows += [{**base, "kind": "group", "task": name, "acc": g["acc"], "acc_stderr": g.get("acc_stderr"),
                  "n": None, "bos": bos} for name, g in record.get("groups", {}).items()]
        rows += [{**base, "kind": "task", "task": name, "acc": t["acc"], "acc_stderr": t.get("acc_stderr"),
                  "n": t["n"], "bos": bos} for name, t in record.get("tasks", {}).items()]
    frame = pd.DataFrame(rows, columns=MMLU_COLUMNS)
    return frame.sort_values(["model", "method", "sparsity", "round", "kind", "task"], ignore_index=True)
