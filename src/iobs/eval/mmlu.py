"""MMLU few-shot accuracy with EleutherAI's lm-evaluation-harness, pinned (extra `mmlu`: lm-eval[hf]==0.4.13).

The harness is used as published: its MMLU task definitions (prompt, 5 dev-split examples taken in order, letter
choices scored by log-likelihood, group averages weighted by task size) and lm_eval.simple_evaluate on an HFLM that
wraps a model already loaded here (so a pruned model is scored exactly as saved). Two things are ours:
- the requested tasks are wrapped in one group YAML written to a temporary folder; it lets `dataset_path` replace
  the hub dataset of every task underneath (a local copy of cais/mmlu) and puts the dataset loading, which happens
  when tasks are built, before any model work, so a missing dataset fails with one line;
- the summary: accuracy per leaf task, per group, and their size-weighted average (what lm-eval's mmlu group
  reports when the whole group is requested).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from iobs.data.bos import check_setting, tokenizer_adds_bos
from iobs.data.sources import hub_offline
from iobs.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LM_EVAL_PIN = "0.4.13"
WRAPPER_GROUP = "iobs_requested"  # the group that holds the requested tasks (never reported)


@dataclass(frozen=True)
class MmluSettings:
    """The config's `mmlu` section minus the DAG keys (enabled, methods)."""

    tasks: tuple[str, ...] = ("mmlu",)
    num_fewshot: int = 5
    batch_size: int = 8
    limit: int | None = None  # questions per leaf task; smoke tests only
    max_length: int | None = None  # None = the model's max_position_embeddings
    dataset_path: str | None = None  # replaces every task's hub dataset (a local copy of cais/mmlu)
    include_path: tuple[str, ...] = ()  # folders of extra task YAMLs
    include_defaults: bool = True  # False: only include_path is indexed (lm-eval's full index takes ~15 s)

    @classmethod
    def from_config(cls, section: dict) -> "MmluSettings":
        """From the config's mmlu section (unknown keys such as enabled/methods are ignored)."""
        keys = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        if "tasks" in keys:
            keys["tasks"] = tuple(keys["tasks"])
        include = keys.get("include_path")
        keys["include_path"] = () if not include else (include,) if isinstance(include, str) else tuple(include)
        return cls(**keys)

    def to_dict(self) -> dict:
        return {**asdict(self), "tasks": list(self.tasks), "include_path": list(self.include_path)}


def require_lm_eval():
    """The lm_eval module; DataError naming the extra to install if it is missing. Warns on another version."""
    try:
        import lm_eval
    except ImportError:
        raise DataError(f"MMLU needs lm-evaluation-harness, which is not installed: pip install -e '.[mmlu]' "
                        f"(lm-eval[hf]=={LM_EVAL_PIN}) or set mmlu.enabled: false") from None
    version = getattr(lm_eval, "__version__", "unknown")
    if version != LM_EVAL_PIN:
        log.warning("lm-eval %s is installed, the pinned version is %s: numbers may differ", version, LM_EVAL_PIN)
    return lm_eval


def _wrapper_yaml(settings: MmluSettings) -> dict:
    group: dict[str, Any] = {"group": WRAPPER_GROUP, "task": list(settings.tasks)}
    if settings.dataset_path:
        path = Path(settings.dataset_path).expanduser()
        if not path.is_dir():
            raise DataError(f"mmlu.dataset_path: {path} is not a folder: point it at a local copy of the cais/mmlu "
                            "dataset repository (with its README.md) or set it to null for the hub")
        group["dataset_path"] = str(path.resolve())  # a group-level key overrides every task underneath
    return group


def load_tasks(settings: MmluSettings, folder: str | Path):
    """(task manager, the wrapper Group with every requested task built and its dataset loaded).

    folder: a scratch directory for the wrapper YAML. ConfigError for an unknown task name, DataError (one line)
    when a dataset cannot be loaded, e.g. offline without it in the HF datasets cache.
    """
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    folder = Path(folder)
    (folder / f"{WRAPPER_GROUP}.yaml").write_text(yaml.safe_dump(_wrapper_yaml(settings)))
    include = [str(folder)]
    for extra in map(Path, settings.include_path):
        if not extra.expanduser().is_dir():
            raise DataError(f"mmlu.include_path: {extra} is not a folder of lm-eval task YAMLs: fix the path")
        include.append(str(extra.expanduser()))
    manager = TaskManager(include_path=include, include_defaults=settings.include_defaults)
    known = set(manager.all_tasks)
    unknown = [name for name in settings.tasks if name not in known]
    if unknown:
        raise ConfigError(f"mmlu.tasks: {', '.join(unknown)} is not an lm-eval task, group or tag "
                          "(e.g. mmlu, mmlu_stem, mmlu_anatomy; or add a task YAML folder as mmlu.include_path)")
    try:
        loaded = manager.load([WRAPPER_GROUP])
    except Exception as err:  # datasets raises many types (connection, offline, missing config): all mean "no data"
        reason = "offline mode is on and it is not in the HF datasets cache" if hub_offline() else \
            f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        where = f"mmlu.dataset_path {settings.dataset_path}" if settings.dataset_path else "the Hugging Face hub"
        raise DataError(f"cannot load the data of lm-eval tasks {', '.join(settings.tasks)} from {where} ({reason}): "
                        "set mmlu.dataset_path to a local copy of cais/mmlu or run once online to fill the cache") \
            from None
    return manager, loaded["groups"][WRAPPER_GROUP]


