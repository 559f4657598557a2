"""Resuming after kill -9: the stale lock of a dead Snakemake is removed, a live one's never; a job in progress is
marked by its empty provenance and the leftovers of an interrupted save are cleaned when it starts again."""

import json
import os
import socket
import subprocess
import sys

from iobs.pipeline.runner import mark_started
from iobs.pipeline.stale_lock import OWNER_FILE, record_lock_owner, remove_stale_lock


def _locked(tmp_path, pid: int, host: str | None = None):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("results/a\n")
    (locks / "0.output.lock").write_text("results/b\n")
    record_lock_owner(tmp_path, pid=pid)
    if host:
        (tmp_path / ".snakemake" / OWNER_FILE).write_text(json.dumps({"host": host, "pid": pid}))
    return locks


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_of_a_killed_snakemake_is_removed(tmp_path):
    pid = _dead_pid()
    locks = _locked(tmp_path, pid)
    note = remove_stale_lock(tmp_path)
    assert note == (f"iobs: removed the stale lock of Snakemake pid {pid} (no longer running, e.g. killed); its "
                    "interrupted jobs rerun with --rerun-incomplete")
    assert not list(locks.iterdir()) and not (tmp_path / ".snakemake" / OWNER_FILE).exists()


def _sleeper(*argv: str) -> subprocess.Popen:
    """A live process (with `argv` on its command line), started for sure once this returns."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)", *argv],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    return proc


def test_a_live_snakemakes_lock_is_kept(tmp_path):
    proc = _sleeper("snakemake")
    try:
        locks = _locked(tmp_path, proc.pid)
        assert remove_stale_lock(tmp_path) is None
        assert len(list(locks.iterdir())) == 2
    finally:
        proc.kill()
        proc.wait()


def test_a_reused_pid_of_another_program_counts_as_gone(tmp_path):
    proc = _sleeper()
    try:
        _locked(tmp_path, proc.pid)
        assert remove_stale_lock(tmp_path) is not None
    finally:
        proc.kill()
        proc.wait()


def test_locks_of_another_host_or_without_a_record_are_left_alone(tmp_path):
    locks = _locked(tmp_path, _dead_pid(), host=socket.gethostname() + "-elsewhere")
    assert remove_stale_lock(tmp_path) is None and len(list(locks.iterdir())) == 2
    (tmp_path / ".snakemake" / OWNER_FILE).unlink()
    assert remove_stale_lock(tmp_path) is None and len(list(locks.iterdir())) == 2


def test_no_lock_no_action(tmp_path):
    record_lock_owner(tmp_path, pid=_dead_pid())
    assert remove_stale_lock(tmp_path) is None
    assert (tmp_path / ".snakemake" / OWNER_FILE).is_file()


def test_a_started_job_has_an_empty_provenance_and_no_leftovers(tmp_path):
    round_dir = tmp_path / "round1"
    staging = round_dir / ".model.abc12345.tmp"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"half")
    (round_dir / ".masks.pt.x1234567.tmp").write_bytes(b"half")
    (round_dir / ".model.old12345.old").mkdir()
    (round_dir / ".unrelated.tmp").write_bytes(b"keep")
    mark_started({"model": str(round_dir / "model"), "masks": str(round_dir / "masks.pt"),
                  "provenance": str(round_dir / "provenance.json")})
    assert sorted(p.name for p in round_dir.iterdir()) == [".unrelated.tmp", "provenance.json"]
    assert (round_dir / "provenance.json").read_bytes() == b""
    assert os.path.getsize(round_dir / "provenance.json") == 0
