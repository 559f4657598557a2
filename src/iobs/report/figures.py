"""Language-model figures (matplotlib; each function returns a Figure, save it with save_figure)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: the notebook and tests save PNGs  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import LogFormatter, MaxNLocator, PercentFormatter  # noqa: E402

from iobs import registry  # noqa: E402
from iobs.recovery.figures import save_figure  # noqa: E402,F401  (re-exported for the notebook)
from iobs.report.dynamics import TOTAL  # noqa: E402
from iobs.report.frames import (DENSE_REFERENCE, ITERATIVE_VARIANTS, ONESHOT_METHODS, Perplexities,  # noqa: E402
                                eval_sets, sorted_sparsities)

# Registered solvers and variants bring their own label and colour; the two derived series are named here.
LABELS = {**registry.labels(), DENSE_REFERENCE: "dense + fine-tuning (unpruned)",
          "iobs_best": "I-OBS (best round on valid)"}
COLORS = {**registry.colors(), DENSE_REFERENCE: "tab:green", "iobs_best": "tab:red"}


def _figure_legend(fig, axes) -> None:
    """One legend for the whole figure, below the panels, from the union of the panels' labelled artists."""
    handles = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(len(handles), 4),
                   fontsize=8, frameon=False)


def _z(method: str) -> float:
    """I-OBS is drawn above its controls where lines overlap; its fixed-mask twin (dashed, close to it) above both."""
    return {"iobs": 3, "iobs_fixed_mask": 4}.get(method, 2)


LINE_STYLES = {DENSE_REFERENCE: ":", "iobs_fixed_mask": "--"}


def _style_round_panel(ax, ylabel: str, title: str | None = None, xlabel: str | None = None) -> None:
    """A panel with rounds on the x axis: integer ticks, grid, labels (title on the top row, x label at the bottom)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)


def _not_run(ax) -> None:
    ax.text(0.5, 0.5, "not evaluated", transform=ax.transAxes, ha="center", va="center", color="0.4")


def plot_rounds(frame: pd.DataFrame, ppl: Perplexities, sparsity: str, select_on: str | None,
                preferred_sets: list[str] | None = None) -> plt.Figure:
    """Perplexity against round at one sparsity: a column per model, a row per (eval set, split). I-OBS and its
    controls are lines; one-shot SparseGPT and the dense model are horizontal references; a star marks each
    variant's best round on the validation split of ``select_on`` (drawn on every row)."""
    methods = (*ITERATIVE_VARIANTS, DENSE_REFERENCE)
    rounds = frame[(frame["sparsity"] == sparsity) & frame["method"].isin(methods) & (frame["round"] >= 1)]
    models = sorted(rounds["model"].unique())
    panels = [(name, split) for name in eval_sets(rounds, preferred_sets) for split in ("valid", "test")
              if ((rounds["eval_set"] == name) & (rounds["split"] == split)).any()]
    fig, axes = plt.subplots(len(panels), len(models), figsize=(4.3 * len(models), 3.1 * len(panels) + 0.9),
                             squeeze=False, sharex=True, layout="constrained")
    for col, model in enumerate(models):
        for row, (eval_set, split) in enumerate(panels):
            ax = axes[row, col]
            here = rounds[(rounds["model"] == model) & (rounds["eval_set"] == eval_set) & (rounds["split"] == split)]
            if here.empty:
                _not_run(ax)
            for method in methods:
                line = here[here["method"] == method].sort_values("round")
                if line.empty:
                    continue
                ax.plot(line["round"], line["perplexity"], marker="o", ms=3, lw=1.5, color=COLORS[method],
                        ls=LINE_STYLES.get(method, "-"), label=LABELS[method], zorder=_z(method))
                # the dense reference is starred where the controls table reads it: at I-OBS's round
                best = ppl.best_round(model, "iobs" if method == DENSE_REFERENCE else method, sparsity)
                if best is not None:
                    y = ppl.get(model, method, sparsity, best, eval_set, split)
                    ax.plot([best], [y], ls="none", marker="*", ms=8 if method == "iobs_fixed_mask" else 13,
                            color=COLORS[method], mec="black", mew=0.6, zorder=5 + _z(method) / 10,
                            label=f"best round on {select_on} valid")
            for method, value, style in (("sparsegpt", ppl.sparsegpt(model, sparsity, eval_set, split), "--"),
                                         ("dense", ppl.dense(model, eval_set, split), "-.")):
                if np.isfinite(value):
                    ax.axhline(value, color=COLORS[method], ls=style, lw=1, label=LABELS[method])
            _style_round_panel(ax, f"{eval_set} {split} perplexity", title=model if row == 0 else None,
                               xlabel="round (1 = one-shot SparseGPT for I-OBS)" if row == len(panels) - 1 else None)
    _figure_legend(fig, axes)
    fig.suptitle(f"Perplexity against round, sparsity {sparsity}")
    return fig


