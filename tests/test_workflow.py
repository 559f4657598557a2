"""The whole DAG end to end on a miniature config: every stage runs, artifacts carry provenance, and a second
run has nothing to do, and a run killed inside a chain resumes from its last finished round with one command. Slow-ish (a couple of minutes
on 2 cores): the one run of the real Snakemake wiring (fixture finished_run in conftest.py), shared by every test."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_snakemake

ROOT = Path(__file__).resolve().parents[1]


def _snakemake(workdir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, **kwargs)


@pytest.mark.slow
def test_every_stage_produces_its_artifacts(finished_run):
    results = finished_run / "results"
    final = pd.read_csv(results / "tables" / "synthetic_final.csv")
    assert set(final["experiment"]) == {"gauss", "digits"}
    assert (results / "figures" / "synthetic" / "gauss.png").stat().st_size > 0
    assert (results / "notebooks" / "synthetic.ipynb").is_file()

    table = pd.read_csv(results / "tables" / "pruning.csv")
    assert set(table["model"]) == {"t-opt", "t-llama"}
    assert {"dense", "magnitude", "sparsegpt", "iobs", "sparsegpt_ft", "dense_ft", "dense_ft_dense",
            "iobs_fixed_mask"} <= set(table["method"])
    assert set(table.loc[table["method"] == "iobs", "round"]) == {1, 2, 3}
    # the coarse grain: one job per (model, method) prunes, one per chain runs every round (dense_ft: per model)
    benchmarks = results / "benchmarks" / "prune" / "t-opt"
    assert (benchmarks / "magnitude" / "oneshot.tsv").is_file() and (benchmarks / "dense_ft" / "chain.tsv").is_file()
    assert (benchmarks / "iobs" / "2:4" / "chain.tsv").is_file() and not (benchmarks / "iobs" / "2:4" / "round2.tsv").exists()
    # the chain takes no gradient steps in its last round (nothing reads them) and none before round 1's projection
    rounds = [json.loads((results / "prune" / "t-opt" / "iobs" / "2:4" / f"round{r}" / "metrics.json").read_text())
              for r in (1, 2, 3)]
    assert [len(m["step_losses"]) for m in rounds] == [0, 1, 1]
    assert not (results / "prune" / "t-opt" / "iobs" / "2:4" / "chain.partial").exists()
    assert table["perplexity"].gt(1).all() and table["perplexity"].lt(1e6).all()


@pytest.mark.slow
def test_round_one_equals_oneshot_sparsegpt_in_the_dag(finished_run):
    table = pd.read_csv(finished_run / "results" / "tables" / "pruning.csv")
    key = ["model", "eval_set", "split"]
    oneshot = table[(table["method"] == "sparsegpt") & (table["sparsity"] == "2:4")].set_index(key)["perplexity"]
    first = table[(table["method"] == "iobs") & (table["round"] == 1)].set_index(key)["perplexity"]
    pd.testing.assert_series_equal(oneshot.sort_index(), first.sort_index(), check_names=False)


@pytest.mark.slow
def test_artifacts_carry_provenance(finished_run):
    results = finished_run / "results"
    record = json.loads((results / "prune" / "t-opt" / "sparsegpt" / "oneshot.provenance.json").read_text())
    assert record["params"]["method"] == "sparsegpt" and record["versions"]["torch"]
    assert record["wall_seconds"] > 0
    metrics = json.loads((results / "prune" / "t-opt" / "sparsegpt" / "2:4" / "round0" / "metrics.json").read_text())
    assert metrics["total_sparsity"] == pytest.approx(0.5)


@pytest.mark.slow
def test_second_run_has_nothing_to_do(finished_run):
    proc = _snakemake(finished_run, "-n", "--cores", "1")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


# Imported by every Python process started with this folder first on PYTHONPATH (site runs sitecustomize): when a
# job renames its saved model into `KILL_AT_REPLACE`, SIGKILL its whole process group, Snakemake included, as a
# `kill -9` of the run (or the OOM killer) would in the middle of the save.
KILL_HOOK = '''
import os, signal
_target = os.environ.get("KILL_AT_REPLACE")
if _target:
    _replace = os.replace
    def replace(src, dst, *args, **kwargs):
        if os.path.abspath(str(dst)) == _target:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)
    os.replace = replace
'''


@pytest.mark.slow
def test_a_run_killed_in_a_chain_resumes_from_its_last_finished_round(finished_run, tmp_path):
    workdir = tmp_path / "dag"
    shutil.copytree(finished_run, workdir, symlinks=True)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    chain = workdir / "results/prune/t-opt/iobs/2:4"
    folder = chain / "round3"
    table = workdir / "results" / "tables" / "pruning.csv"
    table_before, numbers_before = table.stat().st_mtime_ns, pd.read_csv(table)

    # Redo one I-OBS chain (as `--forcerun iterative_chain` would) and kill everything while its last round saves:
    # round 2 is finished (its checkpoint written), round 3 is not.
    env = {"KILL_AT_REPLACE": str(folder / "model"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    # a new session: the hook's killpg takes Snakemake and the job, not pytest
    target = "results/prune/t-opt/iobs/2:4/chain.provenance.json"  # targets are named relative to the workdir
    killed = _snakemake(workdir, "--cores", "1", "--force", target, env=env, new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (folder / "model").exists() and not (folder / "metrics.json").exists()
    assert (chain / "chain.partial" / "manifest.json").is_file()
    assert (workdir / ".snakemake" / "locks").is_dir() and any((workdir / ".snakemake" / "locks").iterdir())

    # A plain rerun must not take the half-done chain for complete, nor the old tables for up to date.
    plain = _snakemake(workdir, "-n", "--cores", "1")
    said = plain.stdout + plain.stderr
    assert plain.returncode != 0 and "Nothing to be done" not in said
    assert "IncompleteFilesException" in said and "chain.provenance.json" in said
    assert "LockException" not in said  # the killed run's lock was removed: its process is gone
    assert "removed the stale lock of Snakemake pid" in said

    resumed = _snakemake(workdir, "--cores", "2", "--scheduler", "greedy", "--rerun-incomplete")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "rule iterative_chain:" in resumed.stdout + resumed.stderr
    log = (workdir / "results/logs/prune/t-opt/iobs/2:4/chain.log").read_text()
    assert "resuming iobs after round 2" in log
    assert (folder / "model" / "config.json").is_file() and (folder / "metrics.json").is_file()
    assert (chain / "round2" / "metrics.json").is_file() and (chain / "round1" / "masks.pt").is_file()
    assert json.loads((chain / "chain.provenance.json").read_text())["wildcards"]["variant"] == "iobs"
    assert not list(folder.glob(".model.*")), "the killed save's staging folder is cleaned up"
    assert not (chain / "chain.partial").exists(), "a finished chain removes its checkpoint"
    assert table.stat().st_mtime_ns > table_before  # the tables were remade from the redone chain
    # resuming from the checkpoint gives the numbers of the uninterrupted run
    columns = ["model", "method", "sparsity", "round", "eval_set", "split", "perplexity"]
    pd.testing.assert_frame_equal(pd.read_csv(table)[columns], numbers_before[columns])
    assert "Nothing to be done" in _snakemake(workdir, "-n", "--cores", "1").stdout


@pytest.mark.slow
@pytest.mark.parametrize("name, tables", [
    ("pruning", ["llm_table.csv", "methods.csv", "controls.csv", "mask_dynamics.csv", "paper_vs_run.csv"]),
    ("synthetic", ["synthetic_final.csv", "synthetic_rates.csv"]),
])
def test_a_notebook_runs_by_hand_on_the_results(finished_run, tmp_path, name, tables):
    """Opened without Snakemake (no `snakemake` object), a notebook reads the same inputs from results/ and makes the
    same tables, written beside, not over, the DAG's."""
    out = tmp_path / "out"
    env = {**os.environ, "IOBS_WORKDIR": str(finished_run), "IOBS_NOTEBOOK_OUT": str(out)}
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.run([str(jupyter), "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(tmp_path),
                           "--output", "executed", str(ROOT / "notebooks" / f"{name}.py.ipynb")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for table in tables:
        pd.testing.assert_frame_equal(pd.read_csv(out / table),
                                      pd.read_csv(finished_run / "results" / "tables" / table), check_exact=False)
    assert list((out / "figures").glob("*.png"))
