# Coarse jobs (iterative.granularity: chain; included by prune.smk): one-shot pruning per (model, method), I-OBS
# chains per (model, variant, sparsity) and, for a variant whose states do not depend on the sparsity (dense_ft),
# per (model, variant), every evaluation in process (iobs.pipeline.chains). Which is which comes from the
# registry's schedules (chain_variants, common.smk). Round 1 of every chain is read from the solver's one-shot job;
# the last round takes no gradient steps.

CHAIN_VARIANTS = registry.wildcard(chain_variants(sparsity_free=False))
SPARSITY_FREE_VARIANTS = registry.wildcard(chain_variants(sparsity_free=True))
SPARSITY_FREE_JOB = ("{model}", "{variant}")  # chain_stem's (model, variant): no sparsity


for _method in oneshot_group_methods():

    rule:
        name:
            f"oneshot_{_method}"
        input:
            unpack(lambda w: dense_input(w.model)),
            windows=lambda w: calibration_batch(w.model, 1),
            streams=lambda w: eval_stream_paths(w.model),
        output:
            models=[directory(p) for p in oneshot_paths("{model}", _method, "models")],
            metrics=oneshot_paths("{model}", _method, "metrics"),
            evals=oneshot_paths("{model}", _method, "evals"),
            provenance=LAYOUT.provenance_beside(layout.oneshot_stem("{model}", _method)),
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
            LAYOUT.log(layout.oneshot_stem("{model}", _method)),
        benchmark:
            LAYOUT.benchmark(layout.oneshot_stem("{model}", _method))
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
        models=directory(LAYOUT.pruned_model("{model}", "{variant}", "{sparsity}", ITER["rounds"])),
        provenance=LAYOUT.provenance_beside(layout.chain_stem("{model}", "{variant}", "{sparsity}")),
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
        checkpoint=lambda w: LAYOUT.chain_checkpoint(w.model, w.variant, w.sparsity),
        labels=lambda w: dict(model=w.model),
        eval=lambda w: eval_params(w.model),
        **CHAIN_PARAMS,
    log:
        LAYOUT.log(layout.chain_stem("{model}", "{variant}", "{sparsity}")),
    benchmark:
        LAYOUT.benchmark(layout.chain_stem("{model}", "{variant}", "{sparsity}"))
    threads: 1
    resources:
        mem_mb=6000,
        gpu=0,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule sparsity_free_chain:
    input:
        unpack(lambda w: chain_inputs(w.model, w.variant, ITER["sparsities"])),
    output:
        metrics=chain_paths(*SPARSITY_FREE_JOB, ITER["sparsities"], "metrics"),
        masks=chain_paths(*SPARSITY_FREE_JOB, ITER["sparsities"], "masks"),
        evals=chain_paths(*SPARSITY_FREE_JOB, ITER["sparsities"], "evals"),
        dense_evals=chain_paths(*SPARSITY_FREE_JOB, ITER["sparsities"], "dense_evals"),
        models=[directory(LAYOUT.pruned_model(*SPARSITY_FREE_JOB, s, ITER["rounds"])) for s in ITER["sparsities"]],
        provenance=LAYOUT.provenance_beside(layout.chain_stem(*SPARSITY_FREE_JOB)),
    wildcard_constraints:
        variant=SPARSITY_FREE_VARIANTS,
    params:
        job="iobs.pipeline.chains:iterative_chain",
        model=lambda w: dense_param(w.model),
        model_key=lambda w: None if made_here(w.model) else model_key(w.model),
        dtype=lambda w: MODELS[w.model]["dtype"],
        variant=lambda w: w.variant,
        sparsities=ITER["sparsities"],
        checkpoint=lambda w: LAYOUT.chain_checkpoint(w.model, w.variant),
        labels=lambda w: dict(model=w.model),
        eval=lambda w: eval_params(w.model),
        **CHAIN_PARAMS,
    log:
        LAYOUT.log(layout.chain_stem(*SPARSITY_FREE_JOB)),
    benchmark:
        LAYOUT.benchmark(layout.chain_stem(*SPARSITY_FREE_JOB))
    threads: 1
    resources:
        mem_mb=6000,
        gpu=0,
    conda:
        ENV
    script:
        JOB_SCRIPT
