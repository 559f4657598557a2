# Language-model tables and figures (one notebook), marked for `snakemake --report results/report.html`.

# Helpers (round_metrics_paths, report_targets) live in common.smk.

LM_CATEGORY = "Language-model pruning"


rule lm_figures:
    input:
        pruning=LAYOUT.table("pruning.csv"),
        round_metrics=round_metrics_paths(),
    output:
        llm_table=report(LAYOUT.table("llm_table.csv"), caption="../report/lm_llm_table.rst",
                         category=LM_CATEGORY),
        methods=report(LAYOUT.table("methods.csv"), caption="../report/lm_methods.rst",
                       category=LM_CATEGORY),
        controls=report(LAYOUT.table("controls.csv"), caption="../report/lm_controls.rst",
                        category=LM_CATEGORY),
        controls_summary=report(LAYOUT.table("controls_summary.md"), caption="../report/lm_controls_summary.rst",
                                category=LM_CATEGORY),
        summary=report(LAYOUT.table("summary.csv"), caption="../report/lm_summary.rst", category=LM_CATEGORY),
        summary_markdown=LAYOUT.table("summary.md"),
        mask_dynamics=report(LAYOUT.table("mask_dynamics.csv"), caption="../report/lm_mask_dynamics.rst",
                             category=LM_CATEGORY),
        paper_vs_run=report(LAYOUT.table("paper_vs_run.csv"), caption="../report/lm_paper_vs_run.rst",
                            category=LM_CATEGORY),
        figures=report(directory(LAYOUT.figures("lm")), patterns=["{name}.png"], caption="../report/lm_figures.rst",
                       category=LM_CATEGORY),
    params:
        # the settings paper_vs_run names, and the eval-set order (the first with a valid split chooses the best
        # round); as params, a change to them reruns the notebook
        settings={key: config.get(key, {}) for key in ("models", "eval", "calibration")},
        eval_sets=list(config["eval"].get("sets", {})),
    log:
        notebook=LAYOUT.notebook("pruning"),
    benchmark:
        LAYOUT.benchmark(layout.table_stem("lm_figures"))
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    notebook:
        "../../notebooks/pruning.py.ipynb"
