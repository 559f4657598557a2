# Coarse jobs (iterative.granularity: chain; included by prune.smk): one-shot pruning per (model, method), I-OBS
# chains per (model, variant, sparsity) and dense_ft per model, every evaluation in process (iobs.pipeline.chains).
# Round 1 of every chain is read from the solver's one-shot job; the last round takes no gradient steps.

CHAIN_VARIANTS = registry.wildcard(PROJECTED_VARIANTS)


for _method in oneshot_group_methods():

    rule:
        name:
            f"oneshot_{_method}"
        input:
            unpack(lambda w: dense_input(w.model)),
            windows=lambda w: f"{RESULTS}/calibration/{calibration_label(w.model)}/batch0.pt",
            streams=lambda w: [stream_path(tokenizer_label(w.model), spec) for _, _, spec in EVAL_STREAMS],
        output:
            models=[directory(p) for p in oneshot_paths("{model}", _method, "models")],
            metrics=oneshot_paths("{model}", _method, "metrics"),
            evals=oneshot_paths("{model}", _method, "evals"),
            provenance=f"{RESULTS}/prune/{{model}}/{_method}/oneshot.provenance.json",
        params:
            job="iobs.pipeline.chains:oneshot_group",
            model=lambda w: dense_param(w.model),
            model_key=lambda w: None if made_here(w.model) else model_key(w.model),
            dtype=lambda w: MODELS[w.model]["dtype"],
            method=_method,
            sparsities=oneshot_sparsities(_method),
            options=config["pruning"]["options"].get(_method, {}),
            labels=lambda w: dict(model=w.model),
            eval=lambda w: eval_params(w.model),
        log:
            f"{RESULTS}/logs/prune/{{model}}/{_method}/oneshot.log",
        benchmark:
            f"{RESULTS}/benchmarks/prune/{{model}}/{_method}/oneshot.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            gpu=0,
        conda:
            ENV
        script:
            JOB_SCRIPT


CHAIN_PARAMS = dict(
    solver=ITER["solver"],
    rounds=ITER["rounds"],
    options=config["pruning"]["options"].get(ITER["solver"], {}),
    steps=ITER["steps"],
    seed=config["calibration"]["seed"],
)


rule iterative_chain:
    input:
        unpack(lambda w: chain_inputs(w.model, w.variant, [w.sparsity])),
    output:
        metrics=chain_paths("{model}", "{variant}", ["{sparsity}"], "metrics"),
        masks=chain_paths("{model}", "{variant}", ["{sparsity}"], "masks"),
        evals=chain_paths("{model}", "{variant}", ["{sparsity}"], "evals"),
        models=directory(f"{RESULTS}/prune/{{model}}/{{variant}}/{{sparsity}}/round{ITER['rounds']}/model"),
        provenance=f"{RESULTS}/prune/{{model}}/{{variant}}/{{sparsity}}/chain.provenance.json",
    wildcard_constraints:
        variant=CHAIN_VARIANTS,
        sparsity=SPARSITY,
    params:
        job="iobs.pipeline.chains:iterative_chain",
        model=lambda w: dense_param(w.model),
        model_key=lambda w: None if made_here(w.model) else model_key(w.model),
        dtype=lambda w: MODELS[w.model]["dtype"],
        variant=lambda w: w.variant,
        sparsities=lambda w: [w.sparsity],
        checkpoint=lambda w: f"{RESULTS}/prune/{w.model}/{w.variant}/{w.sparsity}/chain.partial",
        labels=lambda w: dict(model=w.model),
        eval=lambda w: eval_params(w.model),
        **CHAIN_PARAMS,
    log:
        f"{RESULTS}/logs/prune/{{model}}/{{variant}}/{{sparsity}}/chain.log",
    benchmark:
        f"{RESULTS}/benchmarks/prune/{{model}}/{{variant}}/{{sparsity}}/chain.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        gpu=0,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule dense_ft_chain:
    input:
        unpack(lambda w: chain_inputs(w.model, "dense_ft", ITER["sparsities"])),
    output:
        metrics=chain_paths("{model}", "dense_ft", ITER["sparsities"], "metrics"),
        masks=chain_paths("{model}", "dense_ft", ITER["sparsities"], "masks"),
        evals=chain_paths("{model}", "dense_ft", ITER["sparsities"], "evals"),
        dense_evals=chain_paths("{model}", "dense_ft", ITER["sparsities"], "dense_evals"),
        models=[directory(f"{RESULTS}/prune/{{model}}/dense_ft/{s}/round{ITER['rounds']}/model")
                for s in ITER["sparsities"]],
        provenance=f"{RESULTS}/prune/{{model}}/dense_ft/chain.provenance.json",
    params:
        job="iobs.pipeline.chains:iterative_chain",
        model=lambda w: dense_param(w.model),
        model_key=lambda w: None if made_here(w.model) else model_key(w.model),
        dtype=lambda w: MODELS[w.model]["dtype"],
        variant="dense_ft",
        sparsities=ITER["sparsities"],
        checkpoint=lambda w: f"{RESULTS}/prune/{w.model}/dense_ft/chain.partial",
        labels=lambda w: dict(model=w.model),
        eval=lambda w: eval_params(w.model),
        **CHAIN_PARAMS,
    log:
        f"{RESULTS}/logs/prune/{{model}}/dense_ft/chain.log",
    benchmark:
        f"{RESULTS}/benchmarks/prune/{{model}}/dense_ft/chain.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        gpu=0,
    conda:
        ENV
    script:
        JOB_SCRIPT
