"""results/tables/pruning.csv as a frame: loading, perplexity look-ups, and the best round chosen on validation."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from iobs import registry
from iobs.errors import DataError
from iobs.report.records import PRUNING_COLUMNS

ITERATIVE_VARIANTS = registry.variant_names()
ONESHOT_METHODS = registry.oneshot_methods()
DENSE_REFERENCE = registry.DENSE_REFERENCE  # dense_ft's unpruned state at round r (the dense model after r-1 blocks)
KEY = ["model", "method", "sparsity", "round", "eval_set", "split"]
BEST_COLUMNS = ["model", "method", "sparsity", "round", "valid_perplexity"]


def load_pruning(path: str | Path) -> pd.DataFrame:
    """Read pruning.csv; sparsity stays text ("0.5", "2:4", "0": pandas would make "0.5" a float)."""
    try:
        frame = pd.read_csv(path, dtype={"model": str, "method": str, "sparsity": str, "eval_set": str,
                                         "split": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"cannot read {path} ({type(err).__name__}): rerun the pruning_table rule") from None
    return check_frame(frame, source=str(path))


def check_frame(frame: pd.DataFrame, source: str = "the pruning table") -> pd.DataFrame:
    """Validate the columns of a pruning frame and normalise their types; one row per KEY."""
    missing = [c for c in PRUNING_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source} lacks the columns {', '.join(missing)}: rerun the pruning_table rule")
    frame = frame.assign(sparsity=frame["sparsity"].astype(str), round=frame["round"].astype(int),
                         perplexity=frame["perplexity"].astype(float))
    duplicated = frame.duplicated(KEY)
    if duplicated.any():
        first = frame.loc[duplicated, KEY].iloc[0].tolist()
        raise DataError(f"{source} has more than one row for {first}: rerun the pruning_table rule")
    return frame


def window_policy(frame: pd.DataFrame, model: str) -> str:
    """The bos column of a model's rows: its one value, or "mixed" (a table should not compare across policies)."""
    values = sorted(set(frame.loc[frame["model"] == model, "bos"].dropna()))
    return values[0] if len(values) == 1 else "mixed" if values else "none"


def sparsity_label(sparsity: str) -> str:
    """A file-name-safe sparsity label: "2:4" -> "2-4", "0.5" -> "0.5"."""
    return str(sparsity).replace(":", "-")


def sparsity_sort_key(sparsity: str) -> tuple:
    """Unstructured fractions in increasing order first, then N:M patterns by N/M."""
    text = str(sparsity)
    if ":" in text:
        n, m = (int(x) for x in text.split(":"))
        return (1, n / m, text)
    return (0, float(text), text)


def sorted_sparsities(values) -> list[str]:
    return sorted({str(v) for v in values}, key=sparsity_sort_key)


def eval_sets(frame: pd.DataFrame, preferred: list[str] | None = None) -> list[str]:
    """Eval sets of the frame: those named in ``preferred`` (config order) first, then the rest alphabetically."""
    present = set(frame["eval_set"])
    head = [name for name in (preferred or []) if name in present]
    return head + sorted(present - set(head))


def selection_set(frame: pd.DataFrame, preferred: list[str] | None = None) -> str | None:
    """The eval set whose validation split chooses the best round: the first (config order) with a 'valid' split."""
    for name in eval_sets(frame, preferred):
        if ((frame["eval_set"] == name) & (frame["split"] == "valid")).any():
            return name
    return None


def best_rounds(frame: pd.DataFrame, select_on: str | None) -> pd.DataFrame:
    """Per (model, variant, sparsity) of the iterative variants: the round with the lowest perplexity on the
    validation split of eval set ``select_on`` (ties: the earliest round; NaN perplexities never win).

    The test split is never looked at. Columns: BEST_COLUMNS.
    """
    rounds = frame[frame["method"].isin(ITERATIVE_VARIANTS) & (frame["round"] >= 1)]
    if rounds.empty:
        return pd.DataFrame(columns=BEST_COLUMNS)
    if select_on is None:
        raise DataError("no eval set has a 'valid' split, so no best round can be chosen: add one under "
                        "eval.sets.<name>.valid in the config")
    valid = rounds[(rounds["eval_set"] == select_on) & (rounds["split"] == "valid")]
    if valid.empty:
        raise DataError(f"eval set '{select_on}' has no 'valid' rows for the I-OBS rounds: add "
                        f"eval.sets.{select_on}.valid to the config or choose another eval set")
    ordered = valid.sort_values(["perplexity", "round"], na_position="last")
    best = ordered.groupby(["model", "method", "sparsity"], sort=True).head(1)
    best = best.rename(columns={"perplexity": "valid_perplexity"})[BEST_COLUMNS]
    return best.sort_values(["model", "method", "sparsity"], ignore_index=True)


class Perplexities:
    """Look-up of one perplexity by (model, method, sparsity, round, eval set, split); NaN when not evaluated."""

    def __init__(self, frame: pd.DataFrame, best: pd.DataFrame | None = None):
        self._values = frame.set_index(KEY)["perplexity"].to_dict()
        best = best if best is not None else pd.DataFrame(columns=BEST_COLUMNS)
        self._best = {(r.model, r.method, r.sparsity): int(r.round) for r in best.itertuples()}

    def get(self, model: str, method: str, sparsity: str, round_index: int, eval_set: str, split: str) -> float:
        return float(self._values.get((model, method, str(sparsity), int(round_index), eval_set, split), math.nan))

    def best_round(self, model: str, variant: str, sparsity: str) -> int | None:
        """The round chosen on validation for an iterative variant, or None when it was not run."""
        return self._best.get((model, variant, str(sparsity)))

    def at_best(self, model: str, variant: str, sparsity: str, eval_set: str, split: str,
                method: str | None = None) -> float:
        """Perplexity of ``method`` (default: the variant itself) at ``variant``'s best round."""
        round_index = self.best_round(model, variant, sparsity)
        if round_index is None:
            return math.nan
        return self.get(model, method or variant, sparsity, round_index, eval_set, split)

    def dense(self, model: str, eval_set: str, split: str) -> float:
        return self.get(model, "dense", "0", 0, eval_set, split)

    def sparsegpt(self, model: str, sparsity: str, eval_set: str, split: str) -> float:
        """One-shot SparseGPT: the round-0 sparsegpt model, else round 1 of iobs (the same computation when
        iterative.solver is sparsegpt: same base calibration batch, same options)."""
        value = self.get(model, "sparsegpt", sparsity, 0, eval_set, split)
        return value if not math.isnan(value) else self.get(model, "iobs", sparsity, 1, eval_set, split)
