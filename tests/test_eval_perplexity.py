"""Perplexity: closed form for uniform logits, agreement with a plain per-window loop, batching, errors."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from iobs.errors import DataError
from iobs.eval.perplexity import perplexity
from iobs.models.families import TinyDims, build_tiny_model


class ConstantLogits(torch.nn.Module):
    """Logits that ignore the input: uniform (all zero) or a fixed distribution."""

    def __init__(self, vocab: int, logits: torch.Tensor | None = None):
        super().__init__()
        self.row = torch.nn.Parameter(torch.zeros(vocab) if logits is None else logits, requires_grad=False)
        self.seen_use_cache = []

    def forward(self, input_ids, use_cache=None):
        self.seen_use_cache.append(use_cache)
        return SimpleNamespace(logits=self.row.expand(*input_ids.shape, -1))


def test_uniform_logits_give_the_vocab_size():
    windows = torch.randint(0, 97, (5, 33))
    model = ConstantLogits(97)
    result = perplexity(model, windows, batch_size=2)
    assert result["perplexity"] == pytest.approx(97, rel=1e-6)
    assert result["nll"] == pytest.approx(math.log(97), rel=1e-7)
    assert result["tokens"] == 5 * 32 and result["windows"] == 5 and result["seqlen"] == 33
    assert set(model.seen_use_cache) == {False}


def test_fixed_distribution_gives_exp_of_mean_surprisal():
    # Closed form for a context-free model: ppl = exp(mean over predicted tokens of -log p(token)).
    logits = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    windows = torch.tensor([[0, 0, 1, 2], [3, 1, 1, 0]])  # predicted: 0 1 2 | 1 1 0 (first of each window not)
    expected = math.exp((1 + 2 + 3 + 2 + 2 + 1) / 6 * math.log(2))
    assert perplexity(ConstantLogits(4, logits), windows)["perplexity"] == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def tiny_opt():
    return build_tiny_model("opt", TinyDims(vocab_size=211, hidden=32, layers=2, heads=2, ffn=64, max_positions=64),
                            seed=3)


def test_matches_a_manual_loop_and_ignores_batch_size(tiny_opt):
    windows = torch.randint(0, 211, (7, 40), generator=torch.Generator().manual_seed(0))
    total = 0.0
    with torch.no_grad():
        for row in windows:
            logits = tiny_opt(input_ids=row[None]).logits[0]
            total += F.cross_entropy(logits[:-1], row[1:], reduction="sum").item()
    manual = math.exp(total / (7 * 39))
    for batch_size in (1, 3, 7, 50):
        assert perplexity(tiny_opt, windows, batch_size=batch_size)["perplexity"] == pytest.approx(manual, rel=1e-5)
    assert 150 < manual < 300  # a random init is close to uniform (211), a sign the loop scored real logits


def test_a_window_is_scored_without_context_from_the_previous_one(tiny_opt):
    windows = torch.randint(0, 211, (2, 20), generator=torch.Generator().manual_seed(1))
    joint = perplexity(tiny_opt, windows)["nll"]
    separate = (perplexity(tiny_opt, windows[:1])["nll"] + perplexity(tiny_opt, windows[1:])["nll"]) / 2
    assert joint == pytest.approx(separate, rel=1e-6)


def test_bad_windows_and_too_long_seqlen_are_data_errors(tiny_opt):
    with pytest.raises(DataError, match="exceeds the model's 64 positions"):
        perplexity(tiny_opt, torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(DataError, match="must be"):
        perplexity(tiny_opt, torch.zeros(4, dtype=torch.long))
