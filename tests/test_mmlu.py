"""MMLU through lm-evaluation-harness, offline: upstream's MMLU task definitions run on a local copy of a few
cais/mmlu subjects (random questions written here) with a tiny random OPT. The job's accuracy must equal an
independent 5-shot scoring of the same questions, the average must be the size-weighted mean that lm-eval's own
group reports, and a dataset that is not cached must fail offline with one line. Tests that run lm-eval skip when it
is not installed (pip install -e '.[mmlu]')."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

from iobs.data.tokenizer import limit_tokenizer_threads, train_bpe
from iobs.errors import ConfigError, DataError
from iobs.eval.mmlu import WRAPPER_GROUP, MmluSettings, load_tasks, summarize
from iobs.models.families import TinyDims, build_tiny_model
from iobs.models.load import load_model, load_tokenizer
from iobs.models.pretrain import save_model_dir
from iobs.pipeline.runner import JobContext, run_job
from iobs.report.records import mmlu_frame

limit_tokenizer_threads(1)

ROOT = Path(__file__).resolve().parents[1]
def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install counts as missing
        return False


HAS_LM_EVAL = _installed("lm_eval")
needs_lm_eval = pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-eval is not installed (pip install -e '.[mmlu]')")
SUBJECTS = {"anatomy": 9, "astronomy": 15}  # test questions per subject: unequal, so weighting by size matters
DEV_QUESTIONS = 5  # MMLU's dev split: the 5 few-shot examples, taken in order
WORDS = ("cell bone star orbit planet muscle nerve galaxy comet tissue heart lung moon sun gravity light blood "
         "organ skin mass").split()
LETTERS = "ABCD"


def _mmlu_task_dir() -> Path:
    """Upstream's MMLU task YAMLs; indexing only them keeps the task manager at ~0.1 s instead of ~15 s."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent / "mmlu" / "default"


def _question(rng: random.Random) -> dict:
    return {"question": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "?",
            "choices": [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) for _ in range(4)],
            "answer": rng.randrange(4)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A local copy of cais/mmlu with two subjects, a tiny OPT with its tokenizer, and an HF datasets cache in tmp."""
    root = tmp_path_factory.mktemp("mmlu")
    rng = random.Random(7)
    data, readme = root / "mmlu-copy", ["---", "configs:"]
    for subject, n_test in SUBJECTS.items():
        (data / subject).mkdir(parents=True)
        for split, count in (("dev", DEV_QUESTIONS), ("test", n_test)):
            rows = [{**_question(rng), "subject": subject} for _ in range(count)]
            (data / subject / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        readme += [f"- config_name: {subject}", "  data_files:",
                   f"  - {{split: test, path: {subject}/test.jsonl}}", f"  - {{split: dev, path: {subject}/dev.jsonl}}"]
    (data / "README.md").write_text("\n".join(readme + ["---", ""]))
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(WORDS) + " A B C D Answer: The following are multiple choice questions (with "
                      "answers) about anatomy astronomy.\n" * 20)
    tokenizer = train_bpe([corpus], vocab_size=300)
    dims = TinyDims(vocab_size=len(tokenizer), hidden=32, layers=2, heads=2, kv_heads=1, ffn=64, max_positions=1024)
    model_dir = save_model_dir(build_tiny_model("opt", dims, seed=5), tokenizer, root / "model")
    # a group of the two subjects, aggregated as lm-eval's mmlu group is (weighted by size)
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "toy_mmlu.yaml").write_text(yaml.safe_dump({
        "group": "toy_mmlu", "task": [f"mmlu_{s}" for s in SUBJECTS],
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}]}))
    return {"root": root, "data": data, "model": model_dir, "tasks": tasks}


@pytest.fixture(scope="module")
def datasets_cache(workspace):
    """Keep the datasets library's cache of the local copy inside the test's tmp folder."""
    import datasets

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", workspace["root"] / "hf-datasets")
        yield


def _settings(workspace, **overrides) -> dict:
    """The job's settings: the toy group over upstream's MMLU subject tasks, read from the local copy."""
    return {"tasks": ["toy_mmlu"], "num_fewshot": 5, "batch_size": 4, "dataset_path": str(workspace["data"]),
            "include_path": [str(workspace["tasks"]), str(_mmlu_task_dir())], "include_defaults": False,
            **overrides}


@pytest.fixture(scope="module")
def job_record(workspace, datasets_cache) -> dict:
    if not HAS_LM_EVAL:
        pytest.skip("lm-eval is not installed (pip install -e '.[mmlu]')")
    out = workspace["root"] / "out"
    ctx = JobContext(name="mmlu", input={"model": str(workspace["model"])},
                     output={"metrics": str(out / "mmlu.json"), "provenance": str(out / "provenance.json")},
                     params={"settings": _settings(workspace), "dtype": "float32",
                             "labels": {"model": "toy", "method": "dense", "sparsity": "0", "round": 0}})
    run_job(ctx, "iobs.pipeline.mmlu:mmlu_accuracy")
    return json.loads((out / "mmlu.json").read_text())


def _prompt(subject: str, shots: list[dict], doc: dict) -> str:
    """MMLU's prompt as the harness documents it: a description line, then question / lettered choices / answer."""
    def block(d):
        return d["question"].strip() + "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(d["choices"])) + \
            "\nAnswer:"
    shown = [block(d) + " " + LETTERS[d["answer"]] for d in shots]
    return f"The following are multiple choice questions (with answers) about {subject}.\n\n" + \
        "".join(s + "\n\n" for s in shown) + block(doc)


