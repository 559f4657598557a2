# Shared helpers: config validation (before any job starts), paths and target lists.
import sys

# The package is imported from this checkout so that planning works even before `pip install -e .`.
sys.path.insert(0, f"{workflow.basedir}/src")

try:
    from iobs import registry
    from iobs.config import check_config_files, validate_config
    from iobs.errors import ConfigError
    from iobs.models.gguf import source_string as gguf_source_string
    from iobs.models.positions import check_planned_positions
    from iobs.notebooks import round_metrics_paths as notebook_round_metrics
except ImportError as err:
    sys.exit(f"iobs cannot be imported ({err}): run `make setup` or `pip install -e .` first")


def config_error(err):
    """One line and exit status 2, before any job starts (Snakemake prints no traceback for a SystemExit)."""
    print(f"config error: {err}", file=sys.stderr)
    sys.exit(2)


# Every config file is parsed strictly first (syntax errors with file, line and column; duplicate keys), since
# Snakemake's own loader lets a repeated key replace the first one silently.
# `--configfile X` replaces the embedded default instead of being merged into it (the paper's config is complete).
try:
    CONFIG_WHERE = check_config_files([*(() if workflow.overwrite_configfiles else ("config.yaml",)),
                                       *workflow.overwrite_configfiles])
except ConfigError as err:
    config_error(err)

if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


try:
    validate_config(config, where=CONFIG_WHERE)
    check_planned_positions(config)
except ConfigError as err:
    config_error(err)

# A Snakemake killed with SIGKILL leaves its lock behind: the next run removes it when the process that held it is
# gone (iobs.workdir), so that one command resumes (with --rerun-incomplete, set in the profiles).
if workflow.is_main_process:
    from iobs.workdir import record_lock_owner, remove_stale_lock

    _stale = remove_stale_lock()
    if _stale:
        print(_stale, file=sys.stderr)


onstart:
    if workflow.execution_settings.lock:  # --nolock runs hold no lock to record
        record_lock_owner()


JOB_SCRIPT = "../scripts/job.py"
ENV = "../envs/iobs.yaml"
RESULTS = "results"
SYN = config["synthetic"]

# ---- language models ------------------------------------------------------------------------------------------
import hashlib
import json

MODELS = config.get("models", {})
LOCAL_TOKENIZER = "bpe"  # the tokenizer trained here, shared by every model pretrained here
ONESHOT_METHODS = config["pruning"]["methods"] if MODELS else []
ITER = config["iterative"]


def made_here(model):
    return "family" in MODELS[model]


def tokenizer_label(model):
    """Streams and calibration batches are keyed by tokenizer: models pretrained here share one."""
    return LOCAL_TOKENIZER if made_here(model) else model


def existing_model_source(model):
    """The string that names an existing model to the jobs: a path, a hub id, or a GGUF source (iobs.models.gguf)."""
    spec = MODELS[model]
    if spec.get("gguf"):
        return gguf_source_string(spec["gguf"], f"models.{model}.gguf")
    return spec.get("path") or spec["hub"]


def dense_input(model):
    """{model: dir} for models made here; {} for hub/local models (passed as a param, not a file dependency)."""
    return {"model": f"{RESULTS}/models/{model}/dense"} if made_here(model) else {}


def dense_param(model):
    return None if made_here(model) else existing_model_source(model)


def model_key(model):
    spec = MODELS[model]
    if spec.get("gguf"):
        return f"models.{model}.gguf"
    return f"models.{model}.path" if spec.get("path") else f"models.{model}.hub"


def source_slug(spec):
    """A file-name-safe, content-derived name for a text source, so equal specs share one token stream."""
    slug = f"{spec['kind']}-{spec.get('split', 'default')}"
    extra = {k: v for k, v in spec.items() if k not in ("kind", "split")}
    if extra:
        slug = f"{slug}-{hashlib.sha1(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8]}"
    return slug


