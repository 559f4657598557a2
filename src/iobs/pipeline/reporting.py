"""Job of rule pruning_table (workflow/rules/eval.smk): results/tables/pruning.csv from every evaluation JSON."""

from __future__ import annotations

from iobs.atomic import atomic_write_text
from iobs.pipeline.layout import by_round_key
from iobs.pipeline.runner import JobContext
from iobs.report.records import pruning_frame


def pruning_table(ctx: JobContext) -> dict:
    """inputs: evals (list of eval JSONs), prune_metrics (list of metrics JSONs of the pruning jobs, in their round
    folders: the folder names the model). outputs: table (CSV with iobs.report.records.PRUNING_COLUMNS)."""
    evals = ctx.input["evals"]
    frame = pruning_frame(evals if isinstance(evals, list) else [evals],
                          by_round_key(ctx.input.get("prune_metrics") or []))
    atomic_write_text(ctx.out("table"), frame.to_csv(index=False))
    return {"rows": len(frame)}
