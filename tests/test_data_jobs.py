"""The data, pretraining and evaluation job functions chained through the runner, at tiny sizes (about 10 s)."""

import json
from pathlib import Path

import pytest
import torch

from iobs.data.corpus import stdlib_dir
from iobs.data.streams import load_stream
from iobs.data.tokenizer import limit_tokenizer_threads
from iobs.errors import DataError
from iobs.pipeline.runner import JobContext, run_job
from tests.conftest import SHARED_DATA, needs_shared, offline_data_errors

limit_tokenizer_threads(1)


def _run(spec, tmp, name, inputs, outputs, **params):
    outputs = {k: str(tmp / v) for k, v in outputs.items()} | {"provenance": str(tmp / f"{name}.provenance.json")}
    inputs = {k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in inputs.items()}
    ctx = JobContext(name=name, input=inputs, output=outputs, params=params,
                     seed=params.get("seed"))
    run_job(ctx, spec)
    return {k: Path(v) for k, v in outputs.items()}, json.loads(Path(outputs["provenance"]).read_text())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jobs")
    out = {}
    out["corpus"], out["corpus_prov"] = _run(
        "iobs.pipeline.data:corpus", tmp, "corpus", {},
        {"train": "c/train.txt", "valid": "c/valid.txt", "test": "c/test.txt", "manifest": "c/manifest.json"},
        stdlib_dir=str(stdlib_dir() / "email"), fractions={"train": 0.6, "valid": 0.2, "test": 0.2})
    out["tok"], out["tok_prov"] = _run("iobs.pipeline.data:tokenizer", tmp, "tokenizer",
                                       {"train": out["corpus"]["train"]}, {"tokenizer": "tokenizer"}, vocab_size=512)
    for split in ("train", "valid"):
        out[split], out[f"{split}_prov"] = _run(
            "iobs.pipeline.data:tokenize", tmp, f"tokenize_{split}",
            {"tokenizer": out["tok"]["tokenizer"], "text": out["corpus"][split]}, {"tokens": f"{split}.pt"},
            source={"kind": "stdlib", "split": split})
    out["model"], out["model_prov"] = _run(
        "iobs.pipeline.models:pretrain_tiny", tmp, "pretrain",
        {"tokenizer": out["tok"]["tokenizer"], "train": out["train"]["tokens"], "valid": out["valid"]["tokens"]},
        {"model": "model", "metrics": "model_metrics.json"}, family="opt", steps=6, seq_len=32, batch=4,
        dims={"hidden": 32, "layers": 1, "heads": 2, "ffn": 64, "max_positions": 64}, valid_max_windows=8)
    return tmp, out


def test_corpus_and_tokenizer_jobs(pipeline):
    _, out = pipeline
    manifest = json.loads(out["corpus"]["manifest"].read_text())
    assert manifest["splits"]["valid"]["bytes"] == out["corpus"]["valid"].stat().st_size
    assert out["corpus_prov"]["corpus"]["files_sha256"] == manifest["files_sha256"]
    assert out["tok_prov"]["tokenizer"]["vocab_size"] == 512
    assert (out["tok"]["tokenizer"] / "tokenizer.json").is_file()


def test_tokenize_job_writes_a_stream_of_the_text(pipeline):
    _, out = pipeline
    stream = load_stream(out["valid"]["tokens"])
    info = out["valid_prov"]["stream"]
    assert info["tokens"] == stream.numel() and info["chars"] == len(out["corpus"]["valid"].read_text())
    assert 1.5 < info["chars_per_token"] < 6 and int(stream.max()) < 512


def test_calibration_job_stream_mode(pipeline):
    tmp, out = pipeline
    paths, prov = _run("iobs.pipeline.data:calibration", tmp, "calib", {"tokens": out["train"]["tokens"]},
                       {"windows": "calib.pt"}, num_windows=6, length=48, seed=0)
    windows = torch.load(paths["windows"], weights_only=True)
    assert windows.shape == (6, 48) and windows.dtype == torch.int64
    assert prov["calibration"] == {"mode": "stream", "shape": [6, 48], "seed": 0}


def test_pretrain_and_evaluate_jobs(pipeline):
    tmp, out = pipeline
    metrics = json.loads(out["model"]["metrics"].read_text())
    assert metrics["steps"] == 6 and metrics["uniform_perplexity"] == 512 and len(metrics["loss_curve"]) == 1
    assert out["model_prov"]["pretrain"]["valid_perplexity"] == metrics["valid"]["perplexity"]
    assert (out["model"]["model"] / "model.safetensors").is_file()
    assert (out["model"]["model"] / "tokenizer.json").is_file()
    paths, prov = _run("iobs.pipeline.eval:evaluate_model", tmp, "eval",
                       {"model": out["model"]["model"], "streams": [out["valid"]["tokens"]]}, {"metrics": "eval.json"},
                       streams=[{"eval_set": "stdlib", "split": "valid"}], seqlen=32, max_windows=8, batch_size=3)
    result = json.loads(paths["metrics"].read_text())["results"][0]
    assert result["windows"] == 8 and result["tokens"] == 8 * 31 and result["split"] == "valid"
    assert result["perplexity"] == pytest.approx(metrics["valid"]["perplexity"], rel=1e-5)  # same windows
    assert prov["perplexity"]["stdlib-valid"] == result["perplexity"]


