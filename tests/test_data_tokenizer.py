"""Byte-level BPE: round trip, AutoTokenizer loading, determinism, exact chunked tokenization, streams."""

import pytest
import torch

from iobs.data import streams
from iobs.data.corpus import build_corpus
from iobs.data.streams import chunks_at_line_starts, load_stream, save_stream, splits_exactly, tokenize_text
from iobs.data.tokenizer import END_OF_TEXT, limit_tokenizer_threads, save_tokenizer, train_bpe
from iobs.errors import DataError

limit_tokenizer_threads(1)

TRICKY = "def f(x):\n    return x  # héllo ☃ 😀\n\n\tz = 'a'\r\n   \n\x0c\n" + "<|endoftext|> end"


@pytest.fixture(scope="module")
def corpus_text():
    return build_corpus().texts["valid"]  # ~250 kB of real Python: enough to learn merges, quick to train on


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_text):
    folder = tmp_path_factory.mktemp("tok")
    (folder / "train.txt").write_text(corpus_text)
    tok = train_bpe([folder / "train.txt"], vocab_size=600)
    return tok, save_tokenizer(tok, folder / "tokenizer")


def test_round_trip_and_compression(trained, corpus_text):
    tok, _ = trained
    assert len(tok) == 600 and tok.convert_tokens_to_ids(END_OF_TEXT) == 0
    ids = tok(TRICKY)["input_ids"]
    assert tok.decode(ids) == TRICKY
    sample = corpus_text[:20000]
    sample_ids = tok(sample)["input_ids"]
    assert tok.decode(sample_ids) == sample
    assert len(sample) / len(sample_ids) > 2.0  # merges were learned (bytes alone would give <= 1 char per token)


def test_autotokenizer_loads_the_saved_directory(trained):
    from transformers import AutoTokenizer

    tok, folder = trained
    loaded = AutoTokenizer.from_pretrained(str(folder))
    assert len(loaded) == len(tok) and loaded.eos_token_id == 0
    assert loaded(TRICKY)["input_ids"] == tok(TRICKY)["input_ids"]
    assert not list(folder.parent.glob(".tokenizer.*"))  # no temporary directory left behind


def test_training_is_deterministic(tmp_path, corpus_text):
    (tmp_path / "t.txt").write_text(corpus_text[:60000])
    first = train_bpe([tmp_path / "t.txt"], vocab_size=400).get_vocab()
    second = train_bpe([tmp_path / "t.txt"], vocab_size=400).get_vocab()
    assert first == second


def test_chunked_tokenization_equals_whole(trained, corpus_text, monkeypatch):
    tok, _ = trained
    assert splits_exactly(tok)
    text = corpus_text[:30000] + TRICKY + " \n x\n\n  y \n"
    whole = tok(text)["input_ids"]
    monkeypatch.setattr(streams, "CHUNK_CHARS", 37)  # hundreds of cuts
    assert len(chunks_at_line_starts(text, 37)) > 300 and "".join(chunks_at_line_starts(text, 37)) == text
    assert tokenize_text(tok, text).tolist() == whole


def test_stream_file_round_trip_and_truncation(trained, tmp_path):
    tok, _ = trained
    stream = tokenize_text(tok, TRICKY * 3, max_tokens=10)
    assert stream.dtype == torch.int32 and stream.numel() == 10
    save_stream(tmp_path / "s.pt", stream)
    back = load_stream(tmp_path / "s.pt")
    assert back.dtype == torch.int64 and torch.equal(back, stream.long())
    with pytest.raises(DataError, match="does not exist"):
        load_stream(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a tensor")
    with pytest.raises(DataError, match="not a readable"):
        load_stream(tmp_path / "junk.pt")
