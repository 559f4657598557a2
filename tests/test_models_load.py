"""Saving and loading models and tokenizers: local round trip, dtype, and one-line errors (missing, offline hub)."""


import pytest
import torch

from iobs.data.tokenizer import limit_tokenizer_threads, train_bpe
from iobs.errors import DataError
from iobs.models.families import TinyDims, build_tiny_model
from iobs.models.load import load_model, load_tokenizer, looks_local, parse_dtype
from iobs.models.pretrain import save_model_dir
from tests.conftest import offline_data_errors

limit_tokenizer_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    (folder / "train.txt").write_text("def f(x):\n    return x + 1\n" * 200)
    tokenizer = train_bpe([folder / "train.txt"], vocab_size=300)
    model = build_tiny_model("llama", TinyDims(vocab_size=len(tokenizer), hidden=32, layers=1, heads=2, ffn=48,
                                               max_positions=64), seed=5)
    return model, tokenizer, save_model_dir(model, tokenizer, folder / "tiny-llama")


def test_round_trip_gives_the_same_logits_and_tokenizer(saved):
    model, tokenizer, folder = saved
    assert (folder / "model.safetensors").is_file()
    loaded = load_model(folder)
    ids = torch.tensor([tokenizer("def f(x):\n    return x")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert not loaded.training
    assert load_tokenizer(folder)("return x")["input_ids"] == tokenizer("return x")["input_ids"]
    assert load_model(folder, dtype="bfloat16").model.embed_tokens.weight.dtype == torch.bfloat16


def test_missing_and_broken_local_directories_are_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"model directory .*nowhere does not exist: set models\.opt\.path"):
        load_model(tmp_path / "nowhere", key="models.opt.path")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a loadable model directory"):
        load_model(tmp_path / "empty")
    with pytest.raises(DataError, match="choose one of"):
        parse_dtype("float8")


def test_what_counts_as_a_local_path():
    assert looks_local("./m") and looks_local("/abs/m") and looks_local("results/models/opt")
    assert not looks_local("facebook/opt-125m") and not looks_local("gpt2")


OFFLINE_SCRIPT = """
from iobs.errors import DataError
from iobs.models.load import load_model, load_tokenizer
for call in (lambda: load_model("facebook/opt-125m", key="models.opt125m.path"),
             lambda: load_tokenizer("facebook/opt-125m", key="models.opt125m.path")):
    try:
        call()
    except DataError as err:
        print("DataError:", err)
"""


def test_hub_model_offline_gives_a_data_error_naming_the_key(tmp_path):
    lines, output = offline_data_errors(OFFLINE_SCRIPT, tmp_path)
    assert len(lines) == 2, output
    for line in lines:
        assert "'facebook/opt-125m'" in line and "offline mode is on" in line and "set models.opt125m.path" in line
