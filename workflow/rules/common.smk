# Shared helpers: config validation (before any job starts), the run's planning and target lists. Every path under
# results/ comes from LAYOUT (iobs.pipeline.layout), which the rules ask which artifact is which.
import sys

# The package is imported from this checkout so that planning works even before `pip install -e .`.
sys.path.insert(0, f"{workflow.basedir}/src")

try:
    from iobs import registry
    from iobs.config import check_config_files, validate_config
    from iobs.errors import ConfigError
    from iobs.models.gguf import source_string as gguf_source_string
    from iobs.models.positions import check_planned_positions
    from iobs.pipeline import layout
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
# gone (iobs.pipeline.stale_lock), so that one command resumes (with --rerun-incomplete, set in the profiles).
if workflow.is_main_process:
    from iobs.pipeline.stale_lock import record_lock_owner, remove_stale_lock

    _stale = remove_stale_lock()
    if _stale:
        print(_stale, file=sys.stderr)


onstart:
    if workflow.execution_settings.lock:  # --nolock runs hold no lock to record
        record_lock_owner()


JOB_SCRIPT = "../scripts/job.py"
ENV = "../envs/iobs.yaml"
LAYOUT = layout.Layout("results")  # the run's results folder, relative to the working directory
SYN = config["synthetic"]

# ---- language models ------------------------------------------------------------------------------------------
MODELS = config.get("models", {})
LOCAL_TOKENIZER = layout.LOCAL_TOKENIZER  # the tokenizer trained here, shared by every model pretrained here
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
    return {"model": LAYOUT.dense_model(model)} if made_here(model) else {}


def dense_source(model):
    """The dense model as the jobs name it: its directory when made here, else its path, hub id or GGUF source."""
    return dense_input(model).get("model") or existing_model_source(model)


def dense_param(model):
    return None if made_here(model) else existing_model_source(model)


def model_key(model):
    spec = MODELS[model]
    if spec.get("gguf"):
        return f"models.{model}.gguf"
    return f"models.{model}.path" if spec.get("path") else f"models.{model}.hub"


def _sources():
    """slug -> (source spec, the config key it came from), for every text source the config uses."""
    keyed = [(config["calibration"].get("source"), "calibration.source"),
             ({"kind": "stdlib", "split": "train"}, "corpus (train split)"),
             ({"kind": "stdlib", "split": "valid"}, "corpus (valid split)")]
    keyed += [(spec, f"eval.sets.{name}.{split}") for name, splits in config["eval"].get("sets", {}).items()
              for split, spec in splits.items()]
    return {layout.source_slug(spec): (spec, key) for spec, key in reversed(keyed) if spec}


SOURCES = _sources() if MODELS else {}


def stream_path(tok, spec):
    return LAYOUT.stream(tok, layout.source_slug(spec))


def calibration_batch(model, round_index):
    """The calibration batch file of round r (1-based) of a model (iterative.batches: fresh or fixed)."""
    return LAYOUT.calibration_batch(calibration_label(model), layout.batch_index(round_index, ITER["batches"]))


def model_dir(model, method, sparsity, round_index):
    """Where the model evaluated under (method, sparsity, round) lives (a directory, hub id or path)."""
    return LAYOUT.evaluated_model(model, method, sparsity, round_index, dense_source(model))


def chain_variants(sparsity_free):
    """The registered variants, in their order, whose chain, with
    iterative.granularity: chain, is one job per (model, variant) over every sparsity (sparsity_free=True: their
    states never see a projection, registry Schedule.sparsity_free_states, e.g. dense_ft; the job also evaluates
    those dense states, registry.dense_reference) or one job per (model, variant, sparsity) (sparsity_free=False)."""
    free = registry.sparsity_free_variants()
    return [v for v in registry.variant_names() if (v in free) == sparsity_free]


