# Tiny models pretrained here on the stdlib corpus; they are saved with save_pretrained and loaded like hub models.


rule pretrain:
    input:
        tokenizer=rules.tokenizer.output.tokenizer,
        train=stream_path(LOCAL_TOKENIZER, {"kind": "stdlib", "split": "train"}),
        valid=stream_path(LOCAL_TOKENIZER, {"kind": "stdlib", "split": "valid"}),
    output:
        model=directory(LAYOUT.dense_model("{model}")),
        metrics=LAYOUT.pretrain_metrics("{model}"),
        provenance=LAYOUT.provenance(layout.model_stem("{model}")),
    params:
        job="iobs.pipeline.models:pretrain_tiny",
        family=lambda w: MODELS[w.model]["family"],
        dims=lambda w: MODELS[w.model].get("dims"),
        pretrain=lambda w: MODELS[w.model].get("pretrain", {}),
    log:
        LAYOUT.log(layout.pretrain_stem("{model}")),
    benchmark:
        LAYOUT.benchmark(layout.pretrain_stem("{model}"))
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    script:
        JOB_SCRIPT
