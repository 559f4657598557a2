# iobs: the Iterative Optimal Brain Surgeon, replicated. See README.md.
# Execution settings (cores, GPUs, SLURM) live in workflow/profiles/, experiment settings in config.yaml.
from snakemake.utils import min_version

min_version("9.0")


# common.smk loads the config (the embedded default config.yaml, unless `--configfile X` replaces it: the paper's
# config is complete) and validates it before any job starts.
include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


include: "workflow/rules/synthetic.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/mmlu.smk"


rule all:
    input:
        synthetic_targets(),
        lm_targets(),
        report_targets(),
        mmlu_targets(),
    default_target: True
