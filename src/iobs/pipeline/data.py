"""Jobs of workflow/rules/data.smk: the corpus, the tokenizer, token streams and calibration windows.

Each docstring lists the named inputs, outputs and params the Snakemake rule must provide; every job may also have
a `provenance` output (written by the runner) and gets the dict it returns merged into it.
"""

from __future__ import annotations

import time

from iobs.atomic import atomic_write_json, atomic_write_text
from iobs.data.corpus import DEFAULT_EXCLUDE, DEFAULT_FRACTIONS, DEFAULT_MAX_EVAL_FILE_BYTES, SPLITS, build_corpus
from iobs.data.files import atomic_save_tensor
from iobs.data.sources import load_documents, load_text, normalize_spec
from iobs.data.streams import load_stream, save_stream, tokenize_text
from iobs.data.tokenizer import DEFAULT_VOCAB_SIZE, limit_tokenizer_threads, save_tokenizer, train_bpe
from iobs.data.windows import calibration_batch, document_windows, round_seed
from iobs.errors import DataError
from iobs.models.bos import job_bos_policy
from iobs.pipeline.runner import JobContext


def corpus(ctx: JobContext) -> dict:
    """Build the stdlib corpus (iobs.data.corpus).

    outputs: train, valid, test (text files), manifest (JSON).
    params: stdlib_dir (null = the running interpreter's), fractions ({train, valid, test}, default 0.9/0.05/0.05),
            exclude (fnmatch globs on paths relative to stdlib_dir, default corpus.DEFAULT_EXCLUDE),
            max_eval_file_bytes (files larger than this always go to train; null = no limit; default 100000).
    """
    p = ctx.params
    built = build_corpus(p.get("stdlib_dir"), p.get("fractions") or DEFAULT_FRACTIONS,
                         p.get("exclude", DEFAULT_EXCLUDE), p.get("max_eval_file_bytes", DEFAULT_MAX_EVAL_FILE_BYTES))
    for split in SPLITS:
        atomic_write_text(ctx.out(split), built.texts[split])
    atomic_write_json(ctx.out("manifest"), built.manifest)
    return {"corpus": {k: built.manifest[k] for k in ("python_version", "files_sha256", "splits")}}


def tokenizer(ctx: JobContext) -> dict:
    """Train the byte-level BPE tokenizer on the train text (iobs.data.tokenizer).

    inputs: train (text file). outputs: tokenizer (directory, loadable with AutoTokenizer).
    params: vocab_size (default 4096), min_frequency (default 2).
    """
    limit_tokenizer_threads(ctx.threads)
    start = time.perf_counter()
    trained = train_bpe([ctx.input["train"]], int(ctx.params.get("vocab_size", DEFAULT_VOCAB_SIZE)),
                        int(ctx.params.get("min_frequency", 2)))
    seconds = time.perf_counter() - start
    save_tokenizer(trained, ctx.out("tokenizer"))
    return {"tokenizer": {"vocab_size": len(trained), "train_seconds": round(seconds, 2)}}


def _tokenizer_for(ctx: JobContext):
    from iobs.models.load import load_tokenizer

    if ctx.input.get("tokenizer"):
        return load_tokenizer(ctx.input["tokenizer"], key="tokenizer input")
    if ctx.params.get("tokenizer"):
        return load_tokenizer(ctx.params["tokenizer"], key=_model_key(ctx))
    raise DataError(f"job {ctx.name} needs a tokenizer: give a 'tokenizer' input directory or param (hub id)")


def _model_key(ctx: JobContext, fix: bool = True) -> str:
    """The config key to name about param `tokenizer` (an existing model's hub id or path; rules key its streams and
    calibration batches by the model's name, wildcard tok). fix=True: the key that fixes a failed load, the model's
    local copy (models.<name>.path); fix=False: the key the source came from (the path wins over the hub id)."""
    from iobs.models.load import looks_local

    if ctx.params.get("tokenizer_key"):
        return ctx.params["tokenizer_key"]
    tok = ctx.wildcards.get("tok")
    if not tok:
        return "tokenizer"
    from iobs.models.gguf import is_gguf_source

    if is_gguf_source(ctx.params["tokenizer"]):
        return f"models.{tok}.gguf"
    return f"models.{tok}.path" if fix or looks_local(ctx.params["tokenizer"]) else f"models.{tok}.hub"


