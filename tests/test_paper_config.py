"""configs/paper.yaml states the paper's protocol, and the whole paper DAG plans offline (Snakemake dry runs in a
temporary directory, HF_HUB_OFFLINE=1) with the GPU and SLURM profiles' resources on the right rules; round states
are temp() exactly when iterative.keep_states is false, and MMLU is off in the default config."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iobs.config import load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAPER = ROOT / "configs" / "paper.yaml"
GPU_RULES = {"prune_oneshot", "iterative_round", "evaluate", "mmlu"}
MADE_HERE_ONLY = {"corpus", "tokenizer", "pretrain"}  # only models pretrained here (`family`) need them
CHAIN_ONLY = {"iterative_chain", "sparsity_free_chain"}  # iterative.granularity: chain; the paper config runs per round


def _rules_defined() -> set[str]:
    texts = [(ROOT / "Snakefile").read_text()] + [p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk")]
    return {name for text in texts for name in re.findall(r"^rule (\w+):", text, flags=re.M)}


def _paper_config(tmp_path: Path) -> Path:
    """configs/paper.yaml with its relative MNIST folder made absolute (as seen from the repository root)."""
    config = yaml.safe_load(PAPER.read_text())
    mnist = config["synthetic"]["experiments"]["mnist"]
    folder = (ROOT / mnist["mnist_dir"]).resolve()
    if not folder.is_dir():
        pytest.skip(f"the MNIST files of the paper config are not at {folder}")
    mnist["mnist_dir"] = str(folder)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _snakefile(tmp_path: Path) -> tuple[Path, str]:
    """(Snakefile, its default target rule): the repository's once it includes mmlu.smk, else a wrapper that adds it."""
    main = ROOT / "Snakefile"
    if "mmlu.smk" in main.read_text():
        return main, "all"
    wrapper = tmp_path / "Snakefile"
    wrapper.write_text(f'include: "{main}"\ninclude: "{ROOT / "workflow" / "rules" / "mmlu.smk"}"\n\n'
                       "rule paper_all:\n    input:\n        rules.all.input,\n        mmlu_targets(),\n"
                       "    default_target: True\n")
    return wrapper, "paper_all"


