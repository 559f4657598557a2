"""Tiny-model pretraining: loss goes down, runs are reproducible, the schedule and caps behave, saving round-trips."""

import math

import pytest
import torch

from iobs.errors import IobsError
from iobs.models.families import TinyDims
from iobs.models.pretrain import DEFAULT_DIMS, TrainSettings, dims_for, learning_rate, pretrain

DIMS = TinyDims(vocab_size=50, hidden=32, layers=1, heads=2, ffn=64, max_positions=64)
FAST = TrainSettings(steps=30, seq_len=32, batch=8, lr=1e-2, warmup_steps=3, log_every=5)


def _patterned_stream(length=6000, seed=0):
    """A learnable stream: 40% random tokens, else a deterministic successor (t -> 3t + 1 mod 50)."""
    g = torch.Generator().manual_seed(seed)
    out = [0]
    for _ in range(length - 1):
        out.append(int(torch.randint(0, 50, (1,), generator=g)) if torch.rand(1, generator=g) < 0.4
                   else (3 * out[-1] + 1) % 50)
    return torch.tensor(out, dtype=torch.int32)


@pytest.fixture(scope="module")
def streams():
    return _patterned_stream(), _patterned_stream(2000, seed=1)


@pytest.mark.parametrize("family", ["opt", "llama", "phi"])
def test_short_run_lowers_the_loss_below_uniform(family, streams):
    train, valid = streams
    model, metrics = pretrain(family, DIMS, train, FAST, valid, valid_max_windows=20)
    curve = [point["loss"] for point in metrics["loss_curve"]]
    assert curve[0] > curve[-1] + 0.5
    assert metrics["valid"]["perplexity"] < 0.6 * metrics["uniform_perplexity"] == 30
    assert metrics["steps"] == 30 and not model.training
    assert metrics["tokens_seen"] == 30 * 8 * 32


def test_same_seed_same_weights_other_seed_other_weights(streams):
    train, _ = streams
    settings = TrainSettings(steps=4, seq_len=16, batch=4)
    first, _ = pretrain("opt", DIMS, train, settings)
    again, _ = pretrain("opt", DIMS, train, settings)
    other, _ = pretrain("opt", DIMS, train, TrainSettings(steps=4, seq_len=16, batch=4, seed=1))
    a, b, c = (dict(m.named_parameters()) for m in (first, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_schedule_warms_up_then_decays_to_the_floor():
    s = TrainSettings(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [learning_rate(step, s) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[9:], lrs[10:]))
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(100, s) == pytest.approx(0.1)


def test_run_length_is_the_step_count_alone(streams):
    train, _ = streams
    _, metrics = pretrain("opt", DIMS, train, TrainSettings(steps=3, seq_len=16, batch=2))
    assert metrics["steps"] == 3 and "stopped_by" not in metrics
    assert "seconds_cap" not in TrainSettings.__dataclass_fields__


def test_bad_inputs_are_iobs_errors(streams):
    train, _ = streams
    with pytest.raises(IobsError, match="exceeds max_positions"):
        pretrain("opt", DIMS, train, TrainSettings(seq_len=128))
    with pytest.raises(IobsError, match="vocab_size"):
        pretrain("opt", TinyDims(vocab_size=10, hidden=32, layers=1, heads=2, ffn=64), train, FAST)
    with pytest.raises(IobsError, match="unknown model dims"):
        dims_for("opt", 100, {"width": 3})
    with pytest.raises(IobsError, match="unknown model family"):
        dims_for("gpt5", 100)


def test_default_dims_take_the_tokenizer_vocab():
    for family in DEFAULT_DIMS:
        dims = dims_for(family, 4096, {"layers": 2})
        assert dims.vocab_size == 4096 and dims.layers == 2 and dims.hidden == DEFAULT_DIMS[family].hidden