def _sources():
    """slug -> (source spec, the config key it came from), for every text source the config uses."""
    keyed = [(config["calibration"].get("source"), "calibration.source"),
             ({"kind": "stdlib", "split": "train"}, "corpus (train split)"),
             ({"kind": "stdlib", "split": "valid"}, "corpus (valid split)")]
    keyed += [(spec, f"eval.sets.{name}.{split}") for name, splits in config["eval"].get("sets", {}).items()
              for split, spec in splits.items()]
    return {source_slug(spec): (spec, key) for spec, key in reversed(keyed) if spec}


SOURCES = _sources() if MODELS else {}


def stream_path(tok, spec):
    return f"{RESULTS}/data/streams/{tok}/{source_slug(spec)}.pt"


def batch_index(round_index):
    """Calibration batch of round r (1-based): batch 0 (the base set) at round 1, then fresh ones unless fixed."""
    return 0 if ITER["batches"] == "fixed" else int(round_index) - 1


def model_dir(model, method, sparsity, round_index):
    """Where the model evaluated under (method, sparsity, round) lives (a directory, hub id or path)."""
    round_index = int(round_index)
    if method == "dense":
        return dense_input(model).get("model") or existing_model_source(model)
    if method == "dense_ft_dense":  # the matching dense reference: dense_ft's state after round r-1
        if round_index == 1:
            return model_dir(model, "dense", "0", 0)
        return f"{RESULTS}/prune/{model}/dense_ft/{sparsity}/round{round_index - 1}/state"
    return f"{RESULTS}/prune/{model}/{method}/{sparsity}/round{round_index}/model"


def evaluated_models():
    """(model, method, sparsity, round) of everything the pipeline evaluates."""
    out = []
    for model in MODELS:
        out.append((model, "dense", "0", 0))
        out += [(model, m, s, 0) for m in ONESHOT_METHODS for s in config["pruning"]["sparsities"]]
        for v in ITER["variants"]:
            for s in ITER["sparsities"]:
                out += [(model, v, s, r) for r in range(1, ITER["rounds"] + 1)]
                if v == "dense_ft":
                    out += [(model, "dense_ft_dense", s, r) for r in range(1, ITER["rounds"] + 1)]
    return out


# (eval set, split, source spec) of every evaluation stream, in config order
EVAL_STREAMS = [(name, split, spec) for name, splits in config["eval"].get("sets", {}).items()
                for split, spec in splits.items()]


def eval_path(model, method, sparsity, round_index):
    return f"{RESULTS}/eval/{model}/{method}/{sparsity}/round{round_index}/perplexity.json"


def prune_metrics_path(model, method, sparsity, round_index):
    """The metrics JSON of the job that made an evaluated model (None for the dense model and dense references)."""
    if method in ("dense", "dense_ft_dense"):
        return None
    return f"{RESULTS}/prune/{model}/{method}/{sparsity}/round{round_index}/metrics.json"


def lm_targets():
    return [f"{RESULTS}/tables/pruning.csv"] if MODELS else []


def round_metrics_paths():
    """metrics.json of every I-OBS and control round (their mask dynamics); one-shot jobs have none. The notebook
    gets the same list when opened by hand (iobs.notebooks)."""
    return notebook_round_metrics(config, RESULTS)


def report_targets():
    """The language-model tables and figures of rule lm_figures (report.smk); call it after that include."""
    return list(rules.lm_figures.output) if MODELS else []


# ---- input functions of the LM rules ----------------------------------------------------------------------


def tokenize_inputs(wildcards):
    spec = SOURCES[wildcards.source][0]
    inputs = {}
    if wildcards.tok == LOCAL_TOKENIZER:
        inputs["tokenizer"] = f"{RESULTS}/data/tokenizer"
    if spec["kind"] == "stdlib" and not spec.get("path"):
        inputs["text"] = f"{RESULTS}/data/corpus/{spec.get('split', 'test')}.txt"
    return inputs


