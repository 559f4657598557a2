# Tiny models pretrained here on the stdlib corpus; they are saved with save_pretrained and loaded like hub models.


rule pretrain:
    input:
        tokenizer=rules.tokenizer.output.tokenizer,
        train=f"{RESULTS}/data/streams/{LOCAL_TOKENIZER}/stdlib-train.pt",
        valid=f"{RESULTS}/data/streams/{LOCAL_TOKENIZER}/stdlib-valid.pt",
    output:
        model=directory(f"{RESULTS}/models/{{model}}/dense"),
        metrics=f"{RESULTS}/models/{{model}}/pretrain.json",
        provenance=f"{RESULTS}/models/{{model}}/provenance.json",
    params:
        job="iobs.pipeline.models:pretrain_tiny",
        family=lambda w: MODELS[w.model]["family"],
        dims=lambda w: MODELS[w.model].get("dims"),
        pretrain=lambda w: MODELS[w.model].get("pretrain", {}),
    log:
        f"{RESULTS}/logs/models/{{model}}/pretrain.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/{{model}}/pretrain.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    script:
        JOB_SCRIPT
