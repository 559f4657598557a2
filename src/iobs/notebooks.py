"""The notebooks' inputs, outputs and params when they are opened by hand, without Snakemake.

Inside the DAG, Snakemake defines `snakemake` in a notebook's first cell. Opened by hand (Jupyter, nbconvert), the
notebook calls ``standalone(rule)`` instead, which returns an object with the same ``input``, ``output`` and
``params`` attributes, built from a finished run's results layout and the config it was run with:

- the working directory: $IOBS_WORKDIR, else the first of the current directory and its parents holding results/
  (a notebook opened from notebooks/ finds the repository's results/);
- the config: $IOBS_CONFIG, else config.yaml in that working directory (validated, so defaults are filled);
- outputs go to results/notebooks/by-hand/<rule>/ ($IOBS_NOTEBOOK_OUT overrides), never over the DAG's artifacts.

It rebuilds a notebook rule's inputs from the results layout, so it asks iobs.pipeline.layout, as the rules do.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from iobs.config import check_files
from iobs.errors import ConfigError
from iobs.pipeline.layout import Layout

RULES = ("synthetic_figures", "lm_figures")
LM_OUTPUTS = {"llm_table": "llm_table.csv", "methods": "methods.csv", "controls": "controls.csv",
              "controls_summary": "controls_summary.md", "mask_dynamics": "mask_dynamics.csv",
              "paper_vs_run": "paper_vs_run.csv", "summary": "summary.csv", "summary_markdown": "summary.md"}


def find_workdir(start: str | Path | None = None) -> Path:
    """$IOBS_WORKDIR, else the nearest of `start` (default: the current directory) and its parents with results/."""
    if os.environ.get("IOBS_WORKDIR"):
        return Path(os.environ["IOBS_WORKDIR"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "results").is_dir():
            return folder
    raise ConfigError(f"no results/ folder in {here} or above: run the pipeline first (make run), or set "
                      "IOBS_WORKDIR to the directory that holds results/")


def standalone(rule: str, workdir: str | Path | None = None, config: str | Path | None = None,
               out: str | Path | None = None) -> SimpleNamespace:
    """A stand-in for the `snakemake` object of notebook rule `rule` (see the module docstring)."""
    if rule not in RULES:
        raise ConfigError(f"no notebook rule '{rule}': choose one of {', '.join(RULES)}")
    workdir = Path(workdir).resolve() if workdir else find_workdir()
    config_path = Path(config or os.environ.get("IOBS_CONFIG") or workdir / "config.yaml")
    cfg = check_files([config_path])
    results = Layout(str(workdir / "results"))
    out = Path(out or os.environ.get("IOBS_NOTEBOOK_OUT") or results.notebook_by_hand(rule))
    if rule == "synthetic_figures":
        inputs = {"runs": results.synthetic_runs(cfg["synthetic"]),
                  "rates": results.synthetic_rate_runs(cfg["synthetic"])}
        outputs = {"table": out / "synthetic_final.csv", "rates_table": out / "synthetic_rates.csv",
                   "figures": out / "figures"}
        params = {"reconstructions": cfg["synthetic"]["reconstructions"]}
    else:
        iterative = cfg.get("iterative", {})
        inputs = {"pruning": results.table("pruning.csv"),
                  "round_metrics": results.round_metrics(cfg.get("models", {}), iterative.get("variants", []),
                                                         iterative.get("sparsities", []), iterative.get("rounds", 0))}
        outputs = {key: out / name for key, name in LM_OUTPUTS.items()} | {"figures": out / "figures"}
        params = {"settings": {key: cfg.get(key, {}) for key in ("models", "eval", "calibration")},
                  "eval_sets": list(cfg.get("eval", {}).get("sets", {}))}
    missing = [p for value in inputs.values() for p in (value if isinstance(value, list) else [value])
               if not Path(p).exists()]
    if missing:
        raise ConfigError(f"{missing[0]} (an input of notebook rule {rule}) does not exist: run the pipeline first "
                          f"(make run), or point IOBS_WORKDIR / IOBS_CONFIG at the run that made {results.root}")
    out.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(input=SimpleNamespace(**inputs), params=SimpleNamespace(**params),
                           output=SimpleNamespace(**{k: str(v) for k, v in outputs.items()}), rule=rule,
                           log=SimpleNamespace(notebook=None), wildcards=SimpleNamespace())
