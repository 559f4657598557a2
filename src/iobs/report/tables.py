"""The language-model tables: the paper's LLM table, methods side by side, and the controls of issue 6.

Every table reports one split (test by default); the I-OBS and control rounds shown are the ones chosen on the
validation split (frames.best_rounds), so the test split never influences what is reported.
"""

from __future__ import annotations

import math

import pandas as pd

from iobs import registry
from iobs.report.frames import (DENSE_REFERENCE, ONESHOT_METHODS, Perplexities, eval_sets, sorted_sparsities,
                                window_policy)

# bos: the model's window policy (iobs.data.bos): "bos", "none", or "mixed" if its rows were measured under both
LLM_COLUMNS = ["model", "bos", "eval_set", "sparsity", "split", "dense", "sparsegpt", "iobs_3", "iobs_best",
               "iobs_best_round"]
METHODS_COLUMNS = ["model", "bos", "eval_set", "sparsity", "split", "dense", *ONESHOT_METHODS, "iobs_best",
                   "iobs_best_round"]
# Each "gap_closed_x" = (sparsegpt - x) / (sparsegpt - dense): the share of the gap pruning opened that x closes.
# NaN where a variant was not run; I-OBS last, after the controls it is compared with
ROUND_VARIANTS = (*(v for v in registry.variant_names() if v != "iobs"), "iobs")
CONTROL_METHODS = ("dense_ft_dense", *ROUND_VARIANTS)
CONTROLS_COLUMNS = ["model", "bos", "eval_set", "sparsity", "split", "dense", "dense_ft_dense", "sparsegpt",
                    *ROUND_VARIANTS, *(f"{v}_round" for v in ROUND_VARIANTS),
                    "gap", *(f"gap_closed_{m}" for m in CONTROL_METHODS), "share_explained_by_sparsegpt_ft",
                    "share_from_mask_reselection"]
# The README's headline table: one-shot methods beside I-OBS and both controls, per model, eval set and sparsity.
SUMMARY_COLUMNS = ["model", "eval_set", "sparsity", "split", "dense", *ONESHOT_METHODS, "sparsegpt_ft",
                   "dense_ft_dense", "iobs_3", "iobs_best", "iobs_best_round", "share_explained_by_sparsegpt_ft"]
SUMMARY_HEADERS = {"dense_ft_dense": "dense + ft", "sparsegpt_ft": "SparseGPT + masked ft", "iobs_3": "I-OBS(3)",
                   "iobs_best": "I-OBS(best)", "iobs_best_round": "best round",
                   "share_explained_by_sparsegpt_ft": "share of I-OBS's gain masked ft explains",
                   **{m: registry.SOLVERS[m].label.replace(" (one-shot)", "") for m in ONESHOT_METHODS}}


def _groups(frame: pd.DataFrame, methods, preferred_sets=None):
    """(model, eval set, sparsity) combinations where any of ``methods`` was evaluated, in a stable order."""
    rows = frame[frame["method"].isin(methods)]
    for model in sorted(rows["model"].unique()):
        for eval_set in eval_sets(rows, preferred_sets):
            sub = rows[(rows["model"] == model) & (rows["eval_set"] == eval_set)]
            for sparsity in sorted_sparsities(sub["sparsity"]):
                yield model, eval_set, sparsity


def _round_or_na(value: int | None):
    return pd.NA if value is None else value


def llm_table(frame: pd.DataFrame, ppl: Perplexities, split: str = "test",
              preferred_sets: list[str] | None = None) -> pd.DataFrame:
    """The paper's LLM table: per model, eval set and I-OBS sparsity, the ``split`` perplexity of the dense model,
    one-shot SparseGPT, I-OBS(3) (round 3; NaN with fewer rounds) and I-OBS at its best validation round."""
    rows = []
    for model, eval_set, sparsity in _groups(frame, ["iobs"], preferred_sets):
        rows.append({
            "model": model, "bos": window_policy(frame, model), "eval_set": eval_set, "sparsity": sparsity,
            "split": split, "dense": ppl.dense(model, eval_set, split),
            "sparsegpt": ppl.sparsegpt(model, sparsity, eval_set, split),
            "iobs_3": ppl.get(model, "iobs", sparsity, 3, eval_set, split),
            "iobs_best": ppl.at_best(model, "iobs", sparsity, eval_set, split),
            "iobs_best_round": _round_or_na(ppl.best_round(model, "iobs", sparsity)),
        })
    return pd.DataFrame(rows, columns=LLM_COLUMNS).astype({"iobs_best_round": "Int64"})