def evaluated_models():
    """(model, method, sparsity, round) of everything the pipeline evaluates."""
    out = []
    for model in MODELS:
        out.append((model, "dense", "0", 0))
        out += [(model, m, s, 0) for m in ONESHOT_METHODS for s in config["pruning"]["sparsities"]]
        for v in ITER["variants"]:
            for s in ITER["sparsities"]:
                out += [(model, v, s, r) for r in range(1, ITER["rounds"] + 1)]
                if v in registry.sparsity_free_variants():  # its dense states, evaluated too (dense_ft_dense)
                    out += [(model, registry.dense_reference(v), s, r) for r in range(1, ITER["rounds"] + 1)]
    return out


# (eval set, split, source spec) of every evaluation stream, in config order
EVAL_STREAMS = [(name, split, spec) for name, splits in config["eval"].get("sets", {}).items()
                for split, spec in splits.items()]


def eval_stream_paths(model):
    """The token streams of every evaluation stream, in EVAL_STREAMS order, as the model's tokenizer cuts them."""
    return [stream_path(tokenizer_label(model), spec) for _, _, spec in EVAL_STREAMS]


def prune_metrics_path(model, method, sparsity, round_index):
    """The metrics JSON of the job that made an evaluated model (None for the dense model and dense references)."""
    if method == "dense" or registry.reference_variant(method):
        return None
    return LAYOUT.prune_metrics(model, method, sparsity, round_index)


def synthetic_targets():
    """The tables of the synthetic notebook rule (the figures directory comes with them)."""
    return [LAYOUT.table("synthetic_final.csv"), LAYOUT.table("synthetic_rates.csv")]


def lm_targets():
    return [LAYOUT.table("pruning.csv")] if MODELS else []


def round_metrics_paths():
    """metrics.json of every I-OBS and control round (their mask dynamics); one-shot jobs have none. The notebook
    gets the same list when opened by hand (iobs.notebooks)."""
    return LAYOUT.round_metrics(MODELS, ITER["variants"], ITER["sparsities"], ITER["rounds"])


def report_targets():
    """The language-model tables and figures of rule lm_figures (report.smk); call it after that include."""
    return list(rules.lm_figures.output) if MODELS else []


# ---- input functions of the LM rules ----------------------------------------------------------------------


def tokenize_inputs(wildcards):
    spec = SOURCES[wildcards.source][0]
    inputs = {}
    if wildcards.tok == LOCAL_TOKENIZER:
        inputs["tokenizer"] = LAYOUT.tokenizer()
    if spec["kind"] == "stdlib" and not spec.get("path"):
        inputs["text"] = LAYOUT.corpus_split(spec.get("split", "test"))
    return inputs


def calibration_inputs(wildcards):
    tok, setting = calibration_bos(wildcards.tok)
    local = {"tokenizer": LAYOUT.tokenizer()} if tok == LOCAL_TOKENIZER else {}
    if config["calibration"]["mode"] == "documents":
        return local
    tokens = {"tokens": stream_path(tok, config["calibration"]["source"])}
    return {**tokens, **local} if setting != "never" else tokens  # BOS windows need the tokenizer's BOS id


def round_inputs(wildcards):
    model, variant, sparsity, r = wildcards.model, wildcards.variant, wildcards.sparsity, int(wildcards.round)
    inputs = {"windows": calibration_batch(model, r)}
    if r == 1:
        inputs.update(dense_input(model))
    else:
        inputs["state"] = LAYOUT.round_state(model, variant, sparsity, r - 1)
        inputs["previous_masks"] = LAYOUT.round_masks(model, variant, sparsity, r - 1)
        inputs["first_masks"] = LAYOUT.round_masks(model, variant, sparsity, 1)
    return inputs


# ---- chain granularity (iterative.granularity: chain, iobs.pipeline.chains) --------------------------------------
CHAIN = ITER["granularity"] == "chain"
ROUNDS = list(range(1, ITER["rounds"] + 1))


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
    artifact = {"models": LAYOUT.pruned_model, "metrics": LAYOUT.prune_metrics, "evals": LAYOUT.evaluation}[kind]
    return [artifact(model, method, s, 0) for s in oneshot_sparsities(method)]