def _dry_run(tmp_path: Path, snakefile: Path, config: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    cmd = [str(BIN / "snakemake"), "-n", "--snakefile", str(snakefile), "--directory", str(tmp_path / "work"),
           "--configfile", str(config), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def _job_counts(plan: str) -> dict[str, int]:
    table = plan.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def _resources_by_rule(plan: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for rule, block in re.findall(r"^rule (\w+):\n(.*?)(?=^\[|^rule |\Z)", plan, flags=re.M | re.S):
        found = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        pairs = dict(item.split("=", 1) for item in found.group(1).split(", ")) if found else {}
        out.setdefault(rule, []).append(pairs)
    return out


def _expected_mmlu_jobs(config: dict) -> int:
    methods, rounds = set(config["mmlu"]["methods"]), config["iterative"]["rounds"]
    per_model = int("dense" in methods)
    per_model += len(methods & set(config["pruning"]["methods"])) * len(config["pruning"]["sparsities"])
    round_methods = methods & set(config["iterative"]["variants"])
    if "dense_ft" in config["iterative"]["variants"] and "dense_ft_dense" in methods:
        round_methods.add("dense_ft_dense")
    per_model += len(round_methods) * rounds * len(config["iterative"]["sparsities"])
    return per_model * len(config["models"])


def test_paper_config_states_the_protocol():
    config = validate_config(load_config(PAPER))
    assert {m["hub"] for m in config["models"].values()} == {
        "facebook/opt-125m", "microsoft/phi-1_5", "meta-llama/Llama-2-7b-hf", "meta-llama/Meta-Llama-3-8B"}
    assert {m["dtype"] for m in config["models"].values()} <= {"float16", "bfloat16"}
    calibration = config["calibration"]
    assert (calibration["source"]["kind"], calibration["source"]["split"], calibration["mode"]) == \
        ("c4", "train", "documents")
    assert (calibration["num_windows"], calibration["length"], calibration["seed"]) == (128, 2048, 0)
    seqlen = config["eval"]["seqlen"]
    c4 = config["eval"]["sets"]["c4"]["valid"]
    assert seqlen == 2048 and c4["documents"] == 1100 and c4["max_tokens"] == 256 * seqlen
    assert config["eval"]["sets"]["wikitext2"]["test"]["split"] == "test"
    assert set(config["pruning"]["methods"]) == {"magnitude", "wanda", "sparsegpt"}
    assert set(config["pruning"]["sparsities"]) == {"0.5", "2:4"}
    iterative = config["iterative"]
    assert iterative["rounds"] == 10 and iterative["keep_states"] is False
    assert set(iterative["variants"]) == {"iobs", "sparsegpt_ft", "dense_ft"}
    assert config["mmlu"]["enabled"] and config["mmlu"]["num_fewshot"] == 5
    gaussian, mnist = config["synthetic"]["experiments"]["gaussian"], config["synthetic"]["experiments"]["mnist"]
    assert (gaussian["n"], gaussian["d"], gaussian["k_true"], gaussian["k"], gaussian["iterations"],
            gaussian["runs"]) == (256, 128, 16, 64, 750, 20)
    assert (mnist["image_source"], mnist["iterations"], mnist["runs"], mnist["k_factor"], mnist["n_factor"]) == \
        ("mnist", 4000, 20, 2, 2)


def test_obc_config_covers_opt_125m_widest_layer():
    config = validate_config(load_config(ROOT / "configs" / "paper-obc.yaml"))
    assert list(config["models"]) == ["opt-125m"] and "obc" in config["pruning"]["methods"]
    assert config["pruning"]["options"]["obc"]["max_in_features"] >= 3072  # fc2: 768 x 3072


@pytest.mark.slow
def test_paper_dag_plans_offline_on_a_gpu_box(tmp_path):
    config_path = _paper_config(tmp_path)
    snakefile, target = _snakefile(tmp_path)
    plan = _dry_run(tmp_path, snakefile, config_path, "--profile", str(ROOT / "workflow" / "profiles" / "gpu"))
    counts = _job_counts(plan)
    expected_rules = (_rules_defined() - MADE_HERE_ONLY - CHAIN_ONLY - {"all"}) | {target}
    assert set(counts) == expected_rules, f"missing {expected_rules - set(counts)}, extra {set(counts) - expected_rules}"

    config = validate_config(load_config(config_path))
    models, iterative = len(config["models"]), config["iterative"]
    assert counts["iterative_round"] == models * len(iterative["variants"]) * len(iterative["sparsities"]) * 10
    assert counts["prune_oneshot"] == models * 3 * 2
    assert counts["mmlu"] == _expected_mmlu_jobs(config) == models * (1 + 2 * 10)
    resources = _resources_by_rule(plan)
    assert GPU_RULES <= set(resources)
    for rule, jobs in resources.items():
        gpus = {job.get("gpu", "0") for job in jobs}
        assert gpus == ({"1"} if rule in GPU_RULES else {"0"}), (rule, gpus)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
def test_slurm_profile_puts_gpu_rules_on_the_gpu_partition(tmp_path):
    plan = _dry_run(tmp_path, *_snakefile(tmp_path)[:1], _paper_config(tmp_path),
                    "--profile", str(ROOT / "workflow" / "profiles" / "slurm"))
    resources = _resources_by_rule(plan)
    assert GPU_RULES <= set(resources)
    for rule, jobs in resources.items():
        for job in jobs:
            assert "gres" not in job  # the plugin refuses gres together with gpu
            assert int(job["runtime"]) > 0 and int(job["mem_mb"]) > 0
            if rule in GPU_RULES:
                assert (job["gpu"], job["slurm_partition"]) == ("1", "gpu"), rule
            else:
                assert (job["gpu"], job["slurm_partition"]) == ("0", "cpu"), rule


_FLAGS_SCRIPT = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.io import is_flagged
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
snakefile, config, workdir = map(Path, sys.argv[1:4])
with SnakemakeApi(OutputSettings(quiet=True)) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=snakefile, workdir=workdir,
                            config_settings=ConfigSettings(configfiles=[config]))._workflow
    outputs = dict(workflow.get_rule("iterative_round").output._allitems())
    print(json.dumps({"temp": sorted(k for k, f in outputs.items() if is_flagged(f, "temp")),
                      "mmlu_targets": workflow.globals["mmlu_targets"]()}))
"""


def _flags(tmp_path: Path, config: Path, name: str) -> dict:
    workdir = tmp_path / name
    workdir.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _FLAGS_SCRIPT, str(_snakefile(tmp_path)[0]), str(config),
                           str(workdir)], capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0 and "AttributeError" in proc.stderr:
        pytest.skip(f"Snakemake's API changed: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_round_states_are_temp_only_when_asked_and_mmlu_is_off_by_default(tmp_path):
    paper = _flags(tmp_path, _paper_config(tmp_path), "paper")
    assert paper == {"temp": ["state"], "mmlu_targets": ["results/tables/mmlu.csv"]}
    # the default runs chains (no per-round states at all); its keep_states default, seen through the per-round rules:
    per_round = yaml.safe_load((ROOT / "config.yaml").read_text())
    per_round["iterative"]["granularity"] = "round"
    (tmp_path / "default-per-round.yaml").write_text(yaml.safe_dump(per_round, sort_keys=False))
    default = _flags(tmp_path, tmp_path / "default-per-round.yaml", "default")
    assert default == {"temp": [], "mmlu_targets": []}
