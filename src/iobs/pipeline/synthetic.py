"""Jobs of workflow/rules/synthetic.smk: one (experiment, algorithm) of the synthetic figures, or of the local-rate
experiment, solved by iobs.recovery.experiments and saved as the rule's "trajectories" output (npz)."""

from __future__ import annotations

from iobs.pipeline.runner import JobContext
from iobs.recovery.experiments import MAX_SUPPORTS, run_experiment, run_rate_experiment
from iobs.recovery.trajectories import save_trajectory


def run_synthetic(ctx: JobContext) -> dict:
    """params: experiment (its config, image source resolved), algorithm, seed, max_supports; wildcard experiment."""
    record, summary = run_experiment(ctx.wildcards.get("experiment", "experiment"), ctx.params["experiment"],
                                     ctx.params["algorithm"], ctx.params["seed"],
                                     ctx.params.get("max_supports", MAX_SUPPORTS))
    save_trajectory(ctx.out("trajectories"), record)
    return summary


def run_rates(ctx: JobContext) -> dict:
    """params: rates (config synthetic.rates), algorithm, seed, max_supports."""
    record, summary = run_rate_experiment(ctx.params["rates"], ctx.params["algorithm"], ctx.params["seed"],
                                          ctx.params.get("max_supports", MAX_SUPPORTS))
    save_trajectory(ctx.out("trajectories"), record)
    return summary
