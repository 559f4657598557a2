# Synthetic sparse recovery (the paper's Figure 1 and appendix reconstruction figure), plus the small-d
# quadratic-rate experiment. One job per (experiment, algorithm); one notebook draws everything.
import sys

from iobs.errors import DataError
from iobs.recovery.experiments import experiment_params, resolve_image_sources

ALGORITHMS = "kiht|topk_iobs|iobs"

# Resolved once while planning: image_source "mnist" with a missing folder stops here with one line.
try:
    IMAGE_SOURCES = resolve_image_sources(SYN)
except DataError as err:
    sys.exit(f"data error: {err}")


rule synthetic_run:
    output:
        trajectories=LAYOUT.trajectories("{experiment}", "{algorithm}"),
        provenance=LAYOUT.provenance(layout.synthetic_stem("{experiment}", "{algorithm}")),
    wildcard_constraints:
        algorithm=ALGORITHMS,
    params:
        job="iobs.pipeline.synthetic:run_synthetic",
        experiment=lambda w: experiment_params(SYN, IMAGE_SOURCES, w.experiment),
        algorithm=lambda w: w.algorithm,
        seed=SYN["seed"],
        max_supports=SYN["max_supports"],
    log:
        LAYOUT.log(layout.synthetic_stem("{experiment}", "{algorithm}")),
    benchmark:
        LAYOUT.benchmark(layout.synthetic_stem("{experiment}", "{algorithm}"))
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule synthetic_rates:
    output:
        trajectories=LAYOUT.rate_trajectories("{algorithm}"),
        provenance=LAYOUT.provenance(layout.rates_stem("{algorithm}")),
    wildcard_constraints:
        algorithm=ALGORITHMS,
    params:
        job="iobs.pipeline.synthetic:run_rates",
        rates=SYN["rates"],
        algorithm=lambda w: w.algorithm,
        seed=SYN["seed"],
        max_supports=SYN["max_supports"],
    log:
        LAYOUT.log(layout.rates_stem("{algorithm}")),
    benchmark:
        LAYOUT.benchmark(layout.rates_stem("{algorithm}"))
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule synthetic_figures:
    input:
        runs=LAYOUT.synthetic_runs(SYN),
        rates=LAYOUT.synthetic_rate_runs(SYN),
    output:
        table=report(LAYOUT.table("synthetic_final.csv"), caption="../report/synthetic_final.rst",
                     category="Synthetic sparse recovery"),
        rates_table=report(LAYOUT.table("synthetic_rates.csv"), caption="../report/synthetic_rates.rst",
                           category="Synthetic sparse recovery"),
        figures=report(directory(LAYOUT.figures("synthetic")), patterns=["{name}.png"],
                       caption="../report/synthetic_figures.rst", category="Synthetic sparse recovery"),
    params:
        reconstructions=SYN["reconstructions"],
    log:
        notebook=LAYOUT.notebook("synthetic"),
    benchmark:
        LAYOUT.benchmark(layout.SYNTHETIC_FIGURES_STEM)
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    notebook:
        "../../notebooks/synthetic.py.ipynb"
