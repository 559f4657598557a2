# Text and tokens: the stdlib corpus and tokenizer (for models pretrained here), token streams of every configured
# source, and the calibration batches (batch 0 = the base set every one-shot method uses; batch b = round b+1's).


rule corpus:
    output:
        train=f"{RESULTS}/data/corpus/train.txt",
        valid=f"{RESULTS}/data/corpus/valid.txt",
        test=f"{RESULTS}/data/corpus/test.txt",
        manifest=f"{RESULTS}/data/corpus/manifest.json",
        provenance=f"{RESULTS}/data/corpus/provenance.json",
    params:
        job="iobs.pipeline.data:corpus",
        stdlib_dir=config["corpus"]["stdlib_dir"],
        fractions=config["corpus"]["fractions"],
        max_eval_file_bytes=config["corpus"]["max_eval_file_bytes"],
    log:
        f"{RESULTS}/logs/data/corpus.log",
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
        tokenizer=directory(f"{RESULTS}/data/tokenizer"),
        provenance=f"{RESULTS}/data/tokenizer.provenance.json",
    params:
        job="iobs.pipeline.data:tokenizer",
        vocab_size=config["tokenizer"]["vocab_size"],
    log:
        f"{RESULTS}/logs/data/tokenizer.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/tokenizer.tsv"
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
        tokens=f"{RESULTS}/data/streams/{{tok}}/{{source}}.pt",
        provenance=f"{RESULTS}/data/streams/{{tok}}/{{source}}.provenance.json",
    params:
        job="iobs.pipeline.data:tokenize",
        source=lambda w: SOURCES[w.source][0],
        source_key=lambda w: SOURCES[w.source][1],
        tokenizer=lambda w: None if w.tok == LOCAL_TOKENIZER else existing_model_source(w.tok),
        max_tokens=lambda w: SOURCES[w.source][0].get("max_tokens"),
    log:
        f"{RESULTS}/logs/data/streams/{{tok}}/{{source}}.log",
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
        windows=f"{RESULTS}/calibration/{{tok}}/batch{{batch}}.pt",
        provenance=f"{RESULTS}/calibration/{{tok}}/batch{{batch}}.provenance.json",
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
        f"{RESULTS}/logs/calibration/{{tok}}/batch{{batch}}.log",
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    script:
        JOB_SCRIPT
