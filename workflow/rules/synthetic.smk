# Synthetic sparse recovery (the paper's Figure 1 and appendix reconstruction figure), plus the small-d
# quadratic-rate experiment. One job per (experiment, algorithm); one notebook draws everything.
from iobs.recovery.problems import resolve_image_source

ALGORITHMS = "kiht|topk_iobs|iobs"


def synthetic_experiment(wildcards):
    """The experiment's config with its image source resolved (so adding MNIST later reruns the job)."""
    exp = dict(SYN["experiments"][wildcards.experiment])
    if exp["prior"] == "image":
        exp["image_source"] = resolve_image_source(exp["image_source"], exp.get("mnist_dir"))
    return exp


def synthetic_runs():
    return [
        f"{RESULTS}/synthetic/{name}/{algorithm}/trajectories.npz"
        for name, exp in SYN["experiments"].items()
        for algorithm in exp["algorithms"]
    ]


def synthetic_rate_runs():
    return [f"{RESULTS}/synthetic-rates/{algorithm}/trajectories.npz" for algorithm in SYN["rates"]["algorithms"]]


def synthetic_targets():
    return [
        f"{RESULTS}/tables/synthetic_final.csv",
        f"{RESULTS}/tables/synthetic_rates.csv",
    ]


rule synthetic_run:
    output:
        trajectories=f"{RESULTS}/synthetic/{{experiment}}/{{algorithm}}/trajectories.npz",
        provenance=f"{RESULTS}/synthetic/{{experiment}}/{{algorithm}}/provenance.json",
    wildcard_constraints:
        algorithm=ALGORITHMS,
    params:
        job="iobs.recovery.jobs:run_synthetic",
        experiment=synthetic_experiment,
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
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule synthetic_figures:
    input:
        runs=synthetic_runs(),
        rates=synthetic_rate_runs(),
    output:
        table=report(f"{RESULTS}/tables/synthetic_final.csv", caption="../report/synthetic_final.rst",
                     category="Synthetic sparse recovery"),
        rates_table=report(f"{RESULTS}/tables/synthetic_rates.csv", caption="../report/synthetic_rates.rst",
                           category="Synthetic sparse recovery"),
        figures=report(directory(f"{RESULTS}/figures/synthetic"), patterns=["{name}.png"],
                       caption="../report/synthetic_figures.rst", category="Synthetic sparse recovery"),
    log:
        notebook=f"{RESULTS}/notebooks/synthetic.ipynb",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    notebook:
        "../../notebooks/synthetic.py.ipynb"