@torch.no_grad()
def _predicted_letters(model, tokenizer, prompt: str) -> int:
    """argmax over A-D of log p(" X" | prompt), each continuation scored token by token."""
    context = tokenizer(prompt)["input_ids"]
    scores = []
    for letter in LETTERS:
        whole = tokenizer(prompt + " " + letter)["input_ids"]
        assert whole[:len(context)] == context
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
        scores.append(sum(float(logprobs[pos - 1, whole[pos]]) for pos in range(len(context), len(whole))))
    return max(range(4), key=lambda i: scores[i])


def _independent_accuracy(workspace, shots: int) -> dict[str, list[bool]]:
    model = load_model(workspace["model"])
    tokenizer = load_tokenizer(workspace["model"])
    correct = {}
    for subject in SUBJECTS:
        read = lambda split: [json.loads(line) for line in (workspace["data"] / subject / f"{split}.jsonl").open()]
        dev, test = read("dev"), read("test")
        correct[subject] = [_predicted_letters(model, tokenizer, _prompt(subject, dev[:shots], d)) == d["answer"]
                            for d in test]
    return correct


@needs_lm_eval
def test_accuracy_equals_an_independent_five_shot_scoring(job_record, workspace):
    five = _independent_accuracy(workspace, shots=5)
    zero = _independent_accuracy(workspace, shots=0)
    assert five != zero, "precondition: the tiny model must answer differently with and without the 5 examples"
    for subject, hits in five.items():
        task = job_record["tasks"][f"mmlu_{subject}"]
        assert task["n"] == SUBJECTS[subject]
        assert task["acc"] == pytest.approx(sum(hits) / len(hits), abs=1e-12)
    assert job_record["num_fewshot"] == 5 and job_record["labels"]["method"] == "dense"