def _number(value) -> float | None:
    """lm-eval writes "N/A" for missing stderrs."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def summarize(results: dict) -> dict:
    """Accuracy per leaf task and group, and the leaf tasks' size-weighted average, from simple_evaluate's output.

    Returns {"tasks": {name: {acc, acc_stderr, n}}, "groups": {name: {acc, acc_stderr}}, "average": {acc, n}}.
    """
    tasks = {}
    for name, counts in results["n-samples"].items():
        metrics = results["results"][name]
        if "acc,none" not in metrics:
            raise DataError(f"lm-eval task {name} reports no 'acc' metric: mmlu.tasks must be multiple-choice tasks")
        tasks[name] = {"acc": float(metrics["acc,none"]), "acc_stderr": _number(metrics.get("acc_stderr,none")),
                       "n": int(counts["effective"])}
    groups = {name: {"acc": float(metrics["acc,none"]), "acc_stderr": _number(metrics.get("acc_stderr,none"))}
              for name, metrics in results["results"].items()
              if name not in tasks and name != WRAPPER_GROUP and "acc,none" in metrics}
    total = sum(t["n"] for t in tasks.values())
    if total == 0:
        raise DataError("lm-eval scored no questions: check mmlu.tasks and mmlu.limit")
    average = sum(t["acc"] * t["n"] for t in tasks.values()) / total
    return {"tasks": tasks, "groups": groups, "average": {"acc": average, "n": total}}


def hflm_add_bos_token(setting: str, tokenizer, key: str = "bos") -> bool | None:
    """HFLM's add_bos_token for a window policy setting (iobs.data.bos).

    lm-eval (0.4.x) encodes every request with the tokenizer, add_special_tokens=add_bos_token, or the tokenizer's
    defaults when it is None. So "auto" -> None: a request begins with BOS exactly when the tokenizer prepends one,
    which is auto's rule for every family but OPT and Llama, and lm-eval's standard MMLU protocol (the one
    published Llama MMLU numbers use) for those two. "never" -> False. "always" -> True, which only adds a BOS
    that the tokenizer's post-processor would add: a tokenizer without one is a ConfigError.
    """
    check_setting(setting, key)
    if setting == "auto":
        return None
    if setting == "always" and not tokenizer_adds_bos(tokenizer):
        raise ConfigError(f"{key} always: lm-eval cannot begin MMLU requests with BOS for tokenizer "
                          f"{getattr(tokenizer, 'name_or_path', '')}, which does not prepend one: use {key} auto")
    return setting == "always"


def mmlu_bos_record(setting: str, add_bos_token: bool | None, tokenizer_adds: bool) -> dict:
    """{setting, add_bos_token, tokenizer_adds_bos, label}: label 'bos' when every request begins with BOS."""
    starts = tokenizer_adds if add_bos_token is None else add_bos_token
    return {"setting": setting, "add_bos_token": add_bos_token, "tokenizer_adds_bos": tokenizer_adds,
            "label": "bos" if starts else "none"}


def evaluate_mmlu(model, tokenizer, settings: MmluSettings, bos: str = "auto", bos_key: str = "bos") -> dict:
    """Few-shot accuracy of a causal LM (any device; lm-eval uses the model's) on settings.tasks.

    model: a transformers PreTrainedModel in eval mode; tokenizer: its tokenizer; bos: the window policy setting
    (see hflm_add_bos_token). Returns summarize(...) plus num_fewshot, limit, tasks, lm_eval_version, seconds and
    bos (mmlu_bos_record).
    """
    add_bos_token = hflm_add_bos_token(bos, tokenizer, bos_key)
    lm_eval = require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="iobs-lm-eval-") as folder:
        manager, group = load_tasks(settings, folder)
        wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size,
                       max_length=settings.max_length, add_bos_token=add_bos_token)
        results = lm_eval.simple_evaluate(model=wrapped, tasks=[group], num_fewshot=settings.num_fewshot,
                                          limit=settings.limit, task_manager=manager, log_samples=False)
    summary = summarize(results)
    summary.update(num_fewshot=settings.num_fewshot, limit=settings.limit, tasks_requested=list(settings.tasks),
                   lm_eval_version=getattr(lm_eval, "__version__", None),
                   seconds=round(time.perf_counter() - start, 3),
                   bos=mmlu_bos_record(bos, add_bos_token, tokenizer_adds_bos(tokenizer)))
    return summary
