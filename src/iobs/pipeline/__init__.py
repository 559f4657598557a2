"""The pipeline layer: everything that knows of Snakemake or of where artifacts live under results/.

Rules name a job function in ``params.job`` ("module:function"); workflow/scripts/job.py runs it through
``runner`` with a JobContext. The job functions unpack that context, call the domain packages (recovery, data,
models, prune, iterative, eval, report: plain functions that know nothing of Snakemake or results paths) and write
the rule's outputs. ``layout`` names every artifact of a results folder, for the rules and for whatever reads a
finished run.

runner: JobContext, run_job, run_from_snakemake.   layout: the results folder's paths.
synthetic, data, models, prune, rounds, eval, mmlu, reporting: the per-artifact jobs of each rule file.
chains: the coarse jobs of the default DAG (one-shot groups and round chains, evaluations in process).
stale_lock: the lock a killed Snakemake left behind, removed while the next run plans.
"""
