"""The config schema: the default validates, bad configs stop with one line naming the key and what is allowed."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from iobs.config import TINY_DEFAULT_MAX_POSITIONS, check_files, load_config, load_schema, validate_config
from iobs.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_config():
    return load_config(ROOT / "config.yaml")


def test_default_config_is_valid(default_config):
    validate_config(copy.deepcopy(default_config))


def test_defaults_are_filled():
    config = {"synthetic": {"experiments": {"g": {"prior": "gaussian", "n": 20, "d": 10, "k_true": 2, "k": 4}}}}
    validate_config(config)
    exp = config["synthetic"]["experiments"]["g"]
    assert exp["iterations"] == 750 and exp["runs"] == 20 and exp["step"] == "paper"
    assert config["synthetic"]["seed"] == 1234


def _error(config) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_key_names_the_key_and_the_allowed_ones(default_config):
    config = copy.deepcopy(default_config)
    config["synthetic"]["experiments"]["gaussian"]["nsamples"] = 3
    message = _error(config)
    assert "synthetic.experiments.gaussian.nsamples" in message
    assert "allowed keys" in message and "iterations" in message


def test_unknown_top_level_key(default_config):
    config = copy.deepcopy(default_config)
    config["synthetc"] = {}
    assert "unknown key 'synthetc'" in _error(config)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("n", 0, "synthetic.experiments.gaussian.n: 0 is out of range (must be >= 1)"),
        ("n", "many", "synthetic.experiments.gaussian.n: 'many' has the wrong type (expected integer)"),
        ("step", "fast", "synthetic.experiments.gaussian.step: 'fast' is not allowed (choose one of 'paper', 'exact')"),
        ("k", 200, "synthetic.experiments.gaussian.k (200) must be <= d (128)"),
        ("k", 4, "synthetic.experiments.gaussian.k (4) must be >= k_true (16)"),
    ],
)
def test_bad_values_are_rejected_with_the_key(default_config, key, value, expected):
    config = copy.deepcopy(default_config)
    config["synthetic"]["experiments"]["gaussian"][key] = value
    assert _error(config) == expected


def test_bad_algorithm_name(default_config):
    config = copy.deepcopy(default_config)
    config["synthetic"]["experiments"]["image"]["algorithms"] = ["kiht", "newton"]
    message = _error(config)
    assert "synthetic.experiments.image.algorithms[1]" in message and "'newton'" in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("synthetic: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _file_error(tmp_path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        check_files([path])
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(path), name)


GAUSS = "synthetic:\n  experiments:\n    g: {prior: gaussian, n: 10, d: 5, k_true: 2, k: 3}\n"
TINY_LM = GAUSS + ("models:\n  m: {family: opt}\ncalibration: {source: {kind: stdlib}, length: 256}\n"
                   "eval: {seqlen: 256, sets: {s: {valid: {kind: stdlib, split: valid}}}}\n")


def test_tab_indent_names_file_line_column_and_the_fix(tmp_path):
    message = _file_error(tmp_path, "synthetic:\n\texperiments: {}\n")
    assert message == ("config file c.yaml is not valid YAML at line 2, column 1: found character '\\t' that cannot "
                       "start any token (while scanning for the next token): indent with spaces, not tabs")


def test_syntax_error_names_line_and_the_parsers_problem(tmp_path):
    message = _file_error(tmp_path, GAUSS + "iterative:\n  rounds: 2\n   solver: obc\n")
    assert message.startswith("config file c.yaml is not valid YAML at line 6, column 10: "
                              "mapping values are not allowed here")


@pytest.mark.parametrize("text, expected", [
    (GAUSS + "iterative:\n  rounds: 1\niterative:\n  rounds: 2\n",
     "c.yaml: duplicate key 'iterative' at lines 4 and 6: the second would silently replace the first; merge them "
     "into one"),
    (GAUSS + "    g: {prior: gaussian, n: 12, d: 5, k_true: 2, k: 3}\n",
     "c.yaml: duplicate key 'synthetic.experiments.g' at lines 3 and 4: the second would silently replace the first; "
     "merge them into one"),
    (GAUSS + "iterative:\n  steps: {lr: 0.1, steps: 2, lr: 0.2}\n",
     "c.yaml: duplicate key 'iterative.steps.lr' at lines 5 and 5: the second would silently replace the first; "
     "merge them into one"),
])
def test_duplicate_keys_are_rejected_at_any_depth(tmp_path, text, expected):
    assert _file_error(tmp_path, text) == expected


@pytest.mark.parametrize("key, value", [
    ("pruning", "{methods: []}"), ("pruning", "{sparsities: []}"),
    ("iterative", "{variants: []}"), ("iterative", "{sparsities: []}"),
    ("mmlu", "{methods: []}"), ("mmlu", "{tasks: []}"), ("mmlu", "{include_path: []}"),
])
def test_empty_lists_are_rejected(tmp_path, key, value):
    message = _file_error(tmp_path, TINY_LM + f"{key}: {value}\n")
    sub = value.strip("{}").split(":")[0]
    assert message.startswith(f"c.yaml line 8: {key}.{sub}: the list is empty: give at least 1 value")
    assert message.endswith("or leave the key out for its default")


def test_empty_list_names_the_choices(tmp_path):
    assert "(choose from iobs, sparsegpt_ft, dense_ft, iobs_fixed_mask)" in \
        _file_error(tmp_path, TINY_LM + "iterative: {variants: []}\n")


def test_every_schema_list_that_must_not_be_empty_says_so():
    """Every array of the schema has minItems (an empty list would run silently into header-only tables)."""
    arrays = []

    def walk(node, path):
        if isinstance(node, dict):
            types = node.get("type")
            if types == "array" or (isinstance(types, list) and "array" in types):
                arrays.append((path, node.get("minItems")))
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(load_schema(), "schema")
    assert len(arrays) >= 8
    assert [path for path, minimum in arrays if not minimum] == []


@pytest.mark.parametrize("text, key", [
    ("iterative:\n  steps: {lr: .nan}\n", "iterative.steps.lr"),
    ("pruning:\n  options: {sparsegpt: {percdamp: .nan}}\n", "pruning.options.sparsegpt.percdamp"),
    ("pruning:\n  options: {obc: {percdamp: .inf}}\n", "pruning.options.obc.percdamp"),
    ("iterative:\n  steps: {max_grad_norm: -.inf}\n", "iterative.steps.max_grad_norm"),
])
def test_non_finite_numbers_are_rejected(tmp_path, text, key):
    message = _file_error(tmp_path, TINY_LM + text)
    assert message.startswith(f"c.yaml line 9: {key}: ")
    assert "is not a finite number: give a finite value (.nan and .inf are not allowed)" in message


def test_non_finite_numbers_are_rejected_without_a_file():
    config = {"synthetic": {"experiments": {"g": {"prior": "image", "k_factor": float("nan")}}}}
    assert _error(config) == ("synthetic.experiments.g.k_factor: nan is not a finite number: give a finite value "
                              "(.nan and .inf are not allowed)")


@pytest.mark.parametrize("text, expected", [
    (TINY_LM.replace("length: 256", "length: 1024"),
     "c.yaml line 6: calibration.length (1024) is longer than model m's positions (512, the opt default of "
     "models.m.dims.max_positions): lower calibration.length to at most 512 or raise models.m.dims.max_positions"),
    (TINY_LM.replace("{family: opt}", "{family: llama, dims: {max_positions: 128}}"),
     "c.yaml line 6: calibration.length (256) is longer than model m's positions (128, "
     "models.m.dims.max_positions): lower calibration.length to at most 128 or raise models.m.dims.max_positions"),
    (TINY_LM.replace("seqlen: 256", "seqlen: 600"),
     "c.yaml line 7: eval.seqlen (600) is longer than model m's positions (512, the opt default of "
     "models.m.dims.max_positions): lower eval.seqlen to at most 512 or raise models.m.dims.max_positions"),
    (TINY_LM.replace("{family: opt}", "{family: phi, pretrain: {seq_len: 1000}}"),
     "c.yaml line 5: models.m.pretrain.seq_len (1000) is longer than model m's positions (512, the phi default of "
     "models.m.dims.max_positions): lower models.m.pretrain.seq_len to at most 512 or raise "
     "models.m.dims.max_positions"),
])
def test_lengths_longer_than_a_tiny_models_positions_are_rejected(tmp_path, text, expected):
    assert _file_error(tmp_path, text) == expected


def test_rounds_need_a_validation_split_to_pick_the_best_round(tmp_path):
    message = _file_error(tmp_path, TINY_LM.replace("valid: {kind: stdlib, split: valid}", "test: {kind: stdlib}"))
    assert message == ("eval.sets: no set has a 'valid' split, which the report needs to choose each I-OBS variant's "
                       "best round: add one, e.g. eval.sets.<name>.valid, or set iterative.rounds: 0")
    rounds_off = tmp_path / "off.yaml"
    rounds_off.write_text(TINY_LM.replace("valid: {kind: stdlib, split: valid}", "test: {kind: stdlib}")
                          + "iterative: {rounds: 0}\n")
    check_files([rounds_off])


def test_tiny_default_positions_match_the_pretraining_defaults():
    from iobs.models.pretrain import DEFAULT_DIMS

    assert TINY_DEFAULT_MAX_POSITIONS == {family: dims.max_positions for family, dims in DEFAULT_DIMS.items()}


def test_schema_errors_name_the_file_and_line(tmp_path):
    message = _file_error(tmp_path, TINY_LM + "iterative:\n  rounds: -1\n")
    assert message == "c.yaml line 9: iterative.rounds: -1 is out of range (must be >= 0)"


def test_later_files_win_and_are_named(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(TINY_LM)
    second.write_text("calibration:\n  length: 4096\n")
    with pytest.raises(ConfigError) as info:
        check_files([first, second])
    assert str(info.value).startswith(f"{second} line 2: calibration.length (4096) is longer")


def _hub_model(tmp_path, positions: int, field: str = "max_position_embeddings") -> Path:
    folder = tmp_path / "hubmodel"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "opt", field: positions}))
    return folder


def test_a_path_models_positions_are_checked_while_planning(tmp_path):
    from iobs.models.positions import check_planned_positions

    folder = _hub_model(tmp_path, 128)
    config = {"models": {"big": {"path": str(folder)}}, "calibration": {"length": 256}, "eval": {"seqlen": 64}}
    with pytest.raises(ConfigError) as info:
        check_planned_positions(config)
    assert str(info.value) == ("calibration.length (256) is longer than model big's max_position_embeddings (128, "
                               "from models.big.path): set calibration.length to at most 128")
    config["calibration"]["length"] = 128
    check_planned_positions(config)
    config["eval"]["seqlen"] = 129
    with pytest.raises(ConfigError, match=r"^eval.seqlen \(129\) is longer than model big's"):
        check_planned_positions(config)


def test_a_missing_model_path_is_named_while_planning(tmp_path):
    from iobs.models.positions import check_planned_positions

    config = {"models": {"big": {"path": str(tmp_path / "absent"), "hub": "facebook/opt-125m"}}}
    with pytest.raises(ConfigError) as info:
        check_planned_positions(config)
    assert str(info.value) == (f"models.big.path: {tmp_path / 'absent'} is not a directory (relative paths start at "
                               f"the working directory {Path.cwd()}): set models.big.path to a folder written by "
                               "save_pretrained (or remove it to load models.big.hub)")


def test_unknown_hub_positions_are_left_to_the_job(tmp_path, monkeypatch):
    from iobs.models.positions import check_planned_positions

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    check_planned_positions({"models": {"x": {"hub": "nobody/absent-model"}}, "calibration": {"length": 10 ** 6}})


def test_the_calibration_job_checks_an_existing_models_positions(tmp_path):
    """A hub/path model whose config was not on disk while planning: the calibration job stops before any window."""
    from iobs.pipeline.data import calibration
    from iobs.pipeline.runner import JobContext

    folder = _hub_model(tmp_path, 64, field="n_positions")
    ctx = JobContext(name="calibration", input={"tokens": str(tmp_path / "never-read.pt")},
                     output={"windows": str(tmp_path / "w.pt")},
                     params={"num_windows": 2, "length": 65, "tokenizer": str(folder)}, wildcards={"tok": "big"})
    with pytest.raises(ConfigError) as info:
        calibration(ctx)
    assert str(info.value) == ("calibration.length (65) is longer than model big's n_positions (64, from "
                               "models.big.path): set calibration.length to at most 64")
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.parametrize("text, expected", [
    ("synthetic:\n  experiments:\n    g: {prior: gaussian, n: 10, d: 5, k_true: 2, k: 9, extra: 1}\n",
     " line 3: unknown key 'synthetic.experiments.g.extra' (allowed keys: algorithms, d, iterations, k, k_true, n, "
     "prior, runs, step)"),
    (GAUSS + "iterative:\n  rounds: 1\niterative:\n  rounds: 2\n",
     ": duplicate key 'iterative' at lines 4 and 6: the second would silently replace the first; merge them into one"),
    (TINY_LM.replace("length: 256", "length: 1024"), " line 6: calibration.length (1024) is longer than model m's "
     "positions (512, the opt default of models.m.dims.max_positions)"),
])
def test_snakemake_stops_on_a_bad_config_with_one_line(tmp_path, text, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    workdir = tmp_path / "work"
    workdir.mkdir()
    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(snakemake), "--cores", "1", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(workdir), "--configfile", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    output = (proc.stdout + proc.stderr).strip().splitlines()
    assert output[-1].startswith(f"config error: {bad}{expected}")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()  # stopped before any job: nothing left behind


def test_config_files_can_be_checked_before_snakemake_reads_them(tmp_path):
    """Snakemake's loader says only "not valid JSON or YAML" about a --configfile: entry points run this first."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("synthetic:\n\texperiments: {}\n")
    proc = subprocess.run([sys.executable, "-m", "iobs.config", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"config error: config file {bad} is not valid YAML at line 2, column 1: found "
                                   "character '\\t' that cannot start any token (while scanning for the next token): "
                                   "indent with spaces, not tabs")
    assert subprocess.run([sys.executable, "-m", "iobs.config", str(ROOT / "config.yaml")],
                          capture_output=True, timeout=60).returncode == 0


def test_a_notebook_opened_by_hand_without_results_says_what_to_do(tmp_path, monkeypatch):
    from iobs.notebooks import standalone

    monkeypatch.delenv("IOBS_WORKDIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^no results/ folder in .* or above: run the pipeline first \(make run\)"):
        standalone("lm_figures")
    (tmp_path / "results").mkdir()
    (tmp_path / "config.yaml").write_text(TINY_LM)
    with pytest.raises(ConfigError) as info:
        standalone("lm_figures")
    assert str(info.value).startswith(f"{tmp_path}/results/tables/pruning.csv (an input of notebook rule lm_figures) "
                                      "does not exist: run the pipeline first")