@needs_lm_eval
def test_average_is_weighted_by_task_size_like_lm_evals_group(job_record):
    tasks = job_record["tasks"]
    accs = [t["acc"] for t in tasks.values()]
    assert accs[0] != accs[1], "precondition: the two subjects must differ for the weighting to show"
    weighted = sum(t["acc"] * t["n"] for t in tasks.values()) / sum(t["n"] for t in tasks.values())
    assert job_record["average"]["acc"] == pytest.approx(weighted, abs=1e-12)
    assert job_record["average"]["acc"] != pytest.approx(sum(accs) / 2, abs=1e-9)
    assert job_record["groups"]["toy_mmlu"]["acc"] == pytest.approx(weighted, abs=1e-12)  # lm-eval's own aggregate
    assert WRAPPER_GROUP not in job_record["groups"]
    assert job_record["average"]["n"] == sum(SUBJECTS.values())


@needs_lm_eval
def test_offline_without_the_dataset_fails_with_one_line(workspace, tmp_path):
    """Upstream's mmlu_anatomy reads cais/mmlu from the hub; offline with an empty cache that is one clear line."""
    script = f"""
import sys
from iobs.errors import IobsError
from iobs.pipeline.runner import JobContext, run_job
ctx = JobContext(name="mmlu", input={{"model": {str(workspace["model"])!r}}},
                 output={{"metrics": {str(tmp_path / "m.json")!r}}},
                 params={{"settings": {{"tasks": ["mmlu_anatomy"], "include_path": {str(_mmlu_task_dir())!r},
                                       "include_defaults": False}}}})
try:
    run_job(ctx, "iobs.pipeline.mmlu:mmlu_accuracy")
except IobsError as err:
    print(err)
    sys.exit(3)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 3, proc.stderr[-2000:]
    message = proc.stdout.strip()
    assert "\n" not in message
    assert "offline" in message and "mmlu.dataset_path" in message and "mmlu_anatomy" in message
    assert not (tmp_path / "m.json").exists()


@needs_lm_eval
def test_bad_task_names_and_paths_are_one_line_errors(workspace, tmp_path):
    with pytest.raises(ConfigError, match=r"mmlu.tasks: mmlu_nonsense is not an lm-eval task"):
        load_tasks(MmluSettings(tasks=("mmlu_nonsense",), include_path=(str(_mmlu_task_dir()),),
                                include_defaults=False), tmp_path)
    with pytest.raises(DataError, match=r"mmlu.dataset_path: .* is not a folder"):
        load_tasks(MmluSettings(tasks=("mmlu_anatomy",), dataset_path=str(tmp_path / "missing"),
                                include_path=(str(_mmlu_task_dir()),), include_defaults=False), tmp_path)


def test_missing_lm_eval_names_the_extra(workspace, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    ctx = JobContext(name="mmlu", input={"model": str(workspace["model"])},
                     output={"metrics": str(workspace["root"] / "never.json")}, params={"settings": {}})
    with pytest.raises(DataError, match=r"pip install -e '\.\[mmlu\]'"):
        run_job(ctx, "iobs.pipeline.mmlu:mmlu_accuracy")


def test_summarize_reads_lm_eval_results():
    results = {"n-samples": {"a": {"original": 4, "effective": 2}, "b": {"original": 6, "effective": 6}},
               "results": {"a": {"acc,none": 0.5, "acc_stderr,none": "N/A"}, "b": {"acc,none": 1.0},
                           "grp": {"acc,none": 0.875, "acc_stderr,none": 0.1}, WRAPPER_GROUP: {"alias": "x"}}}
    summary = summarize(results)
    assert summary["average"] == {"acc": pytest.approx(0.875), "n": 8}
    assert summary["tasks"]["a"] == {"acc": 0.5, "acc_stderr": None, "n": 2}
    assert set(summary["groups"]) == {"grp"}
    results["results"]["b"] = {"exact_match,none": 1.0}
    with pytest.raises(DataError, match="task b reports no 'acc' metric"):
        summarize(results)


def test_table_has_average_group_and_task_rows(tmp_path):
    def record(method, round_index, acc_a, acc_b):
        return {"labels": {"model": "m", "method": method, "sparsity": "0.5", "round": round_index},
                "tasks_requested": ["mmlu"], "average": {"acc": (acc_a * 2 + acc_b * 6) / 8, "n": 8},
                "groups": {"mmlu": {"acc": (acc_a * 2 + acc_b * 6) / 8, "acc_stderr": 0.1}},
                "tasks": {"a": {"acc": acc_a, "acc_stderr": 0.2, "n": 2}, "b": {"acc": acc_b, "acc_stderr": 0.1, "n": 6}}}
    paths = []
    for method, round_index, acc_a, acc_b in (("iobs", 2, 0.5, 0.5), ("iobs", 1, 1.0, 0.0)):
        paths.append(tmp_path / f"{method}{round_index}.json")
        paths[-1].write_text(json.dumps(record(method, round_index, acc_a, acc_b)))
    frame = mmlu_frame(paths)
    assert len(frame) == 2 * (1 + 1 + 2)
    first = frame[frame["round"] == 1].set_index(["kind", "task"])["acc"]
    assert first[("average", "mmlu")] == pytest.approx(0.25) and first[("task", "a")] == 1.0
    assert list(frame["round"].iloc[:4]) == [1] * 4  # sorted by round
    paths[0].write_text("{}")
    with pytest.raises(DataError, match="is not an MMLU record"):
        mmlu_frame(paths)


def test_rule_env_and_extra_pin_the_same_lm_eval():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["mmlu"]
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "mmlu.yaml").read_text())["dependencies"]
    rules_env = yaml.safe_load((ROOT / "workflow" / "envs" / "iobs.yaml").read_text())["dependencies"]
    pip = next(d["pip"] for d in env if isinstance(d, dict))
    assert pip == extra
    assert [d for d in env if isinstance(d, str) and d != "pip"] == rules_env


# ---- the window policy (iobs.data.bos) in the MMLU path ------------------------------------------------------------

@needs_lm_eval
def test_the_record_says_whether_requests_began_with_bos(job_record):
    # the project's BPE prepends nothing, so under auto lm-eval's requests begin without BOS
    assert job_record["bos"] == {"setting": "auto", "add_bos_token": None, "tokenizer_adds_bos": False,
                                 "label": "none"}


def test_bos_settings_map_to_lm_evals_add_bos_token():
    from iobs.eval.mmlu import hflm_add_bos_token
    from tests.conftest import word_tokenizer

    adds, plain = word_tokenizer(add_bos=True), word_tokenizer(add_bos=False)
    assert [hflm_add_bos_token(s, adds) for s in ("auto", "always", "never")] == [None, True, False]
    assert hflm_add_bos_token("auto", plain) is None and hflm_add_bos_token("never", plain) is False
    with pytest.raises(ConfigError, match="lm-eval cannot begin MMLU requests with BOS .* use models.m.bos auto"):
        hflm_add_bos_token("always", plain, key="models.m.bos")
    with pytest.raises(ConfigError, match="not a window policy"):
        hflm_add_bos_token("sometimes", adds)


@needs_lm_eval
def test_lm_eval_begins_requests_with_bos_exactly_when_the_tokenizer_prepends_it():
    """What auto relies on: HFLM with add_bos_token=None encodes with the tokenizer's defaults."""
    from lm_eval.models.huggingface import HFLM

    from tests.conftest import word_tokenizer

    adds, plain = word_tokenizer(add_bos=True), word_tokenizer(add_bos=False)
    model = build_tiny_model("phi", TinyDims(vocab_size=len(adds), hidden=32, layers=1, heads=2, ffn=64,
                                             max_positions=64))
    prompt = "the model prunes a layer ."
    first = {}
    for name, tokenizer, add in (("adds", adds, None), ("plain", plain, None), ("adds-never", adds, False)):
        wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, max_length=64, add_bos_token=add)
        first[name] = wrapped.tok_encode(prompt)[0]
    assert first == {"adds": adds.bos_token_id, "plain": adds("the")["input_ids"][1],
                     "adds-never": adds("the")["input_ids"][1]}
