"""The bridge between Snakemake rules and the package: every rule runs one function of ``iobs`` through here.

A rule names its function in ``params.job`` ("module:function") and passes its config subset as other params.
The runner sets threads, logs to the rule's log file, turns IobsError into one clear line, times the job and
writes the provenance JSON declared as the rule's ``provenance`` output. Job functions take a JobContext and may
return a dict that is merged into the provenance record.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from iobs.allocator import tune_allocator
from iobs.atomic import remove_path, stale_temporaries
from iobs.errors import IobsError
from iobs.provenance import write_provenance

log = logging.getLogger("iobs")

_RESERVED_PARAMS = {"job"}


@dataclass
class JobContext:
    """What a job function sees: named paths, its parameters, the seed and a thread budget."""

    name: str
    input: dict[str, Any]
    output: dict[str, Any]
    params: dict[str, Any]
    wildcards: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    resources: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None

    @property
    def device(self) -> str:
        """The compute device: a GPU only when the rule was given one (resources: gpu) and torch sees one."""
        import torch

        wants_gpu = int(self.resources.get("gpu", 0) or 0) > 0
        return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"

    def out(self, key: str) -> Path:
        path = Path(self.output[key])
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def resolve(spec: str) -> Callable[[JobContext], dict | None]:
    module_name, _, func_name = spec.partition(":")
    if not func_name:
        raise IobsError(f"job spec '{spec}' must look like 'package.module:function'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, func_name)
    except AttributeError:
        raise IobsError(f"job '{spec}': module {module_name} has no function {func_name}") from None


def _named(io) -> dict[str, Any]:
    """Snakemake's Namedlist -> plain dict of its named entries."""
    names = dict(io.items()) if hasattr(io, "items") else {}
    # Namedlist entries (lists of files) become plain lists; dict and scalar params pass through unchanged
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in names.items()}


def configure_logging(log_path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


def run_job(ctx: JobContext, spec: str, log_path: str | None = None) -> dict | None:
    """Run one job function with timing and provenance; the library entry point that the runner and tests use."""
    import torch

    torch.set_num_threads(max(1, int(ctx.threads)))
    func = resolve(spec)
    start = time.perf_counter()
    log.info("job %s started (threads=%d, wildcards=%s)", spec, ctx.threads, ctx.wildcards)
    extra = func(ctx) or {}
    wall = time.perf_counter() - start
    log.info("job %s finished in %.1f s", spec, wall)
    if "provenance" in ctx.output:
        write_provenance(
            ctx.output["provenance"], job=spec, params=ctx.params, seed=ctx.seed, wall_seconds=wall, extra=extra,
            wildcards=ctx.wildcards, inputs=sorted({str(p) for v in ctx.input.values() for p in _as_list(v)}),
            outputs=sorted({str(p) for v in ctx.output.values() for p in _as_list(v)}),
        )
    return extra


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def mark_started(output: dict[str, Any]) -> None:
    """Called before a rule's job function: remove what an interrupted earlier attempt left beside the outputs, and
    create the provenance output empty, as the marker of a job in progress.

    Snakemake deletes a job's outputs before it starts and flags them incomplete, but only an existing file can be
    found incomplete later: if the job dies (kill -9) with none of them written, its outputs are simply missing,
    and since the results downstream still exist, a rerun says "Nothing to be done" and keeps the old numbers.
    The empty provenance file makes the interruption visible: a rerun stops on it (IncompleteFilesException), or,
    with --rerun-incomplete, redoes the job and everything downstream. The runner replaces it when the job ends.
    """
    for value in output.values():
        for path in _as_list(value):
            for leftover in stale_temporaries(path):
                remove_path(leftover)
    if "provenance" in output:
        marker = Path(output["provenance"])
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(b"")


def _unmark(output: dict[str, Any]) -> None:
    """A job that failed (rather than being killed) leaves no provenance, not even the empty marker."""
    marker = Path(output["provenance"]) if "provenance" in output else None
    if marker is not None and marker.is_file() and marker.stat().st_size == 0:
        marker.unlink()


def run_from_snakemake(smk) -> None:
    """Entry point for workflow/scripts/job.py: build the context from Snakemake's object and run the job."""
    tune_allocator()
    log_path = smk.log[0] if len(smk.log) else None
    configure_logging(log_path)
    params = _named(smk.params)
    spec = params.pop("job")
    ctx = JobContext(
        name=smk.rule, input=_named(smk.input), output=_named(smk.output), params=params,
        wildcards=dict(smk.wildcards.items()), threads=smk.threads, resources=dict(smk.resources.items()),
        seed=params.get("seed"),
    )
    try:
        mark_started(ctx.output)
        run_job(ctx, spec, log_path)
    except IobsError as err:
        _unmark(ctx.output)
        log.error("%s", err)
        print(f"iobs error in rule {smk.rule}: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:  # a bug: keep the traceback in the log, one line on the console
        _unmark(ctx.output)
        log.error("unexpected failure:\n%s", traceback.format_exc())
        print(f"iobs: rule {smk.rule} failed unexpectedly ({type(err).__name__}: {err}); traceback in {log_path}",
              file=sys.stderr)
        sys.exit(1)
