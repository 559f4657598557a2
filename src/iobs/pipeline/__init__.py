"""The pipeline layer: job functions that Snakemake rules run (through iobs.jobs), over the library's functions.

Domain packages (recovery, data, models, prune, iterative, eval, report) know nothing of Snakemake; the coarse jobs
of the default DAG live here (iobs.pipeline.chains).
"""