def methods_table(frame: pd.DataFrame, ppl: Perplexities, split: str = "test",
                  preferred_sets: list[str] | None = None) -> pd.DataFrame:
    """Per model, eval set and sparsity with a one-shot method: every one-shot method's ``split`` perplexity
    (NaN where not run), the dense model, and I-OBS at its best validation round where I-OBS ran at that sparsity."""
    rows = []
    for model, eval_set, sparsity in _groups(frame, ONESHOT_METHODS, preferred_sets):
        row = {"model": model, "bos": window_policy(frame, model), "eval_set": eval_set, "sparsity": sparsity,
               "split": split, "dense": ppl.dense(model, eval_set, split)}
        row.update({m: ppl.get(model, m, sparsity, 0, eval_set, split) for m in ONESHOT_METHODS})
        row["iobs_best"] = ppl.at_best(model, "iobs", sparsity, eval_set, split)
        row["iobs_best_round"] = _round_or_na(ppl.best_round(model, "iobs", sparsity))
        rows.append(row)
    return pd.DataFrame(rows, columns=METHODS_COLUMNS).astype({"iobs_best_round": "Int64"})


def gap_closed(sparsegpt: float, dense: float, value: float) -> float:
    """(sparsegpt - value) / (sparsegpt - dense); NaN when pruning opened no gap (sparsegpt <= dense)."""
    gap = sparsegpt - dense
    return (sparsegpt - value) / gap if gap > 0 else math.nan


def share_explained(sparsegpt: float, sparsegpt_ft: float, iobs: float) -> float:
    """The share of I-OBS's gain over SparseGPT that masked fine-tuning of the SparseGPT mask also achieves:
    (sparsegpt - sparsegpt_ft) / (sparsegpt - iobs). NaN when I-OBS does not gain (iobs >= sparsegpt) or a value
    is missing (controls_table also gives NaN when I-OBS's best round is 1, i.e. SparseGPT itself).
    Above 1: the control beats I-OBS; below 0: the control is worse than SparseGPT."""
    gain = sparsegpt - iobs
    return (sparsegpt - sparsegpt_ft) / gain if gain > 0 else math.nan


def reselection_share(sparsegpt_ft: float, fixed_mask: float, iobs: float) -> float:
    """Of I-OBS's edge over masked fine-tuning (sparsegpt_ft - iobs), the share that I-OBS with round 1's mask kept
    does not reach: (fixed_mask - iobs) / (sparsegpt_ft - iobs), the part owed to reselecting the mask. NaN when
    I-OBS has no edge or a value is missing; near 0: the edge comes from the unmasked steps and the correction."""
    edge = sparsegpt_ft - iobs
    return (fixed_mask - iobs) / edge if edge > 0 else math.nan


def controls_table(frame: pd.DataFrame, ppl: Perplexities, split: str = "test",
                   preferred_sets: list[str] | None = None) -> pd.DataFrame:
    """Issue 6: per model, eval set and I-OBS sparsity, the ``split`` perplexity of the dense model, the dense model
    after the same gradient steps as I-OBS (dense_ft's dense state at I-OBS's best validation round), one-shot
    SparseGPT, SparseGPT + masked fine-tuning, fine-tune-then-prune (dense_ft), I-OBS with round 1's mask kept
    (iobs_fixed_mask, NaN unless configured) and I-OBS (each at its best validation round), the pruning gap, the
    share of it each closes, and the share of I-OBS's gain that masked fine-tuning explains."""
    rows = []
    for model, eval_set, sparsity in _groups(frame, ROUND_VARIANTS, preferred_sets):
        row = {"model": model, "bos": window_policy(frame, model), "eval_set": eval_set, "sparsity": sparsity,
               "split": split, "dense": ppl.dense(model, eval_set, split),
               # the matching dense reference: as many step blocks as I-OBS's chosen round took
               "dense_ft_dense": ppl.at_best(model, "iobs", sparsity, eval_set, split, method=DENSE_REFERENCE),
               "sparsegpt": ppl.sparsegpt(model, sparsity, eval_set, split)}
        for variant in ROUND_VARIANTS:
            row[variant] = ppl.at_best(model, variant, sparsity, eval_set, split)
            row[f"{variant}_round"] = _round_or_na(ppl.best_round(model, variant, sparsity))
        row["gap"] = row["sparsegpt"] - row["dense"]
        for method in CONTROL_METHODS:
            row[f"gap_closed_{method}"] = gap_closed(row["sparsegpt"], row["dense"], row[method])
        # best round 1 = one-shot SparseGPT: any difference from round 0 is not a gain of iterating
        iterated = row["iobs_round"] is not pd.NA and row["iobs_round"] > 1
        row["share_explained_by_sparsegpt_ft"] = (
            share_explained(row["sparsegpt"], row["sparsegpt_ft"], row["iobs"]) if iterated else math.nan)
        row["share_from_mask_reselection"] = (
            reselection_share(row["sparsegpt_ft"], row["iobs_fixed_mask"], row["iobs"]) if iterated else math.nan)
        rows.append(row)
    rounds = {f"{v}_round": "Int64" for v in ROUND_VARIANTS}
    return pd.DataFrame(rows, columns=CONTROLS_COLUMNS).astype(rounds)


