"""The command line as a user lives with it (issue 10, parts 3 and 4): an instant --help, progress bars and a
summary line, files that follow the umask, outputs checked and locked before any compute, and bad input (nan
options, corrupt weights, nan models, sparsity 0, Ctrl-C at start-up, a killed run's leftovers) as one line with
status 2 and nothing left behind."""

from __future__ import annotations

import copy
import fcntl
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from iobs.cli import main
from iobs.models.load import load_model, load_tokenizer
from iobs.models.pretrain import save_model_dir
from tests.test_cli import SEQLEN, one_line_error, prune_args, run, workspace  # noqa: F401 (workspace: a fixture)

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def python(script: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def listing(folder: Path) -> list[str]:
    """Every name under `folder`, hidden ones included (what a failed run might have left)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def magnitude(workspace: Path, out: Path, *extra) -> list:
    return prune_args(workspace / "opt", out, "magnitude", "0.5", workspace / "corpus.txt", *extra)


# ------------------------------------------------------------------ part 3: start-up, progress, summary

def test_help_and_usage_errors_do_not_import_torch_or_transformers():
    done = python("""
        import sys
        from iobs.cli import main
        codes = [main(["--help"]), main(["prune", "--help"]), main(["eval", "--help"]),
                 main(["prune", "m", "--method", "iobs", "--sparsity", "0.5", "--out", "o", "--lr", "nan"])]
        print(codes, sorted(m for m in ("torch", "transformers") if m in sys.modules))
    """)
    assert done.stdout.splitlines()[-1] == "[0, 0, 0, 2] []", done.stdout + done.stderr
    module = subprocess.run([sys.executable, "-m", "iobs.cli", "prune", "--help"], capture_output=True, text=True,
                            env=ENV, timeout=60)
    assert module.returncode == 0 and module.stdout.startswith("usage: iobs prune"), module.stderr


def test_prune_and_eval_show_progress_unless_told_not_to_and_end_with_a_summary(workspace, tmp_path, capsys):
    out = tmp_path / "iobs"
    args = [a for a in prune_args(workspace / "opt", out, "iobs", "0.5", workspace / "corpus.txt", "--rounds", 2,
                                  "--steps", 2, "--micro-batch", 4) if a != "--no-progress"]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "round 1 gradient steps" in err and "4/4" in err  # 2 steps x 2 micro-batches of 4 sequences
    assert re.fullmatch(rf"iobs: pruned {re.escape(str(workspace / 'opt'))} with iobs \(2 rounds of sparsegpt\) to "
                        rf"50\.0% -> {re.escape(str(out))}/ \(reconstruction loss [0-9.e+-]+ in round 2, last "
                        r"calibration loss [0-9.e+-]+, \d+ s\)\n", stdout), stdout

    evaluate = ["eval", out, "--data", workspace / "corpus.txt", "--seqlen", SEQLEN, "--max-windows", 3]
    code, stdout, err = run(evaluate, capsys)
    assert code == 0 and "perplexity" in err and "3/3" in err, err  # the bar over the windows
    assert re.fullmatch(rf"iobs: perplexity [0-9.]+ on {re.escape(str(workspace / 'corpus.txt'))} \(3 windows x "
                        rf"{SEQLEN}, decoder sparsity 50\.0%, \d+ s\)\n", stdout), stdout
    code, stdout, err = run([*evaluate, "--no-progress"], capsys)
    assert code == 0 and err == "" and stdout.startswith("iobs: perplexity ")


def test_oneshot_summary_names_the_pattern(workspace, tmp_path, capsys):
    out = tmp_path / "nm"
    code, stdout, err = run(prune_args(workspace / "opt", out, "sparsegpt", "2:4", workspace / "corpus.txt"), capsys)
    assert code == 0 and err == "", err  # --no-progress: nothing on stderr
    assert re.fullmatch(rf"iobs: pruned \S+ with sparsegpt to 50\.0% \(2:4\) -> {re.escape(str(out))}/ "
                        r"\(reconstruction loss [0-9.e+-]+, \d+ s\)\n", stdout), stdout


def test_gradient_steps_report_every_micro_batch_with_the_step_loss_so_far(make_tiny_model, calibration_ids):
    from iobs.iterative.steps import StepConfig, gradient_steps, micro_batches_per_step

    config = StepConfig(optimizer="sgd", lr=0.01, steps=3, micro_batch=4)  # 6 sequences: 2 micro-batches a step
    seen = []
    losses = gradient_steps(make_tiny_model("opt"), calibration_ids, config, on_micro_batch=seen.append)
    assert micro_batches_per_step(calibration_ids.shape[0], config) == 2 and len(seen) == 6
    assert seen[1::2] == pytest.approx(losses, rel=1e-12)  # the last call of a step carries its full-batch loss
    assert all(0 < first < whole for first, whole in zip(seen[::2], seen[1::2]))


# ------------------------------------------------------------------ part 3: files, outputs, the lock

@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_every_artifact_follows_the_umask(umask, file_mode, dir_mode, workspace, tmp_path, capsys):
    out = tmp_path / "o"
    previous = os.umask(umask)
    try:
        code, _, err = run(prune_args(workspace / "opt", out, "iobs", "0.5", workspace / "corpus.txt", "--rounds", 2,
                                      "--steps", 1, "--save-every-round"), capsys)
    finally:
        os.umask(previous)
    assert code == 0, err
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    assert {"model.safetensors", "config.json", "masks.pt", "metrics.json", "provenance.json",
            "rounds/round1/model.safetensors"} <= set(modes)
    assert {n: m for n, m in modes.items() if m != (dir_mode if (out / n).is_dir() else file_mode)} == {}


def test_the_atomic_writers_follow_the_umask(tmp_path):
    from iobs.atomic import atomic_directory, atomic_write_text

    previous = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "folder") as staging:
            (staging / "inner.txt").write_text("y")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o775
    assert listing(tmp_path) == ["a.txt", "folder", "folder/inner.txt"]  # no temporary left


@pytest.mark.parametrize("command", ["prune", "eval"])
def test_an_unwritable_output_fails_before_anything_is_loaded(command, workspace, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "sub" / ("o" if command == "prune" else "ppl.json")
    missing_model = tmp_path / "no-such-model"  # loading it would fail: the output check must come first
    if command == "prune":
        args = prune_args(missing_model, target, "magnitude", "0.5", workspace / "corpus.txt")
    else:
        args = ["eval", missing_model, "--data", workspace / "corpus.txt", "--json", target]
    err = one_line_error(*run(args, capsys))
    option = "--out" if command == "prune" else "--json"
    assert err == f"iobs: error: {option} {target}: {blocker} is a file, not a folder: choose another path\n"
    assert listing(tmp_path) == ["a-file"]


@pytest.mark.parametrize("out", [".", "..", "sub/.."])
def test_out_must_name_a_folder_of_its_own(out, workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = one_line_error(*run(magnitude(workspace, out), capsys))
    assert err == f"iobs: error: --out {Path(out)}: name the folder to write, e.g. --out pruned-model\n"
    assert listing(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_in_one_line(workspace, tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    err = one_line_error(*run(magnitude(workspace, locked / "o"), capsys))
    assert f"--out {locked / 'o'}: cannot write in {locked}" in err


def test_a_second_prune_into_the_same_out_is_refused_while_the_first_holds_the_lock(workspace, tmp_path, capsys):
    out = tmp_path / "o"
    lock = tmp_path / ".o.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"pid 4242 on elsewhere\n")
        err = one_line_error(*run(magnitude(workspace, out), capsys))
        assert err == (f"iobs: error: --out {out} is being written by another iobs prune (pid 4242 on elsewhere): "
                       f"wait for it to finish, or choose another --out (lock: {lock})\n")
        assert listing(tmp_path) == [".o.lock"]  # the holder's lock is left alone, nothing else written
    finally:
        os.close(fd)
    code, _, err = run(magnitude(workspace, out), capsys)  # the holder is gone (its lock file stays behind)
    assert code == 0, err
    assert not lock.exists()  # released and removed on exit


def test_a_failed_run_into_new_folders_leaves_nothing(workspace, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "o"
    one_line_error(*run(prune_args(tmp_path / "no-model", out, "magnitude", "0.5", workspace / "corpus.txt"),
                        capsys))
    assert listing(tmp_path) == []  # neither the lock nor the folders made for it


# ------------------------------------------------------------------ part 4: bad input

@pytest.mark.parametrize("option, value", [("--lr", "nan"), ("--lr", "inf"), ("--max-grad-norm", "-inf"),
                                           ("--percdamp", "NaN")])
def test_non_finite_numbers_are_refused_at_parse_time(option, value, workspace, tmp_path, capsys):
    args = prune_args(workspace / "opt", tmp_path / "o", "iobs", "0.5", workspace / "corpus.txt", f"{option}={value}")
    err = one_line_error(*run(args, capsys))
    assert err == (f"iobs: error: argument {option}: '{value}' is not a finite number: give a number such as 0.01 "
                   "(see 'iobs prune --help')\n")
    assert listing(tmp_path) == []


@pytest.fixture
def truncated_model(workspace, tmp_path) -> Path:
    """A copy of the tiny OPT folder whose model.safetensors lost its second half (an interrupted copy)."""
    model = tmp_path / "models" / "truncated"
    shutil.copytree(workspace / "opt", model)
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return model


@pytest.mark.parametrize("command", ["prune", "eval"])
def test_truncated_weights_are_one_line_naming_the_file(command, truncated_model, workspace, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    if command == "prune":
        args = prune_args(truncated_model, runs / "o", "magnitude", "0.5", workspace / "corpus.txt")
    else:
        args = ["eval", truncated_model, "--data", workspace / "corpus.txt", "--json", runs / "ppl.json"]
    err = one_line_error(*run(args, capsys))
    assert err.startswith(f"iobs: error: {truncated_model / 'model.safetensors'} is truncated or corrupt (")
    assert err.endswith("): re-save or re-copy the model\n")
    assert listing(runs) == []


@pytest.fixture
def nan_model(workspace, tmp_path) -> Path:
    model = load_model(workspace / "opt")
    with torch.no_grad():
        model.model.decoder.layers[0].fc1.weight[0, 0] = float("nan")
    return save_model_dir(model, load_tokenizer(workspace / "opt"), tmp_path / "nan-model")


def test_a_nan_model_is_an_error_in_eval_and_nothing_is_written(nan_model, workspace, tmp_path, capsys):
    report = tmp_path / "ppl.json"
    err = one_line_error(*run(["eval", nan_model, "--data", workspace / "corpus.txt", "--seqlen", SEQLEN,
                               "--max-windows", 2, "--json", report, "--no-progress"], capsys))
    assert err.startswith(f"iobs: error: perplexity of {nan_model} is not finite (mean NLL nan over 2 windows): ")
    assert not report.exists() and not any(p.name.startswith(".ppl.json") for p in tmp_path.iterdir())


def test_a_nan_model_fails_the_evaluate_job_without_metrics(nan_model, tmp_path):
    from iobs.data.files import atomic_save_tensor
    from iobs.pipeline.eval import evaluate_model
    from iobs.eval.perplexity import NonFinitePerplexity
    from iobs.errors import IobsError
    from iobs.pipeline.runner import JobContext

    stream = tmp_path / "stream.pt"
    atomic_save_tensor(stream, torch.arange(4 * SEQLEN) % 200)
    metrics = tmp_path / "out" / "metrics.json"
    ctx = JobContext(name="evaluate", input={"model": str(nan_model), "streams": [str(stream)]},
                     output={"metrics": str(metrics)},
                     params={"streams": [{"eval_set": "corpus", "split": "test"}], "seqlen": SEQLEN})
    with pytest.raises(NonFinitePerplexity, match=f"perplexity of {re.escape(str(nan_model))} is not finite"):
        evaluate_model(ctx)
    assert issubclass(NonFinitePerplexity, IobsError)
    assert not metrics.exists()


@pytest.mark.parametrize("sparsity", ["0", "0.0", "0:4", "4:4"])
def test_sparsity_that_prunes_nothing_or_everything_is_refused(sparsity, workspace, tmp_path, capsys):
    err = one_line_error(*run(prune_args(workspace / "opt", tmp_path / "o", "magnitude", sparsity,
                                         workspace / "corpus.txt"), capsys))
    expected = ("sparsity must be a fraction strictly between 0 and 1" if ":" not in sparsity else
                f"N:M sparsity needs 0 < n < m, got '{sparsity}'")
    assert expected in err
    assert listing(tmp_path) == []


@pytest.mark.parametrize("sparsity", ["0", "0.0", "0:4", "4:4"])
def test_the_config_refuses_the_same_sparsities_in_one_line(sparsity):
    from iobs.config import validate_config
    from iobs.errors import ConfigError

    config = yaml.safe_load((Path(__file__).parent / "data" / "tiny_config.yaml").read_text())
    config = copy.deepcopy(config)
    config.setdefault("pruning", {})["sparsities"] = [sparsity]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "pruning.sparsities" in str(err.value) and "\n" not in str(err.value)


class _InterruptImport:
    """A meta-path finder that raises KeyboardInterrupt when `name` is imported: Ctrl-C while it loads."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            raise KeyboardInterrupt
        return None


@pytest.mark.parametrize("module, argv", [
    ("iobs.cli.parser", ["--help"]),
    ("iobs.cli.prune", ["prune", "m", "--method", "magnitude", "--sparsity", "0.5", "--out", "o"]),
])
def test_ctrl_c_during_start_up_is_one_line_with_status_130(module, argv, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(sys, "meta_path", [_InterruptImport(module), *sys.meta_path])
    code = main(argv)
    captured = capsys.readouterr()
    assert (code, captured.out, captured.err) == (130, "", "iobs: error: interrupted\n")


def test_a_run_killed_during_save_every_round_is_cleaned_up_by_the_next(workspace, tmp_path, capsys):
    out = tmp_path / "o"
    args = [str(a) for a in prune_args(workspace / "opt", out, "iobs", "0.5", workspace / "corpus.txt", "--rounds", 2,
                                       "--steps", 1, "--save-every-round", "--threads", 1)]
    killed = python(f"""
        import os, signal
        import iobs.cli.prune as prune
        save = prune.save_pruned_model
        def save_then_die(model, directory, **kwargs):  # kill -9 right after round 1 is staged
            save(model, directory, **kwargs)
            if directory.name == "round1":
                os.kill(os.getpid(), signal.SIGKILL)
        prune.save_pruned_model = save_then_die
        from iobs.cli import main
        main({args!r})
    """)
    assert killed.returncode == -9, killed.stderr
    stale = [p.name for p in tmp_path.iterdir()]
    assert len(stale) == 2 and ".o.lock" in stale and any(n.endswith(".rounds.tmp") for n in stale), stale
    foreign = [tmp_path / ".o2.abcd1234.rounds.tmp", tmp_path / ".o.v2.abcd1234.tmp"]  # other outputs' temporaries
    for path in foreign:
        path.mkdir()
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["o", *(p.name for p in foreign)])
    assert sorted(p.name for p in (out / "rounds").iterdir()) == ["round1", "round2"]


def test_stale_temporaries_are_left_alone_while_another_run_holds_the_lock(workspace, tmp_path, capsys):
    stale = tmp_path / ".o.abcd1234.rounds.tmp"
    stale.mkdir()
    fd = os.open(tmp_path / ".o.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        one_line_error(*run(magnitude(workspace, tmp_path / "o"), capsys))
        assert stale.is_dir()  # it may be the holder's
    finally:
        os.close(fd)