@needs_shared("c4-samples")
def test_calibration_job_document_mode_on_c4_samples(pipeline):
    tmp, out = pipeline
    paths, prov = _run("iobs.pipeline.data:calibration", tmp, "calib_c4", {"tokenizer": out["tok"]["tokenizer"]},
                       {"windows": "calib_c4.pt"}, num_windows=4, length=64, seed=0,
                       source={"kind": "c4", "split": "train", "path": str(SHARED_DATA / "c4-samples")})
    assert torch.load(paths["windows"], weights_only=True).shape == (4, 64)
    assert prov["calibration"]["mode"] == "documents"


def test_jobs_without_a_source_or_model_fail_with_one_line(pipeline):
    tmp, out = pipeline
    with pytest.raises(DataError, match="needs a text source"):
        _run("iobs.pipeline.data:tokenize", tmp, "t", {"tokenizer": out["tok"]["tokenizer"]}, {"tokens": "x.pt"})
    with pytest.raises(DataError, match="needs a model"):
        _run("iobs.pipeline.eval:evaluate_model", tmp, "e", {"streams": [out["valid"]["tokens"]]},
             {"metrics": "e.json"}, streams=[{"eval_set": "stdlib", "split": "valid"}])



def test_evaluate_model_job_scores_every_stream_with_one_load(pipeline):
    tmp, out = pipeline
    streams = [{"eval_set": "stdlib", "split": "valid"}, {"eval_set": "stdlib", "split": "train"}]
    paths, prov = _run("iobs.pipeline.eval:evaluate_model", tmp, "eval_all",
                       {"model": out["model"]["model"], "streams": [out["valid"]["tokens"], out["train"]["tokens"]]},
                       {"metrics": "eval_all.json"}, streams=streams, labels={"model": "tiny-opt", "method": "dense"},
                       seqlen=32, max_windows=8)
    record = json.loads(paths["metrics"].read_text())
    assert record["labels"] == {"model": "tiny-opt", "method": "dense"}
    assert [(r["eval_set"], r["split"], r["windows"]) for r in record["results"]] == [
        ("stdlib", "valid", 8), ("stdlib", "train", 8)]
    single, _ = _run("iobs.pipeline.eval:evaluate_model", tmp, "eval_valid",
                     {"model": out["model"]["model"], "streams": [out["valid"]["tokens"]]}, {"metrics": "ev.json"},
                     streams=streams[:1], seqlen=32, max_windows=8)
    assert record["results"][0]["perplexity"] == json.loads(single["metrics"].read_text())["results"][0]["perplexity"]
    assert record["results"][1]["perplexity"] != record["results"][0]["perplexity"]
    assert prov["perplexity"]["stdlib-valid"] == record["results"][0]["perplexity"]


TOKENIZE_OFFLINE = """
from iobs.errors import DataError
from iobs.pipeline.data import tokenize, calibration
from iobs.pipeline.runner import JobContext
import sys
base = dict(input={}, output={"tokens": sys.argv[1] + "/t.pt", "windows": sys.argv[1] + "/w.pt"})
for job, params, tok in [
    (tokenize, {"source": {"kind": "text", "path": __file__}, "source_key": "eval.sets.s.test",
                "tokenizer": "nobody/absent-model"}, "opt125m"),
    (tokenize, {"source": {"kind": "text", "path": __file__}, "tokenizer": "./models/absent"}, "local-opt"),
    (calibration, {"source": {"kind": "jsonl", "path": __file__}, "length": 8, "num_windows": 1,
                   "tokenizer": "nobody/absent-model"}, "opt125m"),
]:
    try:
        job(JobContext(name=job.__name__, params=params, wildcards={"tok": tok}, **base))
    except DataError as err:
        print(f"DataError: {err}")
"""


def test_an_unloadable_tokenizer_names_the_models_config_key(tmp_path):
    """Rules pass an existing model's hub id or path as param `tokenizer`: the message names the hub id and the key
    that fixes it (models.<name>.path, a local copy), not a key called 'tokenizer' that the config does not have."""
    script = TOKENIZE_OFFLINE.replace("__file__", repr(str(tmp_path / "text.txt"))).replace(
        "sys.argv[1]", repr(str(tmp_path)))
    (tmp_path / "text.txt").write_text('{"text": "some text"}\n' * 50)
    lines, output = offline_data_errors(script, tmp_path)
    assert len(lines) == 3, output
    assert "tokenizer 'nobody/absent-model' from the Hugging Face hub (offline mode is on" in lines[0]
    assert "set models.opt125m.path to a local directory saved with save_pretrained" in lines[0]
    assert "does not exist: set models.local-opt.path to a folder written by save_pretrained" in lines[1]
    assert "set models.opt125m.path to a local directory saved with save_pretrained" in lines[2]
    assert not any("set tokenizer" in line for line in lines)