def calibration_inputs(wildcards):
    tok, setting = calibration_bos(wildcards.tok)
    local = {"tokenizer": f"{RESULTS}/data/tokenizer"} if tok == LOCAL_TOKENIZER else {}
    if config["calibration"]["mode"] == "documents":
        return local
    tokens = {"tokens": stream_path(tok, config["calibration"]["source"])}
    return {**tokens, **local} if setting != "never" else tokens  # BOS windows need the tokenizer's BOS id


def round_inputs(wildcards):
    r = int(wildcards.round)
    base = f"{RESULTS}/prune/{wildcards.model}/{wildcards.variant}/{wildcards.sparsity}"
    inputs = {"windows": f"{RESULTS}/calibration/{calibration_label(wildcards.model)}/batch{batch_index(r)}.pt"}
    if r == 1:
        inputs.update(dense_input(wildcards.model))
    else:
        inputs["state"] = f"{base}/round{r - 1}/state"
        inputs["previous_masks"] = f"{base}/round{r - 1}/masks.pt"
        inputs["first_masks"] = f"{base}/round1/masks.pt"
    return inputs


# ---- chain granularity (iterative.granularity: chain, iobs.pipeline.chains) --------------------------------------
CHAIN = ITER["granularity"] == "chain"
ROUNDS = list(range(1, ITER["rounds"] + 1))
# variants whose chain is one job per (model, variant, sparsity); dense_ft's chain is one job per model
PROJECTED_VARIANTS = [v for v in ITER["variants"] if v != "dense_ft"]


def oneshot_sparsities(method):
    """The sparsities of a one-shot group job: the methods table's, plus round 1 of the chains for their solver."""
    labels = list(config["pruning"]["sparsities"]) if method in ONESHOT_METHODS else []
    if method == ITER["solver"] and ITER["rounds"] > 0:
        labels += [s for s in ITER["sparsities"] if s not in labels]
    return labels


def oneshot_group_methods():
    return [*ONESHOT_METHODS, *([ITER["solver"]] if ITER["rounds"] > 0 and ITER["solver"] not in ONESHOT_METHODS else [])]


def oneshot_paths(model, method, kind):
    """kind = models | metrics | evals, in oneshot_sparsities(method) order."""
    return [{"models": model_dir(model, method, s, 0), "metrics": prune_metrics_path(model, method, s, 0),
             "evals": eval_path(model, method, s, 0)}[kind] for s in oneshot_sparsities(method)]


def chain_sparsities(variant, sparsity=None):
    return list(ITER["sparsities"]) if variant == "dense_ft" else [sparsity]


def chain_paths(model, variant, sparsities, kind):
    """kind = metrics | masks | evals | dense_evals, per sparsity then per round (iobs.pipeline.chains)."""
    base = f"{RESULTS}/prune/{model}/{variant}"
    make = {"metrics": lambda s, r: f"{base}/{s}/round{r}/metrics.json",
            "masks": lambda s, r: f"{base}/{s}/round{r}/masks.pt",
            "evals": lambda s, r: eval_path(model, variant, s, r),
            "dense_evals": lambda s, r: eval_path(model, "dense_ft_dense", s, r)}[kind]
    return [make(s, r) for s in sparsities for r in ROUNDS]


def chain_inputs(model, variant, sparsities):
    solver = ITER["solver"]
    index = [oneshot_sparsities(solver).index(s) for s in sparsities]
    inputs = {
        "round1_models": [oneshot_paths(model, solver, "models")[i] for i in index],
        "round1_metrics": [oneshot_paths(model, solver, "metrics")[i] for i in index],
        "round1_evals": [oneshot_paths(model, solver, "evals")[i] for i in index],
        "windows": [f"{RESULTS}/calibration/{calibration_label(model)}/batch{batch_index(r)}.pt" for r in ROUNDS],
        "streams": [stream_path(tokenizer_label(model), spec) for _, _, spec in EVAL_STREAMS],
        **dense_input(model),
    }
    if variant == "dense_ft":
        inputs["dense_eval"] = eval_path(model, "dense", "0", 0)
    return inputs


