# Language-model tables and figures (one notebook), marked for `snakemake --report results/report.html`.

# Helpers (round_metrics_paths, report_targets) live in common.smk.

LM_CATEGORY = "Language-model pruning"


rule lm_figures:
    input:
        pruning=f"{RESULTS}/tables/pruning.csv",
        round_metrics=round_metrics_paths(),
    output:
        llm_table=report(f"{RESULTS}/tables/llm_table.csv", caption="../report/lm_llm_table.rst",
                         category=LM_CATEGORY),
        methods=report(f"{RESULTS}/tables/methods.csv", caption="../report/lm_methods.rst",
                       category=LM_CATEGORY),
        controls=report(f"{RESULTS}/tables/controls.csv", caption="../report/lm_controls.rst",
                        category=LM_CATEGORY),
        controls_summary=report(f"{RESULTS}/tables/controls_summary.md", caption="../report/lm_controls_summary.rst",
                                category=LM_CATEGORY),
        mask_dynamics=report(f"{RESULTS}/tables/mask_dynamics.csv", caption="../report/lm_mask_dynamics.rst",
                             category=LM_CATEGORY),
        paper_vs_run=report(f"{RESULTS}/tables/paper_vs_run.csv", caption="../report/lm_paper_vs_run.rst",
                            category=LM_CATEGORY),
        figures=report(directory(f"{RESULTS}/figures/lm"), patterns=["{name}.png"], caption="../report/lm_figures.rst",
                       category=LM_CATEGORY),
    params:
        # the settings paper_vs_run names, and the eval-set order (the first with a valid split chooses the best
        # round); as params, a change to them reruns the notebook
        settings={key: config.get(key, {}) for key in ("models", "eval", "calibration")},
        eval_sets=list(config["eval"].get("sets", {})),
    log:
        notebook=f"{RESULTS}/notebooks/pruning.ipynb",
    benchmark:
        f"{RESULTS}/benchmarks/tables/lm_figures.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    notebook:
        "../../notebooks/pruning.py.ipynb"
