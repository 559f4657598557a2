"""Figures of the synthetic experiments (matplotlib; each function returns a Figure and draws nothing else)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the notebook and tests save PNGs  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from iobs.recovery.problems import PENALTY_FORMULAS  # noqa: E402
from iobs.recovery.report import RATE_FLOOR, prior_label, relative_dist, sort_records  # noqa: E402
from iobs.recovery.solve import ALGORITHM_LABELS  # noqa: E402
from iobs.recovery.trajectories import RunRecord  # noqa: E402

COLORS = {"kiht": "tab:blue", "topk_iobs": "tab:red", "iobs": "tab:green"}


def _title(rec: RunRecord) -> str:
    m, cfg = rec.meta, rec.meta.get("config", {})
    if m["k_min"] == m["k_max"]:
        k = f"k*={cfg['k_true']}, k={m['k_min']}" if "k_true" in cfg else f"k={m['k_min']}"
    else:
        k = f"k={m['k_min']}..{m['k_max']} (= {cfg.get('k_factor')} x nnz(w*))"
    return (f"{prior_label(rec)} prior: n={m['n']}, d={m['d']}, {k}, {m['runs']} runs, "
            f"{m.get('step', 'paper')} steps")


def _label(rec: RunRecord) -> str:
    if rec.algorithm == "iobs" and rec.meta.get("support_search"):
        return f"I-OBS ({rec.meta['support_search']} OBS support + correction)"
    return ALGORITHM_LABELS.get(rec.algorithm, rec.algorithm)


def _band(ax, x, values: np.ndarray, color, label):
    """Mean with a +-1 std band; the lower edge is clipped at the smallest run where mean - std <= 0 (log axis)."""
    mean, std = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
    lower = np.where(mean - std > 0, mean - std, values.min(0))
    ax.plot(x, mean, color=color, label=label, lw=1.6)
    ax.fill_between(x, np.maximum(lower, np.finfo(float).tiny), mean + std, color=color, alpha=0.2, lw=0)


def plot_experiment(records: list[RunRecord]) -> plt.Figure:
    """Loss (left) and ||w - w*|| (right) against iteration for the algorithms of one experiment, log y."""
    fig, (ax_loss, ax_dist) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for rec in sort_records(records):
        x = np.arange(rec.iterations + 1)
        label = _label(rec)
        _band(ax_loss, x, rec.loss, COLORS.get(rec.algorithm), label)
        _band(ax_dist, x, rec.dist, COLORS.get(rec.algorithm), label)
    for ax, ylabel in ((ax_loss, "loss (1/n)||Xw - y||²"), (ax_dist, "||w - w*||₂")):
        ax.set(yscale="log", xlabel="iteration", ylabel=ylabel)
        ax.grid(True, which="major", alpha=0.3)
    ax_loss.legend(title="mean ± 1 std")
    fig.suptitle(_title(records[0]))
    return fig


def plot_reconstructions(topk: RunRecord, kiht: RunRecord, count: int = 5) -> plt.Figure:
    """The first ``count`` images: originals (top), Topk-I-OBS (middle) and k-IHT (bottom) reconstructions,
    each labelled with its relative error ||w - w*|| / ||w*||; grey scale fixed to the original's range."""
    shape = tuple(topk.meta["image_shape"])
    count = min(count, topk.w_star.shape[0])
    rows = (("original", topk.w_star, None), ("Topk-I-OBS", topk.w_final, topk), ("k-IHT", kiht.w_final, kiht))
    fig, axes = plt.subplots(3, count, figsize=(1.9 * count, 6.3), squeeze=False, constrained_layout=True)
    for row, (name, images, rec) in enumerate(rows):
        for i in range(count):
            ax = axes[row, i]
            ax.imshow(images[i].reshape(shape), cmap="gray", vmin=0, vmax=topk.w_star[i].max())
            ax.set_xticks([]), ax.set_yticks([])
            if rec is not None:
                ax.set_xlabel(f"rel. error {relative_dist(rec)[i, -1]:.3g}", fontsize=8)
            if i == 0:
                ax.set_ylabel(name)
    fig.suptitle(f"{prior_label(topk)} reconstructions after {topk.iterations} iterations "
                 f"(k = {topk.meta['config'].get('k_factor')} x non-zero pixels)")
    return fig


def plot_rates(records: list[RunRecord], floor: float = RATE_FLOOR) -> plt.Figure:
    """Left: relative error per iteration (thin lines = runs, thick = median). Right: e_{t+1} against e_t on
    log-log axes with slope-1 (linear) and slope-2 (quadratic) guides. Errors below ``floor`` are not drawn."""
    fig, (ax_t, ax_q) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    lowest = 1.0
    for rec in sort_records(records):
        rel = relative_dist(rec)
        shown = np.where(np.cumprod(rel > floor, axis=1).astype(bool), rel, np.nan)
        color, label = COLORS.get(rec.algorithm), _label(rec)
        x = np.arange(rel.shape[1])
        ax_t.plot(x, shown.T, color=color, alpha=0.15, lw=0.7)
        with np.errstate(all="ignore"):
            median = np.array([np.median(col[np.isfinite(col)]) if np.isfinite(col).sum() * 2 > len(col) else np.nan
                               for col in shown.T])
        ax_t.plot(x, median, color=color, lw=2, marker="o", ms=3, label=label)
        now, nxt = shown[:, :-1].ravel(), shown[:, 1:].ravel()
        ok = np.isfinite(now) & np.isfinite(nxt)
        ax_q.scatter(now[ok], nxt[ok], s=9, color=color, alpha=0.6, label=label)
        lowest = min(lowest, np.nanmin(shown))
    guide = np.logspace(np.log10(max(lowest, floor)), 0, 50)
    ax_q.plot(guide, guide, "k--", lw=0.8, label="slope 1 (e⁺ = e)")
    ax_q.plot(guide, guide ** 2, "k:", lw=1, label="slope 2 (e⁺ = e²)")
    ax_t.set(yscale="log", xlabel="iteration", ylabel="||w - w*|| / ||w*||")
    ax_q.set(xscale="log", yscale="log", xlabel="error e_t", ylabel="error e_{t+1}",
             ylim=(max(lowest, floor) / 10, 2))
    for ax in (ax_t, ax_q):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    m = records[0].meta
    fig.suptitle(f"Local rates with the exact Hessian: loss (1/n) Σ φ(x_iᵀw − y_i), "
                 f"{PENALTY_FORMULAS[m['loss']]}; n={m['n']}, d={m['d']}, k={m['k_min']}, {m['runs']} runs")
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 130) -> Path:
    """Save as PNG via a temporary file and rename, then close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path
