"""Calibration and evaluation windows: shapes, reproducibility, inside the stream, per-round batches."""

import pytest
import torch

from iobs.data.windows import calibration_batch, document_windows, eval_windows, random_windows, round_seed
from iobs.errors import DataError


@pytest.fixture
def stream():
    return torch.arange(1000, 11000, dtype=torch.int32)  # distinct values: a window's start is readable off it


def test_calibration_shape_reproducible_and_inside_stream(stream):
    windows = calibration_batch(stream, 16, 64, seed=0)
    assert windows.shape == (16, 64) and windows.dtype == torch.int64
    assert torch.equal(windows, calibration_batch(stream, 16, 64, seed=0))
    starts = windows[:, 0] - 1000
    assert bool((starts >= 0).all() and (starts + 64 <= stream.numel()).all())
    expected = torch.stack([stream[s:s + 64].long() for s in starts.tolist()])
    assert torch.equal(windows, expected)  # contiguous slices of the stream
    assert not torch.equal(windows, calibration_batch(stream, 16, 64, seed=1))


def test_round_batches_are_fresh_and_round_zero_is_the_calibration_set(stream):
    assert round_seed(7, 0) == 7
    seeds = {round_seed(7, r) for r in range(1, 50)}
    assert len(seeds) == 49 and 7 not in seeds
    assert torch.equal(calibration_batch(stream, 8, 32, seed=7, round_index=0), random_windows(stream, 8, 32, 7))
    first, second = (calibration_batch(stream, 8, 32, seed=7, round_index=r) for r in (1, 2))
    assert not torch.equal(first, second)
    assert torch.equal(second, calibration_batch(stream, 8, 32, seed=7, round_index=2))


def test_whole_stream_window_and_too_short_stream():
    tiny = torch.arange(10)
    assert torch.equal(random_windows(tiny, 3, 10, 0), tiny.repeat(3, 1))
    with pytest.raises(DataError, match="fewer than one window"):
        random_windows(tiny, 1, 11, 0)


def test_eval_windows_are_consecutive_and_capped(stream):
    windows = eval_windows(stream, 300)
    assert windows.shape == (33, 300)  # 10000 // 300, tail of 100 dropped
    assert torch.equal(windows.flatten(), stream[:9900].long())
    capped = eval_windows(stream, 300, max_windows=5)
    assert capped.shape == (5, 300)
    starts = ((capped[:, 0] - 1000) // 300).tolist()
    assert starts == [0, 6, 13, 19, 26]  # i * 33 // 5: spread over the stream, not its first 5 windows
    assert all(torch.equal(capped[i], windows[s]) for i, s in enumerate(starts))
    assert eval_windows(stream, 300, max_windows=500).shape == (33, 300)
    with pytest.raises(DataError, match="fewer than one window"):
        eval_windows(stream[:10], 300)
    with pytest.raises(DataError, match="at least 2"):
        eval_windows(stream, 1)


def test_document_windows_come_from_long_enough_documents():
    # the last document has exactly 30 tokens: not longer than 30, so never used
    documents = ["short", "x" * 5, "abcdefghijklmnopqrstuvwxyz" * 3, "0123456789" * 3]
    encode = lambda text: [ord(c) for c in text]  # noqa: E731
    windows = document_windows(documents, encode, 20, 30, seed=0)
    assert windows.shape == (20, 30)
    texts = ["".join(map(chr, row)) for row in windows.tolist()]
    assert all(t in documents[2] for t in texts)  # only the document with more than 30 tokens qualifies
    assert torch.equal(windows, document_windows(documents, encode, 20, 30, seed=0))
    assert len(set(texts)) > 1  # random starts
    with pytest.raises(DataError, match="no document longer"):
        document_windows(documents, encode, 1, 100, seed=0, max_draws=50)
