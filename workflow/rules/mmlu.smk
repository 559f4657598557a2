# MMLU few-shot accuracy (lm-evaluation-harness, extra `mmlu`) of the dense model and every round of the methods in
# mmlu.methods, gathered into results/tables/mmlu.csv. Off unless mmlu.enabled. Helpers live at the end of
# common.smk (mmlu_models, mmlu_targets, mmlu_inputs).

MMLU_JOB = ("{model}", "{method}", "{sparsity}", "{round}")  # (model, method, sparsity, round) of the layout


rule mmlu:
    input:
        unpack(mmlu_inputs),
    output:
        metrics=LAYOUT.mmlu(*MMLU_JOB),
        provenance=LAYOUT.provenance(layout.mmlu_stem(*MMLU_JOB)),
    wildcard_constraints:
        round=r"\d+",
    params:
        job="iobs.pipeline.mmlu:mmlu_accuracy",
        model=lambda w: model_dir(w.model, w.method, w.sparsity, w.round),
        model_key=lambda w: None if made_here(w.model) else model_key(w.model),
        dtype=lambda w: MODELS[w.model]["dtype"],
        settings={k: v for k, v in MMLU.items() if k not in ("enabled", "methods")},
        labels=lambda w: dict(model=w.model, method=w.method, sparsity=w.sparsity, round=int(w.round)),
        bos=lambda w: bos_setting(w.model),
        bos_key=lambda w: f"models.{w.model}.bos",
    log:
        LAYOUT.log(layout.mmlu_stem(*MMLU_JOB)),
    benchmark:
        LAYOUT.benchmark(layout.mmlu_stem(*MMLU_JOB))
    threads: 1
    resources:
        mem_mb=4000,
        gpu=0,
    conda:
        "../envs/mmlu.yaml"
    script:
        JOB_SCRIPT


rule mmlu_table:
    input:
        results=[LAYOUT.mmlu(*m) for m in mmlu_models()],
    output:
        table=report(LAYOUT.table("mmlu.csv"), caption="../report/mmlu_table.rst",
                     category="Language-model pruning"),
        provenance=LAYOUT.provenance_beside(layout.table_stem("mmlu")),
    params:
        job="iobs.pipeline.mmlu:mmlu_table",
    log:
        LAYOUT.log(layout.table_stem("mmlu")),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    script:
        JOB_SCRIPT
