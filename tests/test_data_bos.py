"""The window policy (iobs.data.bos): the rule per model, window contents, scored positions, and that a window of a
BOS-expecting model is scored as if the text began there, on tiny random models whose word-level tokenizers do and
do not prepend BOS (conftest.word_tokenizer)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from iobs.data.bos import NO_BOS, resolve_bos, tokenizer_adds_bos
from iobs.data.streams import tokenize_text
from iobs.data.windows import calibration_batch, document_windows, eval_windows
from iobs.errors import ConfigError, DataError
from iobs.eval.perplexity import perplexity, window_nll
from iobs.models.bos import job_bos_policy
from iobs.models.families import TinyDims, build_tiny_model
from tests.conftest import word_text, word_tokenizer

BOS = 0  # <s> of word_tokenizer


@pytest.fixture(scope="module")
def adds():
    return word_tokenizer(add_bos=True)


@pytest.fixture(scope="module")
def plain():
    return word_tokenizer(add_bos=False)


@pytest.fixture(scope="module")
def tiny_phi(adds):
    dims = TinyDims(vocab_size=len(adds), hidden=32, layers=2, heads=2, ffn=64, max_positions=64)
    return build_tiny_model("phi", dims, seed=5)


# ---- the rule ---------------------------------------------------------------------------------------------------

def test_tokenizer_adds_bos_is_read_from_encoding(adds, plain, tmp_path):
    from iobs.data.tokenizer import train_bpe

    assert tokenizer_adds_bos(adds) and not tokenizer_adds_bos(plain)
    assert plain.bos_token_id == BOS  # it has a BOS token, it just does not prepend it
    (tmp_path / "train.txt").write_text(word_text(50))
    bpe = train_bpe([tmp_path / "train.txt"], vocab_size=300)  # the tokenizer of every model pretrained here
    assert bpe.bos_token_id == 0 and not tokenizer_adds_bos(bpe)
    assert not resolve_bos("auto", "phi", bpe).prepend  # so the tiny pipelines keep the reference windows


def test_auto_keeps_the_reference_protocol_for_opt_and_llama_even_if_their_tokenizer_adds_bos(adds):
    for family in ("opt", "llama"):
        policy = resolve_bos("auto", family, adds)
        assert not policy.prepend and policy.bos_id is None and policy.label == "none"
        assert "reference protocol" in policy.reason


def test_auto_puts_bos_in_every_window_of_other_families_whose_tokenizer_adds_it(adds, plain):
    for model_type in ("phi", "gemma", "qwen2", None):
        policy = resolve_bos("auto", model_type, adds)
        assert policy.prepend and policy.bos_id == BOS and policy.label == "bos"
        assert "prepends BOS" in policy.reason
        assert not resolve_bos("auto", model_type, plain).prepend


def test_always_and_never_override_the_rule(adds, plain):
    assert resolve_bos("always", "opt", adds).prepend
    assert resolve_bos("always", "phi", plain).bos_id == BOS
    assert not resolve_bos("never", "phi", adds).prepend
    record = resolve_bos("always", "llama", adds, key="--bos").record()
    assert record == {"prepend": True, "bos_id": BOS, "setting": "always", "reason": "--bos always", "label": "bos"}


def test_bad_settings_and_a_missing_bos_token_are_one_line_config_errors(plain):
    with pytest.raises(ConfigError, match=r"^--bos 'yes' is not a window policy: use one of auto, always, never$"):
        resolve_bos("yes", "phi", plain, key="--bos")
    no_bos = SimpleNamespace(bos_token_id=None, name_or_path="gpt2-like")
    with pytest.raises(ConfigError, match="tokenizer gpt2-like has no BOS token: use models.m.bos never"):
        resolve_bos("always", "phi", no_bos, key="models.m.bos")
    assert not resolve_bos("auto", "phi", no_bos).prepend


def test_a_job_with_bos_never_loads_no_tokenizer(adds):
    def refuse():
        raise AssertionError("loaded the tokenizer")

    assert job_bos_policy("never", "/no/such/model", refuse).prepend is False
    assert job_bos_policy("auto", None, lambda: adds).prepend  # a tokenizer made here: no reference family


# ---- window contents ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stream(adds) -> torch.Tensor:
    ids = tokenize_text(adds, word_text(300))
    assert int(ids[0]) == BOS and int((ids == BOS).sum()) == 1  # the tokenizer's one BOS, at the start
    return ids


def test_eval_windows_without_bos_are_the_reference_windows(stream):
    windows = eval_windows(stream, 16)
    assert torch.equal(windows, stream[: windows.numel()].long().view(-1, 16))
    assert torch.equal(eval_windows(stream, 16, bos_id=None), windows)


def test_eval_windows_with_bos_are_bos_plus_consecutive_text_pieces(stream):
    windows = eval_windows(stream, 16, bos_id=BOS)
    text = stream[1:]  # the stream's own leading BOS is not text
    count = text.numel() // 15
    assert windows.shape == (count, 16) and windows.dtype == torch.int64
    assert (windows[:, 0] == BOS).all() and not (windows[:, 1:] == BOS).any()
    assert torch.equal(windows[:, 1:].reshape(-1), text[: count * 15].long())
    capped = eval_windows(stream, 16, max_windows=5, bos_id=BOS)
    assert torch.equal(capped, windows[torch.arange(5) * count // 5])


def test_a_stream_without_a_leading_bos_loses_no_token(plain, stream):
    ids = tokenize_text(plain, word_text(300))
    assert torch.equal(ids, stream[1:])
    assert torch.equal(eval_windows(ids, 16, bos_id=BOS), eval_windows(stream, 16, bos_id=BOS))


def test_calibration_windows_with_bos_are_bos_plus_text_at_random_starts(stream):
    windows = calibration_batch(stream, 12, 16, seed=3, round_index=1, bos_id=BOS)
    assert windows.shape == (12, 16) and (windows[:, 0] == BOS).all() and not (windows[:, 1:] == BOS).any()
    text = stream[1:].long()
    for row in windows[:, 1:]:
        starts = [s for s in range(text.numel() - 14) if torch.equal(text[s:s + 15], row)]
        assert starts, "a calibration window is not a piece of the text"
    assert torch.equal(calibration_batch(stream, 12, 16, seed=3, round_index=1, bos_id=BOS), windows)
    assert torch.equal(calibration_batch(stream, 12, 16, seed=3), calibration_batch(stream, 12, 16, seed=3,
                                                                                      bos_id=None))
    with pytest.raises(DataError, match="cannot hold BOS and text"):
        calibration_batch(stream, 2, 1, bos_id=BOS)


def test_document_windows_with_bos_drop_the_documents_own_bos(adds):
    documents = [" ".join(["the model prunes"] * n) for n in (2, 9, 12)]

    def encode(doc):
        return adds(doc)["input_ids"]

    windows = document_windows(documents, encode, 6, 10, seed=1, bos_id=BOS)
    assert windows.shape == (6, 10) and (windows[:, 0] == BOS).all() and not (windows[:, 1:] == BOS).any()
    texts = [encode(d)[1:] for d in documents]
    for row in windows[:, 1:].tolist():
        assert any(row == t[s:s + 9] for t in texts for s in range(len(t) - 8))
    reference = document_windows(documents, encode, 6, 10, seed=1)
    assert (reference[:, 0] != BOS).any()  # the reference recipe: a window of the encoded document, BOS and all


# ---- scored positions ---------------------------------------------------------------------------------------------

class ContextFree(torch.nn.Module):
    """The same next-token distribution everywhere: log p(BOS) is -30, so scoring BOS would dominate the mean."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.row = torch.nn.Parameter(log_probs, requires_grad=False)

    def forward(self, input_ids, use_cache=None):
        return SimpleNamespace(logits=self.row.expand(*input_ids.shape, -1))


