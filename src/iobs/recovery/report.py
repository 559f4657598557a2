"""Tables of the synthetic experiments: final (and paper-checkpoint) statistics, and local convergence rates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iobs.paper import paper_setting, synthetic_iterations, synthetic_value
from iobs.atomic import atomic_write_text
from iobs.recovery.trajectories import RunRecord, load_trajectory

ALGORITHM_ORDER = {"kiht": 0, "topk_iobs": 1, "iobs": 2}
# Relative errors below this are rounding noise in float64: rates are not measured there.
RATE_FLOOR = 1e-13


def load_records(paths) -> list[RunRecord]:
    """Trajectory files -> records, sorted by sort_records."""
    return sort_records([load_trajectory(path) for path in paths])


def by_experiment(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Records grouped by experiment name, in first-seen order."""
    groups: dict[str, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(rec.experiment, []).append(rec)
    return groups


def write_csv(table: pd.DataFrame, path) -> None:
    """Write a table atomically, floats to 6 significant digits."""
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g"))


def prior_label(record: RunRecord) -> str:
    """The prior actually used: "Gaussian", "MNIST" or "sklearn digits"."""
    source = record.meta.get("image_source")
    return {"mnist": "MNIST", "digits": "sklearn digits"}.get(source, "Gaussian")


def relative_dist(record: RunRecord) -> np.ndarray:
    """||w_t - w*|| / ||w*||, shape (R, T + 1)."""
    return record.dist / np.linalg.norm(record.w_star, axis=-1, keepdims=True)


def sort_records(records: list[RunRecord]) -> list[RunRecord]:
    """Experiments in first-seen order, algorithms as k-IHT, Topk-I-OBS, I-OBS."""
    first_seen = {name: i for i, name in reversed(list(enumerate(r.experiment for r in records)))}
    return sorted(records, key=lambda r: (first_seen[r.experiment], ALGORITHM_ORDER.get(r.algorithm, 9)))


def final_table(records: list[RunRecord]) -> pd.DataFrame:
    """One row per (experiment, algorithm, iteration) at the final iteration and at every earlier iteration where
    the paper reports a value. Means and sample standard deviations (ddof=1) over runs; paper_* columns hold the
    paper's means when the experiment's settings match the paper's (else NaN)."""
    rows = []
    for rec in sort_records(records):
        setting = paper_setting(rec.meta.get("config", {}), rec.meta.get("image_source"))
        name = setting.name if setting else None
        iterations = sorted({rec.iterations} | {i for i in synthetic_iterations(name) if i <= rec.iterations})
        rel = relative_dist(rec)
        for it in iterations:
            rows.append({
                "experiment": rec.experiment, "prior": prior_label(rec), "algorithm": rec.algorithm,
                "iteration": it, "runs": rec.loss.shape[0],
                "loss_mean": rec.loss[:, it].mean(), "loss_std": rec.loss[:, it].std(ddof=1),
                "dist_mean": rec.dist[:, it].mean(), "dist_std": rec.dist[:, it].std(ddof=1),
                "rel_dist_mean": rel[:, it].mean(),
                "paper_loss": synthetic_value(name, rec.algorithm, it, "loss"),
                "paper_dist": synthetic_value(name, rec.algorithm, it, "dist"),
                "paper_rel_dist": synthetic_value(name, rec.algorithm, it, "rel_dist"),
            })
    return pd.DataFrame(rows)


def _log_ratio(numerator: np.ndarray, denominator: np.ndarray, usable: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    np.divide(np.log(numerator, where=usable, out=np.ones_like(numerator)),
              np.log(denominator, where=usable, out=np.ones_like(denominator)), where=usable, out=out)
    return out


def observed_orders(rel: np.ndarray, floor: float = RATE_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Per-run convergence orders from relative errors rel (R, T + 1), both (R, T + 1), NaN where undefined:

    order[t] = log(e_{t+1}) / log(e_t)  (needs e_t < 1; -> 2 for quadratic, 1 for linear convergence as e -> 0)
    order_ratio[t] = log(e_{t+1}/e_t) / log(e_t/e_{t-1})  (scale-free; -> the order q whenever e_{t+1} ~ C e_t^q)
    Only errors above ``floor`` (all earlier ones too) count: below it float64 rounding dominates.
    """
    above = np.cumprod(rel > floor, axis=1).astype(bool)
    safe = np.where(above, rel, 1.0)
    nxt, prev = np.roll(safe, -1, axis=1), np.roll(safe, 1, axis=1)
    both = above & np.roll(above, -1, axis=1)
    both[:, -1] = False
    order = _log_ratio(nxt, safe, both & (safe < 1))
    three = both & np.roll(above, 1, axis=1)
    three[:, 0] = False
    three &= safe != prev
    ratio = _log_ratio(nxt / safe, safe / prev, three)
    return order, ratio


def rates_table(records: list[RunRecord], floor: float = RATE_FLOOR) -> pd.DataFrame:
    """Per (algorithm, iteration): runs whose error is still above float64 noise, their median/mean/std of
    ||w - w*|| and of the relative error, and the median observed orders (see observed_orders)."""
    rows = []
    for rec in sort_records(records):
        rel = relative_dist(rec)
        order, ratio = observed_orders(rel, floor)
        above = np.cumprod(rel > floor, axis=1).astype(bool)
        for t in range(rel.shape[1]):
            live = above[:, t]
            if not live.any():
                break  # every run has reached machine precision
            dist = rec.dist[live, t]
            rows.append({
                "algorithm": rec.algorithm, "iteration": t, "runs_above_floor": int(live.sum()),
                "dist_median": np.median(dist), "dist_mean": dist.mean(),
                "dist_std": dist.std(ddof=1) if live.sum() > 1 else np.nan,
                "rel_dist_median": np.median(rel[live, t]), "loss_median": np.median(rec.loss[live, t]),
                "order_median": _nanmedian(order[:, t]), "order_ratio_median": _nanmedian(ratio[:, t]),
                "order_runs": int(np.isfinite(order[:, t]).sum()),
            })
    return pd.DataFrame(rows)


def _nanmedian(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else np.nan
