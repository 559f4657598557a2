"""Wall time of the default run (`make run` on the embedded config.yaml), cold, in a temporary folder.

    python benchmarks/bench_default_run.py [--cores 2] [--mnist-dir DIR] [--keep DIR] [--compare OTHER_WORKDIR] [--busy N]

Runs Snakemake on the repository's Snakefile with config.yaml (mnist_dir resolved against the repository, as `make
run` there would) in a fresh folder, then prints the job count, the wall time per stage (the sum of the jobs' wall
times of the stage's rules, and the stage's span from its first job's start to its last job's end), the slowest
jobs and the total. It then runs again and asserts that nothing is left to do. --compare: assert that this run's
tables equal another finished run's apart from timing columns (the determinism check: run once with the other
core busy, --busy 1, and once quiet). Speed figures live here, never in the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# rule -> stage, by prefix (rules not named here are reported under their own name)
STAGES = [("synthetic", "synthetic"), ("corpus", "data"), ("tokenize", "data"), ("calibration", "data"),
          ("pretrain", "models"), ("evaluate", "one-shot"), ("oneshot_", "one-shot"), ("prune_oneshot", "one-shot"),
          ("iterative_", "I-OBS rounds"), ("sparsity_free_chain", "I-OBS rounds"), ("pruning_table", "report"),
          ("lm_figures", "report"), ("mmlu", "mmlu"), ("all", "report")]
TIMING_COLUMNS = {"seconds", "eval_seconds", "total_seconds", "wall_seconds", "time", "step_seconds"}
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def stage(rule: str) -> str:
    return next((name for prefix, name in STAGES if rule.startswith(prefix)), rule)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(workdir / "config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def job_spans(log: str) -> list[tuple[str, str, float, float]]:
    """(rule, jobid, start, end) of every job, from Snakemake's log (timestamps to the second)."""
    now, started, spans, pending = None, {}, [], None
    for line in log.splitlines():
        match = STAMP.match(line.strip())
        if match:
            now = dt.datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
            continue
        rule = re.match(r"^(?:local)?rule (\S+):$", line.strip())
        if rule:
            pending = rule.group(1)
            continue
        jobid = re.match(r"^jobid: (\d+)$", line.strip())
        if jobid and pending:
            started[jobid.group(1)] = (pending, now)
            pending = None
            continue
        done = re.match(r"^Finished jobid: (\d+) \(Rule: (\S+)\)$", line.strip())
        if done and done.group(1) in started:
            rule, start = started.pop(done.group(1))
            spans.append((rule, done.group(1), start, now))
    return spans


def tables_equal(a: Path, b: Path) -> list[str]:
    import pandas as pd

    problems = []
    for path in sorted((a / "results" / "tables").glob("*.csv")):
        other = b / "results" / "tables" / path.name
        if not other.is_file():
            problems.append(f"{path.name}: missing from {b}")
            continue
        x, y = pd.read_csv(path), pd.read_csv(other)
        keep = [c for c in x.columns if c not in TIMING_COLUMNS and "seconds" not in c]
        try:
            pd.testing.assert_frame_equal(x[keep], y[keep], check_exact=True)
        except AssertionError as err:
            problems.append(f"{path.name}: {str(err).splitlines()[0]}")
    return problems


def _spin() -> None:
    """Burns one core until terminated: the 'other core kept busy' of the load-independence check."""
    while True:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--mnist-dir", default=None, help="default: config.yaml's mnist_dir, from the repository")
    parser.add_argument("--keep", default=None, help="run in this folder (kept) instead of a temporary one")
    parser.add_argument("--compare", default=None, help="a finished workdir whose tables must equal this run's")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--busy", type=int, default=0,
                        help="keep this many cores busy with spinning processes during the run (load-independence "
                             "check: compare its tables with a quiet run's through --compare)")
    args = parser.parse_args(argv)

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="iobs-default-"))
    workdir.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "config.yaml").read_text()
    mnist = Path(args.mnist_dir) if args.mnist_dir else (ROOT / re.search(r"mnist_dir: (\S+)", text).group(1))
    text = re.sub(r"mnist_dir: \S+", f"mnist_dir: {mnist.resolve()}", text)
    (workdir / "config.yaml").write_text(text)
    print(f"workdir {workdir}; load average before: {os.getloadavg()}; mnist_dir {mnist.resolve()} "
          f"({'present' if mnist.is_dir() else 'missing: the digits fallback'})", flush=True)

    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    t0 = time.time()
    try:
        proc = snakemake(workdir, "--cores", str(args.cores), "--scheduler", "greedy")
    finally:
        for spinner in spinners:
            spinner.terminate()
    total = time.time() - t0
    if spinners:
        print(f"ran beside {len(spinners)} spinning process(es)")
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return 1
    spans = job_spans(proc.stderr + proc.stdout)
    jobs = [s for s in spans if s[0] != "all"]
    print(f"\n{len(jobs)} jobs (+ rule all) in {total / 60:.1f} min wall with --cores {args.cores}; "
          f"load average after: {os.getloadavg()}")
    per_stage: dict[str, list] = defaultdict(list)
    for rule, _, start, end in jobs:
        per_stage[stage(rule)].append((start, end))
    print(f"\n{'stage':<14} {'jobs':>5} {'job-seconds':>12} {'span (min)':>11}")
    for name, items in sorted(per_stage.items(), key=lambda kv: min(s for s, _ in kv[1])):
        busy = sum(e - s for s, e in items)
        span = max(e for _, e in items) - min(s for s, _ in items)
        print(f"{name:<14} {len(items):>5} {busy:>12.0f} {span / 60:>11.1f}")
    print(f"\nslowest {args.top} jobs:")
    for rule, jobid, start, end in sorted(jobs, key=lambda s: s[2] - s[3])[:args.top]:
        print(f"  {end - start:7.0f} s  {rule} (jobid {jobid})")

    again = snakemake(workdir, "-n", "--cores", "1")
    said = again.stdout + again.stderr
    assert again.returncode == 0 and "Nothing to be done" in said, said[-2000:]
    print("\nsecond run: nothing to be done")
    if args.compare:
        problems = tables_equal(workdir, Path(args.compare))
        print("tables equal to", args.compare, "(timing columns aside)" if not problems else f"DIFFER: {problems}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