def chain_sparsities(variant, sparsity=None):
    return list(ITER["sparsities"]) if variant in registry.sparsity_free_variants() else [sparsity]


def chain_paths(model, variant, sparsities, kind):
    """kind = metrics | masks | evals | dense_evals, per sparsity then per round (iobs.pipeline.chains)."""
    if kind == "dense_evals":  # a sparsity-free variant's dense states (variant may be the "{variant}" pattern)
        return [LAYOUT.evaluation(model, registry.dense_reference(variant), s, r) for s in sparsities for r in ROUNDS]
    artifact = {"metrics": LAYOUT.prune_metrics, "masks": LAYOUT.round_masks, "evals": LAYOUT.evaluation}[kind]
    return [artifact(model, variant, s, r) for s in sparsities for r in ROUNDS]


def chain_inputs(model, variant, sparsities):
    solver = ITER["solver"]
    index = [oneshot_sparsities(solver).index(s) for s in sparsities]
    inputs = {
        "round1_models": [oneshot_paths(model, solver, "models")[i] for i in index],
        "round1_metrics": [oneshot_paths(model, solver, "metrics")[i] for i in index],
        "round1_evals": [oneshot_paths(model, solver, "evals")[i] for i in index],
        "windows": [calibration_batch(model, r) for r in ROUNDS],
        "streams": eval_stream_paths(model),
        **dense_input(model),
    }
    if variant in registry.sparsity_free_variants():
        inputs["dense_eval"] = LAYOUT.evaluation(model, "dense", "0", 0)
    return inputs


def eval_params(model):
    """The in-process evaluation settings of the one-shot group and chain jobs (as rule evaluate's params)."""
    return dict(seqlen=config["eval"]["seqlen"], max_windows=config["eval"]["max_windows"],
                eval_batch_size=config["eval"]["batch_size"],
                streams=[dict(eval_set=name, split=split) for name, split, _ in EVAL_STREAMS],
                bos=bos_setting(model), bos_key=f"models.{model}.bos")


def eval_inputs(wildcards):
    inputs = {"streams": eval_stream_paths(wildcards.model)}
    source = model_dir(wildcards.model, wildcards.method, wildcards.sparsity, wildcards.round)
    if LAYOUT.inside(source):
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


def mmlu_targets():
    return [LAYOUT.table("mmlu.csv")] if mmlu_models() else []


def mmlu_inputs(wildcards):
    """The model directory when the pipeline makes it (a hub id or local path of a dense model is a param)."""
    source = model_dir(wildcards.model, wildcards.method, wildcards.sparsity, wildcards.round)
    return {"model": source} if LAYOUT.inside(source) else {}


def round_state(path):
    """A round's state directory (weights after its gradient steps): temp() unless iterative.keep_states."""
    return path if ITER["keep_states"] else temp(path)


# ---- window policy (iobs.data.bos): does every calibration / evaluation window begin with BOS ------------------
def bos_setting(model):
    return MODELS[model].get("bos", "auto")


def calibration_label(model):
    """The {tok} of a model's calibration batches: its tokenizer's label, plus "@bos" for a model made here with
    bos: always (the local BPE adds no BOS, so auto means none for every model made here and they share batches;
    an existing model has its own label and the calibration job decides auto from its tokenizer and config)."""
    return layout.calibration_label(tokenizer_label(model), made_here(model) and bos_setting(model) == "always")


def calibration_bos(tok):
    """(tokenizer label, bos setting) of a calibration {tok} wildcard."""
    base, bos_always = layout.parse_calibration_label(tok)
    if bos_always:
        return base, "always"
    return tok, ("never" if tok == LOCAL_TOKENIZER else bos_setting(tok))


def calibration_bos_params(tok):
    """The calibration job's bos, bos_key and bos_model params for a {tok} wildcard."""
    base, setting = calibration_bos(tok)
    if base == LOCAL_TOKENIZER:
        return {"bos": setting, "bos_key": "models.<name>.bos", "bos_model": None}
    return {"bos": setting, "bos_key": f"models.{base}.bos", "bos_model": existing_model_source(base)}
