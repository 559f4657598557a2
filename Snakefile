# iobs: the Iterative Optimal Brain Surgeon, replicated. See README.md.
# Execution settings (cores, GPUs, SLURM) live in workflow/profiles/, experiment settings in config.yaml.
from snakemake.utils import min_version

min_version("9.0")


# `--configfile X` replaces the embedded default instead of being merged into it (the paper's config is complete).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
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