def eval_params(model):
    """The in-process evaluation settings of the one-shot group and chain jobs (as rule evaluate's params)."""
    return dict(seqlen=config["eval"]["seqlen"], max_windows=config["eval"]["max_windows"],
                eval_batch_size=config["eval"]["batch_size"],
                streams=[dict(eval_set=name, split=split) for name, split, _ in EVAL_STREAMS],
                bos=bos_setting(model), bos_key=f"models.{model}.bos")


def eval_inputs(wildcards):
    tok = tokenizer_label(wildcards.model)
    inputs = {"streams": [stream_path(tok, spec) for _, _, spec in EVAL_STREAMS]}
    source = model_dir(wildcards.model, wildcards.method, wildcards.sparsity, wildcards.round)
    if source.startswith(f"{RESULTS}/"):
        inputs["model"] = source
    return inputs


# ---- MMLU (workflow/rules/mmlu.smk) and heavy round states ----------------------------------------------------
MMLU = config["mmlu"]
if CHAIN and MODELS and MMLU["enabled"] and set(MMLU["methods"]) & set(ITER["variants"]) and ITER["rounds"] > 1:
    config_error("mmlu.methods names round variants, whose models a chain keeps for its last round only: set "
                 "iterative.granularity: round (one job per round, every round's model kept), as configs/paper.yaml does")


def mmlu_models():
    """(model, method, sparsity, round) of the evaluated models that get MMLU (none unless mmlu.enabled)."""
    if not (MMLU["enabled"] and MODELS):
        return []
    return [m for m in evaluated_models() if m[1] in MMLU["methods"]]


def mmlu_path(model, method, sparsity, round_index):
    return f"{RESULTS}/mmlu/{model}/{method}/{sparsity}/round{round_index}/mmlu.json"


def mmlu_targets():
    return [f"{RESULTS}/tables/mmlu.csv"] if mmlu_models() else []


def mmlu_inputs(wildcards):
    """The model directory when the pipeline makes it (a hub id or local path of a dense model is a param)."""
    source = model_dir(wildcards.model, wildcards.method, wildcards.sparsity, wildcards.round)
    return {"model": source} if source.startswith(f"{RESULTS}/") else {}


def round_state(path):
    """A round's state directory (weights after its gradient steps): temp() unless iterative.keep_states."""
    return path if ITER["keep_states"] else temp(path)


# ---- window policy (iobs.data.bos): does every calibration / evaluation window begin with BOS ------------------
BOS_SUFFIX = "@bos"  # model names cannot contain "@" (schema: models.propertyNames)


def bos_setting(model):
    return MODELS[model].get("bos", "auto")


def calibration_label(model):
    """The {tok} of a model's calibration batches: its tokenizer's label, plus "@bos" for a model made here with
    bos: always (the local BPE adds no BOS, so auto means none for every model made here and they share batches;
    an existing model has its own label and the calibration job decides auto from its tokenizer and config)."""
    tok = tokenizer_label(model)
    return f"{tok}{BOS_SUFFIX}" if made_here(model) and bos_setting(model) == "always" else tok


def calibration_bos(tok):
    """(tokenizer label, bos setting) of a calibration {tok} wildcard."""
    if tok.endswith(BOS_SUFFIX):
        return tok.removesuffix(BOS_SUFFIX), "always"
    return tok, ("never" if tok == LOCAL_TOKENIZER else bos_setting(tok))


def calibration_bos_params(tok):
    """The calibration job's bos, bos_key and bos_model params for a {tok} wildcard."""
    base, setting = calibration_bos(tok)
    if base == LOCAL_TOKENIZER:
        return {"bos": setting, "bos_key": "models.<name>.bos", "bos_model": None}
    return {"bos": setting, "bos_key": f"models.{base}.bos", "bos_model": existing_model_source(base)}