def test_the_bos_position_is_never_a_target_and_every_text_token_is_one(stream):
    vocab = int(stream.max()) + 1
    log_probs = torch.log_softmax(torch.linspace(0, 2, vocab), 0)
    log_probs[BOS] = -30.0
    windows = eval_windows(stream, 16, bos_id=BOS)
    result = perplexity(ContextFree(log_probs), windows)
    text = windows[:, 1:].reshape(-1)
    # a context-free model: ppl = exp(mean over the scored tokens of -log p); those are exactly the text tokens
    expected = math.exp(-float(log_probs.double().log_softmax(0)[text].mean()))
    assert result["perplexity"] == pytest.approx(expected, rel=1e-6)  # float32 logits
    assert result["tokens"] == windows.shape[0] * 15 == text.numel()


# ---- a window is scored as if the text began there ------------------------------------------------------------------

def _plain_nll(model, tokenizer, text: str) -> float:
    """Summed NLL of `model(tokenizer(text))` over every position the model predicts."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids, use_cache=False)
    return float(out.loss) * (ids.shape[1] - 1)


def test_bos_windows_score_like_the_model_on_its_tokenizer_output(tiny_phi, adds, stream):
    windows = eval_windows(stream, 16, max_windows=6, bos_id=BOS)
    for window, nll in zip(windows, window_nll(tiny_phi, windows)):
        text = adds.decode(window[1:])
        assert float(nll) == pytest.approx(_plain_nll(tiny_phi, adds, text), rel=1e-5)


def test_a_bos_window_does_not_depend_on_where_the_text_starts(tiny_phi, adds):
    """Cut the text at window k's first token: with BOS per window, window k of the whole text is exactly the first
    window of the cut text, so it scores the same; without BOS only the stream's opening window has the BOS the
    model was trained with, and the same words score differently at the start and in the middle."""
    stream = tokenize_text(adds, word_text(300))
    length = 16
    for policy, same in ((resolve_bos("auto", "phi", adds), True), (NO_BOS, False)):
        whole = eval_windows(stream, length, bos_id=policy.bos_id)
        for k in (1, 4, 9):
            first = 1 + (k * (length - 1) if policy.prepend else k * length - 1)  # window k's first text token
            cut = adds.decode(stream[first:])  # the text from there on
            assert adds(cut)["input_ids"][1:] == stream[first:].tolist()
            opening = eval_windows(tokenize_text(adds, cut), length, bos_id=policy.bos_id)[:1]
            nll_mid, nll_open = window_nll(tiny_phi, whole[k:k + 1]), window_nll(tiny_phi, opening)
            if same:
                assert torch.equal(whole[k], opening[0]) and float(nll_mid) == pytest.approx(float(nll_open),
                                                                                              rel=1e-6)
            else:
                assert not torch.equal(whole[k], opening[0])
                assert float(nll_mid) != pytest.approx(float(nll_open), rel=1e-3)


def test_an_unreadable_model_config_under_auto_is_one_line(tmp_path, adds):
    with pytest.raises(DataError, match=r"models.m.bos auto needs the model type of .*: give a local path, or set "
                                        r"models.m.bos always or never$"):
        job_bos_policy("auto", str(tmp_path), lambda: adds, key="models.m.bos")
