"""Mask dynamics of the I-OBS rounds and their controls, from each round's metrics.json (written by the round and
chain jobs of iobs.pipeline)."""

from __future__ import annotations

import math

import pandas as pd

from iobs.errors import DataError
from iobs.report.records import read_record

TOTAL = "total"  # the layer label of the whole-model row
DYNAMICS_COLUMNS = ["model", "variant", "sparsity", "round", "layer", "changed_since_previous",
                    "changed_since_first", "support_changed_since_previous", "support_changed_since_first",
                    "regrown", "regrowth_ratio_mean", "regrowth_ratio_median"]
_CHANGES = ["changed_since_previous", "changed_since_first", "support_changed_since_previous",
            "support_changed_since_first"]


def _number(value) -> float:
    return math.nan if value is None else float(value)


def dynamics_rows(model: str, metrics: dict) -> list[dict]:
    """Rows of one round: the whole model (layer "total", with the regrowth statistics) and one per Linear.

    Round 1 has no earlier mask, hence no rows. metrics: {"variant", "round", "sparsity", "dynamics":
    {"changed_since_previous": {"total", "per_layer"}, "changed_since_first": {...}, "regrowth": {...}}}, plus
    "support_changed_since_*" (same layout: changes of weight != 0) from rounds whose masks files keep the support.
    """
    dynamics = metrics.get("dynamics") or {}
    if not dynamics.get("changed_since_previous"):
        return []
    changes = {key: dynamics.get(key) or {"total": None, "per_layer": {}} for key in _CHANGES}
    regrowth = dynamics.get("regrowth") or {}
    labels = {"model": model, "variant": metrics["variant"], "sparsity": str(metrics["sparsity"]),
              "round": int(metrics["round"])}
    rows = [{**labels, "layer": TOTAL, **{key: _number(change["total"]) for key, change in changes.items()},
             "regrown": _number(regrowth.get("regrown")),
             "regrowth_ratio_mean": _number(regrowth.get("ratio_mean")),
             "regrowth_ratio_median": _number(regrowth.get("ratio_median"))}]
    for layer in changes["changed_since_previous"]["per_layer"]:
        rows.append({**labels, "layer": layer,
                     **{key: _number(change["per_layer"].get(layer)) for key, change in changes.items()}})
    return rows


def dynamics_table(round_metrics) -> pd.DataFrame:
    """One row per (model, variant, sparsity, round >= 2, layer) from the rounds' metrics.json files, given as
    {(model, variant, sparsity, round): path} (iobs.pipeline.layout.by_round_key keys a run's files). Fractions
    are of mask positions (0..1)."""
    rows = []
    for (model, variant, sparsity, round_index), path in round_metrics.items():
        metrics = read_record(path)
        if "variant" not in metrics:
            continue  # a one-shot job's metrics: no rounds, no dynamics
        if (metrics["variant"], str(metrics["sparsity"]), int(metrics["round"])) != (variant, sparsity, round_index):
            raise DataError(f"{path} describes {metrics['variant']} {metrics['sparsity']} round {metrics['round']}, "
                            "not what its path says: delete it and rerun its iterative_round job")
        rows += dynamics_rows(model, metrics)
    frame = pd.DataFrame(rows, columns=DYNAMICS_COLUMNS)
    is_total = frame["layer"] != TOTAL  # whole-model row first within each round
    return (frame.assign(_order=is_total).sort_values(["model", "variant", "sparsity", "round", "_order", "layer"])
            .drop(columns="_order").reset_index(drop=True))
