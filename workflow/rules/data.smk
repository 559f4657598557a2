# Text and tokens: the stdlib corpus and tokenizer (for models pretrained here), token streams of every configured
# source, and the calibration batches (batch 0 = the base set every one-shot method uses; batch b = round b+1's).


rule corpus:
    output:
        train=LAYOUT.corpus_split("train"),
        valid=LAYOUT.corpus_split("valid"),
        test=LAYOUT.corpus_split("test"),
        manifest=LAYOUT.path(layout.CORPUS_STEM, "manifest.json"),
        provenance=LAYOUT.provenance(layout.CORPUS_STEM),
    params:
        job="iobs.pipeline.data:corpus",
        stdlib_dir=config["corpus"]["stdlib_dir"],
        fractions=config["corpus"]["fractions"],
        max_eval_file_bytes=config["corpus"]["max_eval_file_bytes"],
    log:
        LAYOUT.log(layout.CORPUS_STEM),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule tokenizer:
    input:
        train=rules.corpus.output.train,
    output:
        tokenizer=directory(LAYOUT.tokenizer()),
        provenance=LAYOUT.provenance_beside(layout.TOKENIZER_STEM),
    params:
        job="iobs.pipeline.data:tokenizer",
        vocab_size=config["tokenizer"]["vocab_size"],
    log:
        LAYOUT.log(layout.TOKENIZER_STEM),
    benchmark:
        LAYOUT.benchmark(layout.TOKENIZER_STEM)
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule tokenize:
    input:
        unpack(tokenize_inputs),
    output:
        tokens=LAYOUT.stream("{tok}", "{source}"),
        provenance=LAYOUT.provenance_beside(layout.stream_stem("{tok}", "{source}")),
    params:
        job="iobs.pipeline.data:tokenize",
        source=lambda w: SOURCES[w.source][0],
        source_key=lambda w: SOURCES[w.source][1],
        tokenizer=lambda w: None if w.tok == LOCAL_TOKENIZER else existing_model_source(w.tok),
        max_tokens=lambda w: SOURCES[w.source][0].get("max_tokens"),
    log:
        LAYOUT.log(layout.stream_stem("{tok}", "{source}")),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    script:
        JOB_SCRIPT


rule calibration:
    input:
        unpack(calibration_inputs),
    output:
        windows=LAYOUT.calibration_batch("{tok}", "{batch}"),
        provenance=LAYOUT.provenance_beside(layout.calibration_stem("{tok}", "{batch}")),
    wildcard_constraints:
        batch=r"\d+",
    params:
        job="iobs.pipeline.data:calibration",
        num_windows=config["calibration"]["num_windows"],
        length=config["calibration"]["length"],
        seed=config["calibration"]["seed"],
        round_index=lambda w: int(w.batch),
        source=config["calibration"].get("source"),
        source_key="calibration.source",
        tokenizer=lambda w: None if calibration_bos(w.tok)[0] == LOCAL_TOKENIZER
                            else existing_model_source(calibration_bos(w.tok)[0]),
        bos=lambda w: calibration_bos_params(w.tok)["bos"],
        bos_key=lambda w: calibration_bos_params(w.tok)["bos_key"],
        bos_model=lambda w: calibration_bos_params(w.tok)["bos_model"],
    log:
        LAYOUT.log(layout.calibration_stem("{tok}", "{batch}")),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    script:
        JOB_SCRIPT
