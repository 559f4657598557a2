"""The `iobs` command line on tiny random OPT and Llama models saved with their own BPE tokenizer: the pruned model
reloads with exact sparsity and equals what the library gives on the same calibration windows; I-OBS round 1 is
SparseGPT; eval equals iobs.eval.perplexity; user errors are one line with exit status 2."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from iobs.cli import main
from iobs.cli.data import resolve_source
from iobs.data.streams import tokenize_text
from iobs.data.tokenizer import limit_tokenizer_threads, train_bpe
from iobs.data.windows import calibration_batch, document_windows, eval_windows
from iobs.errors import DataError
from iobs.eval.perplexity import perplexity
from iobs.models.families import TinyDims, build_tiny_model, decoder_layers
from iobs.models.load import load_model, load_tokenizer
from iobs.models.pretrain import save_model_dir
from iobs.prune.driver import prune_model
from iobs.prune.save import load_masks

limit_tokenizer_threads(1)

SAMPLES, SEQLEN = 8, 32
CONSOLE_SCRIPT = Path(sys.executable).with_name("iobs")
WORDS = "the a model layer weight prunes sparse dense hessian block round step loss surgeon brain optimal".split()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """corpus.txt, docs.jsonl.gz (the same text as C4-style documents), and tiny opt/ and llama/ model folders."""
    root = tmp_path_factory.mktemp("cli")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(1500)]
    (root / "corpus.txt").write_text("\n".join(lines))
    with gzip.open(root / "docs.jsonl.gz", "wt") as fh:
        for start in range(0, len(lines), 25):
            fh.write(json.dumps({"text": " ".join(lines[start:start + 25])}) + "\n")
    tokenizer = train_bpe([root / "corpus.txt"], vocab_size=300)
    dims = TinyDims(vocab_size=len(tokenizer), hidden=32, layers=2, heads=2, kv_heads=1, ffn=64, max_positions=64)
    for family in ("opt", "llama"):
        save_model_dir(build_tiny_model(family, dims, seed=3), tokenizer, root / family)
    return root


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv] + ["--threads", "1"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def prune_args(model: Path, out: Path, method: str, sparsity: str, calibration: Path, *extra) -> list:
    return ["prune", model, "--method", method, "--sparsity", sparsity, "--calibration", calibration,
            "--samples", SAMPLES, "--seqlen", SEQLEN, "--out", out, "--no-progress", *extra]


def decoder_weights(model) -> dict[str, torch.Tensor]:
    return {f"{i}.{name}": m.weight.detach().clone() for i, layer in enumerate(decoder_layers(model))
            for name, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}


def stream_windows(root: Path, model_dir: Path, round_index: int = 0) -> torch.Tensor:
    stream = tokenize_text(load_tokenizer(model_dir), (root / "corpus.txt").read_text())
    return calibration_batch(stream, SAMPLES, SEQLEN, seed=0, round_index=round_index)


@pytest.fixture(scope="module")
def sparsegpt_opt(workspace, tmp_path_factory) -> Path:
    """`iobs prune opt --method sparsegpt --sparsity 0.5`, run in-process."""
    out = tmp_path_factory.mktemp("runs") / "opt-sparsegpt"
    assert main([str(a) for a in prune_args(workspace / "opt", out, "sparsegpt", "0.5", workspace / "corpus.txt",
                                             "--threads", 1)]) == 0
    return out


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_prune_saves_the_library_result_with_exact_sparsity(family, workspace, sparsegpt_opt, tmp_path, capsys):
    if family == "opt":
        out = sparsegpt_opt
    else:
        out = tmp_path / "pruned"
        code, _, err = run(prune_args(workspace / family, out, "sparsegpt", "0.5", workspace / "corpus.txt"), capsys)
        assert code == 0, err
    saved = AutoModelForCausalLM.from_pretrained(out)
    weights = decoder_weights(saved)
    for name, weight in weights.items():
        assert int((weight == 0).sum()) == weight.numel() // 2, name  # SparseGPT's per-block exact count
    masks = load_masks(out / "masks.pt")
    assert len(masks) == len(weights)
    for name, module in saved.named_modules():
        if name in masks:
            assert torch.equal(masks[name], module.weight != 0), name  # zeros survive save + reload

    expected = load_model(workspace / family)
    prune_model(expected, stream_windows(workspace, workspace / family), "sparsegpt", "0.5", progress=False)
    for name, weight in decoder_weights(expected).items():
        assert torch.equal(weights[name], weight), name  # same calibration windows, same solver: same weights

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "sparsegpt" and metrics["total_sparsity"] == 0.5
    assert metrics["calibration"]["mode"] == "stream" and metrics["calibration"]["samples"] == SAMPLES
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["job"] == "iobs prune" and provenance["command"][:2] == ["iobs", "prune"]
    assert provenance["params"]["method"] == "sparsegpt" and provenance["versions"]["torch"] == torch.__version__


def test_console_script_prunes_2_of_4_with_wanda_from_json_documents(workspace, tmp_path):
    out = tmp_path / "wanda-2-4"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([str(CONSOLE_SCRIPT), *map(str, prune_args(workspace / "llama", out, "wanda", "2:4",
                                                                          workspace / "docs.jsonl.gz")),
                           "--threads", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    dense = decoder_weights(load_model(workspace / "llama"))
    for name, weight in decoder_weights(AutoModelForCausalLM.from_pretrained(out)).items():
        groups = (weight != 0).reshape(weight.shape[0], -1, 4)
        assert torch.equal(groups.sum(dim=-1), torch.full(groups.shape[:2], 2)), name  # 2 of every 4 inputs kept
        kept = weight != 0
        assert torch.equal(weight[kept], dense[name][kept]), name  # Wanda only removes weights
    calibration = json.loads((out / "metrics.json").read_text())["calibration"]
    assert calibration["mode"] == "documents" and calibration["source"]["kind"] == "c4"


def test_json_documents_calibrate_with_the_sparsegpt_document_recipe(workspace, tmp_path, capsys):
    out = tmp_path / "docs"
    code, _, err = run(prune_args(workspace / "opt", out, "sparsegpt", "0.5", workspace / "docs.jsonl.gz"), capsys)
    assert code == 0, err
    tokenizer = load_tokenizer(workspace / "opt")
    documents = [json.loads(line)["text"] for line in gzip.open(workspace / "docs.jsonl.gz", "rt")]
    windows = document_windows(documents, lambda text: tokenizer(text)["input_ids"], SAMPLES, SEQLEN, seed=0)
    expected = load_model(workspace / "opt")
    prune_model(expected, windows, "sparsegpt", "0.5", progress=False)
    actual = decoder_weights(AutoModelForCausalLM.from_pretrained(out))
    for name, weight in decoder_weights(expected).items():
        assert torch.equal(actual[name], weight), name


def test_iobs_two_rounds_start_with_sparsegpt_and_save_every_round(workspace, sparsegpt_opt, tmp_path, capsys):
    out = tmp_path / "iobs"
    code, _, err = run(prune_args(workspace / "opt", out, "iobs", "0.5", workspace / "corpus.txt", "--rounds", 2,
                                  "--steps", 2, "--optimizer", "sgd", "--lr", 0.05, "--gradient-checkpointing",
                                  "--offload-optimizer", "--save-every-round"), capsys)
    assert code == 0, err
    final = decoder_weights(AutoModelForCausalLM.from_pretrained(out))
    round1 = decoder_weights(AutoModelForCausalLM.from_pretrained(out / "rounds" / "round1"))
    round2 = decoder_weights(AutoModelForCausalLM.from_pretrained(out / "rounds" / "round2"))
    oneshot = decoder_weights(AutoModelForCausalLM.from_pretrained(sparsegpt_opt))
    for name in final:
        assert torch.equal(round1[name], oneshot[name]), name  # I-OBS(1) is one-shot SparseGPT
        assert torch.equal(final[name], round2[name]), name  # DIR holds I-OBS(T)
        assert int((final[name] == 0).sum()) == final[name].numel() // 2, name
    assert any(not torch.equal(round1[n], round2[n]) for n in final)  # the steps and round-2 projection moved it
    masks = load_masks(out / "masks.pt")
    assert all(torch.equal(masks[f"model.decoder.layers.{n}"], final[n] != 0) for n in final)

    metrics = json.loads((out / "metrics.json").read_text())
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and metrics["total_sparsity"] == 0.5
    assert len(rounds[0]["step_losses"]) == 2 and rounds[1]["step_losses"] == []  # no step after the last round
    assert rounds[0]["step_losses"][1] < rounds[0]["step_losses"][0]  # a gradient step lowers the loss
    assert 0 <= rounds[1]["dynamics"]["changed_since_previous"] <= 1
    assert metrics["steps"]["lr"] == 0.05 and metrics["solver"] == "sparsegpt"
    assert metrics["steps"]["gradient_checkpointing"] and metrics["steps"]["offload_optimizer"]


def test_eval_prints_and_saves_the_library_perplexity(workspace, sparsegpt_opt, tmp_path, capsys):
    report = tmp_path / "ppl.json"
    code, out, err = run(["eval", sparsegpt_opt, "--data", workspace / "corpus.txt", "--seqlen", SEQLEN,
                          "--max-windows", 6, "--batch-size", 4, "--json", report], capsys)
    assert code == 0, err
    stream = tokenize_text(load_tokenizer(sparsegpt_opt), (workspace / "corpus.txt").read_text())
    expected = perplexity(load_model(sparsegpt_opt), eval_windows(stream, SEQLEN, 6))
    result = json.loads(report.read_text())
    assert result["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-9)
    assert result["windows"] == 6 and result["tokens"] == 6 * (SEQLEN - 1)
    assert result["decoder_sparsity"] == 0.5 and result["provenance"]["job"] == "iobs eval"
    assert out.startswith(f"iobs: perplexity {expected['perplexity']:.4f} on ")
    dense = perplexity(load_model(workspace / "opt"), eval_windows(stream, SEQLEN, 6))["perplexity"]
    assert result["perplexity"] != pytest.approx(dense, rel=1e-6)  # it evaluated the pruned model, not the dense one


def test_a_model_folder_without_tokenizer_needs_the_tokenizer_option(workspace, tmp_path, capsys):
    bare = tmp_path / "bare"
    load_model(workspace / "opt").save_pretrained(bare)
    args = ["eval", bare, "--data", workspace / "corpus.txt", "--seqlen", SEQLEN, "--max-windows", 2]
    code, _, err = run(args, capsys)
    assert code == 2 and "--tokenizer" in err and len(err.splitlines()) == 1
    code, out, err = run([*args, "--tokenizer", workspace / "opt"], capsys)
    assert code == 0 and out.startswith("iobs: perplexity "), err


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("iobs: error: "), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("sparsity", ["1.5", "2:4:8", "half"])
def test_bad_sparsity_is_one_line(sparsity, workspace, tmp_path, capsys):
    err = one_line_error(*run(prune_args(workspace / "opt", tmp_path / "o", "magnitude", sparsity,
                                         workspace / "corpus.txt"), capsys))
    assert "sparsity" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case, fragment", [
    ("missing model", "does not exist"),
    ("hub model offline", "offline"),
    ("missing calibration", "no such file"),
    ("seqlen beyond positions", "positions"),
    ("round option without iobs", "--rounds"),
    ("memory plan without iobs", "--offload-optimizer"),
    ("N:M that does not tile", "divisible"),
])
def test_user_errors_are_one_line_with_status_2(case, fragment, workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, calibration, extra, sparsity = workspace / "opt", workspace / "corpus.txt", [], "0.5"
    if case == "missing model":
        model = tmp_path / "no-such-model"
    elif case == "hub model offline":
        model = "iobs-tests/no-such-model"
    elif case == "missing calibration":
        calibration = tmp_path / "missing.txt"
    elif case == "seqlen beyond positions":
        extra = ["--seqlen", 65]
    elif case == "round option without iobs":
        extra = ["--rounds", 3]
    elif case == "memory plan without iobs":
        extra = ["--offload-optimizer"]
    elif case == "N:M that does not tile":
        sparsity = "2:3"
    err = one_line_error(*run(prune_args(model, tmp_path / "o", "sparsegpt", sparsity, calibration, *extra), capsys))
    assert fragment in err
    assert not (tmp_path / "o").exists()


def test_out_folder_is_only_replaced_when_it_is_an_earlier_run(workspace, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    args = prune_args(workspace / "opt", precious, "magnitude", "0.5", workspace / "corpus.txt")
    assert "--overwrite" in one_line_error(*run(args, capsys))
    assert "refusing" in one_line_error(*run([*args, "--overwrite"], capsys))
    assert (precious / "notes.txt").read_text() == "keep me"

    earlier = tmp_path / "earlier"
    assert run(prune_args(workspace / "opt", earlier, "magnitude", "0.5", workspace / "corpus.txt"), capsys)[0] == 0
    code, _, err = run(prune_args(workspace / "opt", earlier, "magnitude", "0.7", workspace / "corpus.txt",
                                  "--overwrite"), capsys)
    assert code == 0, err
    assert json.loads((earlier / "metrics.json").read_text())["sparsity"] == "0.7"


def test_console_script_reports_an_offline_hub_dataset_in_one_line(workspace, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([str(CONSOLE_SCRIPT), "prune", str(workspace / "opt"), "--method", "sparsegpt",
                           "--sparsity", "0.5", "--calibration", "c4", "--seqlen", "32", "--out", str(tmp_path / "o"),
                           "--threads", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "c4 train" in done.stderr and "--calibration PATH" in done.stderr


def test_source_shorthand(workspace, tmp_path):
    assert resolve_source("c4", "calibration", "--calibration") == {"kind": "c4", "split": "train"}
    assert resolve_source("c4", "eval", "--data") == {"kind": "c4", "split": "validation"}
    assert resolve_source("wikitext2", "eval", "--data") == {"kind": "wikitext2", "split": "test"}
    assert resolve_source("wikitext2:validation", "eval", "--data")["split"] == "validation"
    assert resolve_source(str(workspace / "corpus.txt"), "eval", "--data")["kind"] == "text"
    assert resolve_source(str(workspace / "docs.jsonl.gz"), "eval", "--data")["kind"] == "c4"
    raw = tmp_path / "wikitext"
    raw.mkdir()
    (raw / "wiki.test.raw").write_text(" = Title = \n")
    assert resolve_source(str(raw / "wiki.test.raw"), "eval", "--data") == \
        {"kind": "wikitext2", "path": str(raw / "wiki.test.raw")}
    assert resolve_source(str(raw), "eval", "--data") == {"kind": "wikitext2", "split": "test", "path": str(raw)}
    with pytest.raises(DataError, match="wiki.train.raw"):
        resolve_source(str(raw), "calibration", "--calibration")
    with pytest.raises(DataError, match="wiki.valid.raw"):
        resolve_source(f"{raw}:valid", "eval", "--data")
    splits = tmp_path / "corpus"
    splits.mkdir()
    (splits / "train.txt").write_text("x")
    assert resolve_source(str(splits), "calibration", "--c") == {"kind": "stdlib", "split": "train",
                                                                 "path": str(splits)}
    for bad in (str(tmp_path / "nothing"), "c4:", str(tmp_path)):  # tmp_path holds only folders
        with pytest.raises(DataError, match="--data"):
            resolve_source(bad, "eval", "--data")