def plot_methods(methods: pd.DataFrame) -> plt.Figure:
    """The methods table as grouped bars (log y): a column per model, a row per eval set, a group per sparsity;
    the dense model is a horizontal line. Methods never evaluated are left out."""
    shown = [m for m in (*ONESHOT_METHODS, "iobs_best") if methods[m].notna().any()]
    models = sorted(methods["model"].unique())
    sets = list(dict.fromkeys(methods["eval_set"]))
    fig, axes = plt.subplots(len(sets), len(models), figsize=(4.3 * len(models), 3.4 * len(sets) + 0.8),
                             squeeze=False, layout="constrained")
    width = 0.8 / max(len(shown), 1)
    for col, model in enumerate(models):
        for row, eval_set in enumerate(sets):
            ax = axes[row, col]
            here = methods[(methods["model"] == model) & (methods["eval_set"] == eval_set)]
            here = here.set_index("sparsity").loc[sorted_sparsities(here["sparsity"])]
            x = np.arange(len(here))
            for i, method in enumerate(shown):
                ax.bar(x + (i - (len(shown) - 1) / 2) * width, here[method], width, color=COLORS[method],
                       label=LABELS[method])
            dense = here["dense"].dropna()
            if not dense.empty:
                ax.axhline(dense.iloc[0], color=COLORS["dense"], ls="-.", lw=1, label=LABELS["dense"])
            values = here[[*shown, "dense"]].to_numpy(dtype=float)
            if np.isfinite(values).any():
                ax.set_ylim(np.nanmin(values) / 1.15, np.nanmax(values) * 1.3)
            ax.set_yscale("log")
            for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis_formatter(LogFormatter(labelOnlyBase=False))  # plain 50, 60 rather than 5x10^1
            ax.set_xticks(x, [f"sparsity {s}" for s in here.index])
            ax.grid(True, axis="y", which="both", alpha=0.3)
            ax.set_ylabel(f"{eval_set} {here['split'].iloc[0]} perplexity (log)")
            if row == 0:
                ax.set_title(model)
    _figure_legend(fig, axes)
    fig.suptitle("One-shot methods side by side (I-OBS at its best validation round)")
    return fig


def plot_mask_dynamics(dynamics: pd.DataFrame) -> plt.Figure:
    """Share of weight positions (whole model) that changed between zero and nonzero since the previous round
    (solid) and since round 1 (dashed) against round: a column per model, a row per sparsity, a colour per
    variant. Rounds saved without the support fall back to the kept/pruned labels of the masks."""
    total = dynamics[dynamics["layer"] == TOTAL].copy()
    for since in ("previous", "first"):
        support = total[f"support_changed_since_{since}"]
        total[f"plotted_{since}"] = support.where(support.notna(), total[f"changed_since_{since}"])
    models = sorted(total["model"].unique())
    sparsities = sorted_sparsities(total["sparsity"])
    fig, axes = plt.subplots(len(sparsities), len(models), figsize=(4.3 * len(models), 3.0 * len(sparsities) + 0.8),
                             squeeze=False, sharex=True, layout="constrained")
    for col, model in enumerate(models):
        for row, sparsity in enumerate(sparsities):
            ax = axes[row, col]
            here = total[(total["model"] == model) & (total["sparsity"] == sparsity)]
            for variant in ITERATIVE_VARIANTS:
                line = here[here["variant"] == variant].sort_values("round")
                if line.empty:
                    continue
                ax.plot(line["round"], line["plotted_previous"], marker="o", ms=3, color=COLORS[variant],
                        label=LABELS[variant], zorder=_z(variant))
                ax.plot(line["round"], line["plotted_first"], marker="s", ms=3, ls="--", color=COLORS[variant],
                        zorder=_z(variant))
            if here.empty:
                _not_run(ax)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            ax.set_ylim(bottom=0)
            _style_round_panel(ax, f"sparsity {sparsity}: weights changed", title=model if row == 0 else None,
                               xlabel="round" if row == len(sparsities) - 1 else None)
    for style, label in (("-", "since the previous round"), ("--", "since round 1")):
        axes[0, 0].plot([], [], color="black", ls=style, label=label)
    _figure_legend(fig, axes)
    fig.suptitle("Weights that switched between zero and nonzero across rounds (whole model)")
    return fig
