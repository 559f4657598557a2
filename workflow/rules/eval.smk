# Perplexity of every evaluated model (dense, one-shot, every round) on every configured eval set and split,
# gathered into results/tables/pruning.csv.

EVAL_JOB = ("{model}", "{method}", "{sparsity}", "{round}")  # (model, method, sparsity, round) of the layout


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        metrics=LAYOUT.evaluation(*EVAL_JOB),
        provenance=LAYOUT.provenance(layout.eval_stem(*EVAL_JOB)),
    wildcard_constraints:
        round=r"\d+",
        method="dense" if CHAIN else r"[^/]+",  # chain jobs evaluate what they make, in process
    params:
        job="iobs.pipeline.eval:evaluate_model",
        model=lambda w: model_dir(w.model, w.method, w.sparsity, w.round),
        model_key=lambda w: None if made_here(w.model) else model_key(w.model),
        dtype=lambda w: MODELS[w.model]["dtype"],
        seqlen=config["eval"]["seqlen"],
        max_windows=config["eval"]["max_windows"],
        batch_size=config["eval"]["batch_size"],
        streams=[dict(eval_set=name, split=split) for name, split, _ in EVAL_STREAMS],
        labels=lambda w: dict(model=w.model, method=w.method, sparsity=w.sparsity, round=int(w.round)),
        bos=lambda w: bos_setting(w.model),
        bos_key=lambda w: f"models.{w.model}.bos",
    log:
        LAYOUT.log(layout.eval_stem(*EVAL_JOB)),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=0,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule pruning_table:
    input:
        evals=[LAYOUT.evaluation(*m) for m in evaluated_models()],
        prune_metrics=sorted({p for p in (prune_metrics_path(*m) for m in evaluated_models()) if p}),
    output:
        table=report(LAYOUT.table("pruning.csv"), caption="../report/pruning_table.rst",
                     category="Language-model pruning"),
        provenance=LAYOUT.provenance_beside(layout.table_stem("pruning")),
    params:
        job="iobs.pipeline.reporting:pruning_table",
    log:
        LAYOUT.log(layout.table_stem("pruning")),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    script:
        JOB_SCRIPT