def summary_table(frame: pd.DataFrame, ppl: Perplexities, split: str = "test",
                  preferred_sets: list[str] | None = None) -> pd.DataFrame:
    """Per model, eval set and sparsity of the one-shot methods: the methods table's one-shot columns beside
    SparseGPT + masked ft, dense + ft, I-OBS(3) and I-OBS at its best validation round, and the share of I-OBS's
    gain that masked fine-tuning explains (the controls table's columns; NaN where I-OBS did not run there)."""
    methods = methods_table(frame, ppl, split, preferred_sets)
    controls = controls_table(frame, ppl, split, preferred_sets)
    key = ["model", "eval_set", "sparsity"]
    merged = methods.merge(controls[key + ["sparsegpt_ft", "dense_ft_dense", "share_explained_by_sparsegpt_ft"]],
                           on=key, how="left")
    merged["iobs_3"] = [ppl.get(m, "iobs", s, 3, e, split) for m, e, s in merged[key].itertuples(index=False)]
    return merged[SUMMARY_COLUMNS].reset_index(drop=True)


def summary_markdown(table: pd.DataFrame) -> str:
    """The summary table as Markdown (perplexities to 2 decimals, the share in percent, "-" where not run)."""
    shown = [c for c in SUMMARY_COLUMNS if c != "split" and (c in ("model", "eval_set", "sparsity")
                                                           or table[c].notna().any())]
    def cell(column: str, value) -> str:
        if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if column == "share_explained_by_sparsegpt_ft":
            return f"{value:.0%}"
        return f"{value:.2f}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(SUMMARY_HEADERS.get(c, c.replace("_", " ")) for c in shown) + " |",
             "| " + " | ".join("---" for _ in shown) + " |"]
    for row in table.itertuples(index=False):
        values = row._asdict()
        lines.append("| " + " | ".join(cell(c, values[c]) for c in shown) + " |")
    return "\n".join(lines) + "\n"


def _clause(row) -> str:
    where = f"at sparsity {row.sparsity} ({row.eval_set} {row.split})"
    sgpt, iobs, ft = row.sparsegpt, row.iobs, row.sparsegpt_ft
    if math.isnan(sgpt) or math.isnan(iobs):
        return f"{where}, SparseGPT or I-OBS was not evaluated"
    iobs_text = f"I-OBS (round {row.iobs_round})"
    if row.iobs_round == 1:
        return (f"{where}, I-OBS's best validation round is round 1, one-shot SparseGPT itself, so iterating gives "
                f"no gain for masked fine-tuning to explain (test {iobs:.2f} vs {sgpt:.2f})")
    if not iobs < sgpt:
        return (f"{where}, {iobs_text} does not improve on one-shot SparseGPT ({iobs:.2f} vs {sgpt:.2f}), "
                "so there is no gain for masked fine-tuning to explain")
    if math.isnan(ft):
        return (f"{where}, {iobs_text} improves SparseGPT from {sgpt:.2f} to {iobs:.2f}, but no "
                "masked-fine-tuning control was evaluated")
    share = share_explained(sgpt, ft, iobs)
    if share >= 1:
        verdict = f"as good as I-OBS or better, so the control explains all of I-OBS's gain (share {share:.0%})"
    elif share < 0:
        verdict = f"worse than SparseGPT, so the control explains none of I-OBS's gain (share {share:.0%})"
    else:
        verdict = f"so the control explains {share:.0%} of I-OBS's gain"
    clause = (f"{where}, {iobs_text} improves SparseGPT from {sgpt:.2f} to {iobs:.2f} and masked fine-tuning of the "
              f"SparseGPT mask (round {row.sparsegpt_ft_round}) reaches {ft:.2f}, {verdict}")
    fixed = getattr(row, "iobs_fixed_mask", math.nan)
    if not math.isnan(fixed) and ft > iobs:
        share = reselection_share(ft, fixed, iobs)
        clause += f"; I-OBS with round 1's mask kept reaches {fixed:.2f}, " + (
            f"so reselecting the mask accounts for {share:.0%} of I-OBS's edge over masked fine-tuning" if share >= 0
            else f"better than I-OBS itself, so reselecting the mask contributes nothing to that edge (share {share:.0%})")
    return clause


def share_sentence(controls: pd.DataFrame, model: str) -> str:
    """One sentence for ``model`` stating, per eval set and sparsity of the controls table, what share of I-OBS's
    gain over SparseGPT the masked-fine-tuning control explains (or that I-OBS does not gain)."""
    rows = controls[controls["model"] == model]
    if rows.empty:
        return f"{model}: no I-OBS rounds were evaluated."
    return f"{model}: " + "; ".join(_clause(row) for row in rows.itertuples()) + "."


def controls_summary(controls: pd.DataFrame, select_on: str | None) -> str:
    """Markdown: one share sentence per model, and the selection rule."""
    lines = ["# What the masked-fine-tuning control explains", ""]
    lines.append("Share = (ppl SparseGPT - ppl SparseGPT+masked-ft) / (ppl SparseGPT - ppl I-OBS), each at its best "
                 f"round on the validation split of `{select_on}`; perplexities of the reported split.")
    lines.append("")
    lines += [f"- {share_sentence(controls, model)}" for model in sorted(controls["model"].unique())]
    if controls.empty:
        lines.append("- No I-OBS rounds were evaluated.")
    return "\n".join(lines) + "\n"