def _source_spec(ctx: JobContext) -> tuple[dict, str]:
    """The source spec and its config key; an input named `text` overrides the spec's path (or is the source)."""
    key = ctx.params.get("source_key", "source")
    spec = ctx.params.get("source")
    if ctx.input.get("text"):
        spec = normalize_spec(spec or "text", key)
        spec["path"] = ctx.input["text"]
    if spec is None:
        raise DataError(f"job {ctx.name} needs a text source: give a 'source' param or a 'text' input")
    return normalize_spec(spec, key), key


def tokenize(ctx: JobContext) -> dict:
    """Tokenize one text source into a token stream (iobs.data.sources, iobs.data.streams).

    inputs: tokenizer (directory; or param tokenizer = a hub id), text (optional: a local file; it becomes the
            source's path, or the source itself if no `source` param is given).
    outputs: tokens (.pt, Tensor[T] int32).
    params: source (a source spec, see iobs.data.sources), source_key (its config key, named in error messages),
            max_tokens (null = all; C4 validation protocol: 256 x seqlen), add_special_tokens (default true: hub
            tokenizers put their BOS at the start, as in the reference).
    """
    spec, key = _source_spec(ctx)
    text = load_text(spec, key)
    stream = tokenize_text(_tokenizer_for(ctx), text, ctx.params.get("max_tokens"),
                           bool(ctx.params.get("add_special_tokens", True)))
    save_stream(ctx.out("tokens"), stream)
    return {"stream": {"source": spec, "chars": len(text), "tokens": int(stream.numel()),
                       "chars_per_token": round(len(text) / stream.numel(), 4)}}


def calibration(ctx: JobContext) -> dict:
    """Calibration windows, saved as one Tensor[num_windows, length] int64 file (iobs.data.windows).

    Stream mode (input tokens): seeded random windows of the stream (default for the tiny models).
    Document mode (no tokens input; param source, e.g. {kind: c4, split: train}, and a tokenizer input or param):
    the SparseGPT/GPTQ C4 recipe, a random window inside a random document longer than `length` tokens.
    inputs: tokens (.pt stream) | tokenizer (directory, document mode).
    outputs: windows (.pt).
    params: num_windows (default 128), length (default 2048), seed (default 0), round_index (default 0 = the base
            calibration set; r >= 1 = the fresh batch of a later round), source / source_key (document mode),
            bos (window policy auto | always | never, default never = the reference windows; see iobs.data.bos),
            bos_key (its config key), bos_model (the model whose config.model_type `auto` reads; null = one
            made here).
    """
    p = ctx.params
    count, length, seed = int(p.get("num_windows", 128)), int(p.get("length", 2048)), int(p.get("seed", 0))
    if p.get("tokenizer"):  # an existing model: its windows must fit in its positions (checked before any pruning)
        from iobs.models.positions import check_positions, fetch_max_positions

        check_positions(ctx.wildcards.get("tok", str(p["tokenizer"])), _model_key(ctx, fix=False),
                        fetch_max_positions(str(p["tokenizer"])), {"calibration.length": length})
    bos = job_bos_policy(p.get("bos", "never"), p.get("bos_model"), lambda: _tokenizer_for(ctx),
                         p.get("bos_key", "bos"))
    if ctx.input.get("tokens"):
        windows = calibration_batch(load_stream(ctx.input["tokens"]), count, length, seed, int(p.get("round_index", 0)),
                                    bos.bos_id)
        mode = "stream"
    else:
        spec, key = _source_spec(ctx)
        documents = load_documents(spec, key)
        tok = _tokenizer_for(ctx)
        windows = document_windows(documents, lambda text: tok(text, verbose=False)["input_ids"], count, length,
                                   round_seed(seed, int(p.get("round_index", 0))), bos_id=bos.bos_id)
        mode = "documents"
    atomic_save_tensor(ctx.out("windows"), windows)
    return {"calibration": {"mode": mode, "shape": list(windows.shape), "seed": seed}, "bos": bos.record()}
