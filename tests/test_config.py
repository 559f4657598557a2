"""The config schema: the default validates, bad configs stop with one line naming the key and what is allowed."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from iobs.config import load_config, validate_config
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


def test_snakemake_stops_on_a_bad_config_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("synthetic:\n  experiments:\n    g: {prior: gaussian, n: 10, d: 5, k_true: 2, k: 9, extra: 1}\n")
    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(snakemake), "-n", "--cores", "1", "--configfile", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    output = (proc.stdout + proc.stderr).strip().splitlines()
    assert output[-1].startswith("config error: unknown key 'synthetic.experiments.g.extra'")
    assert "Traceback" not in proc.stdout + proc.stderr
