# Synthetic sparse recovery (the paper's Figure 1 and appendix reconstruction figure), plus the small-d
# quadratic-rate experiment. One job per (experiment, algorithm); one notebook draws everything.
import sys

from iobs.errors import DataError
from iobs.recovery.workflow import (experiment_params, rate_targets, resolve_image_sources, run_targets,
                                    synthetic_targets)

ALGORITHMS = "kiht|topk_iobs|iobs"

# Resolved once while planning: image_source "mnist" with a missing folder stops here with one line.
try:
    IMAGE_SOURCES = resolve_image_sources(SYN)
except DataError as err:
    sys.exit(f"data error: {err}")


rule synthetic_run:
    output:
        trajectories=f"{RESULTS}/synthetic/{{experiment}}/{{algorithm}}/trajectories.npz",
        provenance=f"{RESULTS}/synthetic/{{experiment}}/{{algorithm}}/provenance.json",
    wildcard_constraints:
        algorithm=ALGORITHMS,
    params:
        job="iobs.recovery.jobs:run_synthetic",
        experiment=lambda w: experiment_params(SYN, IMAGE_SOURCES, w.experiment),
        algorithm=lambda w: w.algorithm,
        seed=SYN["seed"],
        max_supports=SYN["max_supports"],
    log:
        f"{RESULTS}/logs/synthetic/{{experiment}}/{{algorithm}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthetic/{{experiment}}/{{algorithm}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule synthetic_rates:
    output:
        trajectories=f"{RESULTS}/synthetic-rates/{{algorithm}}/trajectories.npz",
        provenance=f"{RESULTS}/synthetic-rates/{{algorithm}}/provenance.json",
    wildcard_constraints:
        algorithm=ALGORITHMS,
    params:
        job="iobs.recovery.jobs:run_rates",
        rates=SYN["rates"],
        algorithm=lambda w: w.algorithm,
        seed=SYN["seed"],
        max_supports=SYN["max_supports"],
    log:
        f"{RESULTS}/logs/synthetic-rates/{{algorithm}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthetic-rates/{{algorithm}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule synthetic_figures:
    input:
        runs=run_targets(SYN, RESULTS),
        rates=rate_targets(SYN, RESULTS),
    output:
        table=report(f"{RESULTS}/tables/synthetic_final.csv", caption="../report/synthetic_final.rst",
                     category="Synthetic sparse recovery"),
        rates_table=report(f"{RESULTS}/tables/synthetic_rates.csv", caption="../report/synthetic_rates.rst",
                           category="Synthetic sparse recovery"),
        figures=report(directory(f"{RESULTS}/figures/synthetic"), patterns=["{name}.png"],
                       caption="../report/synthetic_figures.rst", category="Synthetic sparse recovery"),
    params:
        reconstructions=SYN["reconstructions"],
    log:
        notebook=f"{RESULTS}/notebooks/synthetic.ipynb",
    benchmark:
        f"{RESULTS}/benchmarks/synthetic/figures.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    notebook:
        "../../notebooks/synthetic.py.ipynb"
