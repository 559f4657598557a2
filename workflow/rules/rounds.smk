# One job per one-shot prune and per round (iterative.granularity: round); included by prune.smk.


rule prune_oneshot:
    input:
        unpack(lambda w: dense_input(w.model)),
        windows=lambda w: f"{RESULTS}/calibration/{calibration_label(w.model)}/batch0.pt",
    output:
        model=directory(f"{RESULTS}/prune/{{model}}/{{method}}/{{sparsity}}/round0/model"),
        metrics=f"{RESULTS}/prune/{{model}}/{{method}}/{{sparsity}}/round0/metrics.json",
        provenance=f"{RESULTS}/prune/{{model}}/{{method}}/{{sparsity}}/round0/provenance.json",
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
        f"{RESULTS}/logs/prune/{{model}}/{{method}}/{{sparsity}}/round0.log",
    benchmark:
        f"{RESULTS}/benchmarks/prune/{{model}}/{{method}}/{{sparsity}}/round0.tsv"
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
        model=directory(f"{RESULTS}/prune/{{model}}/{{variant}}/{{sparsity}}/round{{round}}/model"),
        state=round_state(directory(f"{RESULTS}/prune/{{model}}/{{variant}}/{{sparsity}}/round{{round}}/state")),
        masks=f"{RESULTS}/prune/{{model}}/{{variant}}/{{sparsity}}/round{{round}}/masks.pt",
        metrics=f"{RESULTS}/prune/{{model}}/{{variant}}/{{sparsity}}/round{{round}}/metrics.json",
        provenance=f"{RESULTS}/prune/{{model}}/{{variant}}/{{sparsity}}/round{{round}}/provenance.json",
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
        f"{RESULTS}/logs/prune/{{model}}/{{variant}}/{{sparsity}}/round{{round}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prune/{{model}}/{{variant}}/{{sparsity}}/round{{round}}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        gpu=0,
    conda:
        ENV
    script:
        JOB_SCRIPT
