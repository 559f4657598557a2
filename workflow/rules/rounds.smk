# One job per one-shot prune and per round (iterative.granularity: round); included by prune.smk.

ONESHOT_JOB = ("{model}", "{method}", "{sparsity}", 0)  # (model, method, sparsity, round) of the layout
ROUND_JOB = ("{model}", "{variant}", "{sparsity}", "{round}")


rule prune_oneshot:
    input:
        unpack(lambda w: dense_input(w.model)),
        windows=lambda w: calibration_batch(w.model, 1),
    output:
        model=directory(LAYOUT.pruned_model(*ONESHOT_JOB)),
        metrics=LAYOUT.prune_metrics(*ONESHOT_JOB),
        provenance=LAYOUT.provenance(layout.round_stem(*ONESHOT_JOB)),
    wildcard_constraints:
        method=METHODS,
        sparsity=SPARSITY,
    params:
        job="iobs.pipeline.prune:prune_oneshot",
        model=lambda w: dense_param(w.model),
        model_key=lambda w: None if made_here(w.model) else model_key(w.model),
        dtype=lambda w: MODELS[w.model]["dtype"],
        method=lambda w: w.method,
        sparsity=lambda w: w.sparsity,
        options=lambda w: config["pruning"]["options"].get(w.method, {}),
    log:
        LAYOUT.log(layout.round_stem(*ONESHOT_JOB)),
    benchmark:
        LAYOUT.benchmark(layout.round_stem(*ONESHOT_JOB))
    threads: 1
    resources:
        mem_mb=4000,
        gpu=0,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule iterative_round:
    input:
        unpack(round_inputs),
    output:
        model=directory(LAYOUT.pruned_model(*ROUND_JOB)),
        state=round_state(directory(LAYOUT.round_state(*ROUND_JOB))),
        masks=LAYOUT.round_masks(*ROUND_JOB),
        metrics=LAYOUT.prune_metrics(*ROUND_JOB),
        provenance=LAYOUT.provenance(layout.round_stem(*ROUND_JOB)),
    wildcard_constraints:
        variant=VARIANTS,
        sparsity=SPARSITY,
        round=r"[1-9]\d*",
    params:
        job="iobs.pipeline.rounds:iterative_round",
        model=lambda w: dense_param(w.model),
        model_key=lambda w: None if made_here(w.model) else model_key(w.model),
        dtype=lambda w: MODELS[w.model]["dtype"],
        variant=lambda w: w.variant,
        round=lambda w: int(w.round),
        sparsity=lambda w: w.sparsity,
        solver=ITER["solver"],
        options=config["pruning"]["options"].get(ITER["solver"], {}),
        steps=ITER["steps"],
        seed=config["calibration"]["seed"],
    log:
        LAYOUT.log(layout.round_stem(*ROUND_JOB)),
    benchmark:
        LAYOUT.benchmark(layout.round_stem(*ROUND_JOB))
    threads: 1
    resources:
        mem_mb=6000,
        gpu=0,
    conda:
        ENV
    script:
        JOB_SCRIPT
