"""The whole DAG end to end on a miniature config: every stage runs, artifacts carry provenance, and a second
run has nothing to do. Slow-ish (a couple of minutes on 2 cores): it is the one test of the real Snakemake wiring."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _snakemake(workdir: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dag")
    text = (ROOT / "tests" / "data" / "tiny_config.yaml").read_text()
    (workdir / "config.yaml").write_text(text.replace("STDLIB", sysconfig.get_paths()["stdlib"]))
    proc = _snakemake(workdir, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


@pytest.mark.slow
def test_every_stage_produces_its_artifacts(finished_run):
    results = finished_run / "results"
    final = pd.read_csv(results / "tables" / "synthetic_final.csv")
    assert set(final["experiment"]) == {"gauss", "digits"}
    assert (results / "figures" / "synthetic" / "gauss.png").stat().st_size > 0
    assert (results / "notebooks" / "synthetic.ipynb").is_file()

    table = pd.read_csv(results / "tables" / "pruning.csv")
    assert set(table["model"]) == {"t-opt", "t-llama"}
    assert {"dense", "magnitude", "sparsegpt", "iobs", "sparsegpt_ft", "dense_ft", "dense_ft_dense"} <= set(table["method"])
    assert set(table.loc[table["method"] == "iobs", "round"]) == {1, 2}
    assert table["perplexity"].gt(1).all() and table["perplexity"].lt(1e6).all()


@pytest.mark.slow
def test_round_one_equals_oneshot_sparsegpt_in_the_dag(finished_run):
    table = pd.read_csv(finished_run / "results" / "tables" / "pruning.csv")
    key = ["model", "eval_set", "split"]
    oneshot = table[(table["method"] == "sparsegpt") & (table["sparsity"] == "0.5")].set_index(key)["perplexity"]
    first = table[(table["method"] == "iobs") & (table["round"] == 1)].set_index(key)["perplexity"]
    pd.testing.assert_series_equal(oneshot.sort_index(), first.sort_index(), check_names=False)


@pytest.mark.slow
def test_artifacts_carry_provenance(finished_run):
    results = finished_run / "results"
    record = json.loads((results / "prune" / "t-opt" / "sparsegpt" / "2:4" / "round0" / "provenance.json").read_text())
    assert record["params"]["method"] == "sparsegpt" and record["versions"]["torch"]
    assert record["wall_seconds"] > 0
    metrics = json.loads((results / "prune" / "t-opt" / "sparsegpt" / "2:4" / "round0" / "metrics.json").read_text())
    assert metrics["total_sparsity"] == pytest.approx(0.5)


@pytest.mark.slow
def test_second_run_has_nothing_to_do(finished_run):
    proc = _snakemake(finished_run, "-n", "--cores", "1")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr
