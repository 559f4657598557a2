"""The pure helpers of benchmarks/sweep_iobs.py: setting parsing, best-round choice, the per-setting summary, the
choice of the DAG default, and the CSV round trip. No model is run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from iobs.errors import ConfigError, DataError, IobsError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_iobs.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("sweep_iobs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is being executed
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def rows_for(setting: str, sparsity: str, iobs: list[float], ft: list[float], *, model: str = "m", seed: str = "0",
             changes: list[float] | None = None) -> list[dict]:
    """CSV-like rows (strings, as read back) of one setting: valid ppl per round 1..T of both variants."""
    rows = []
    for name, curve in (("iobs", iobs), ("sparsegpt_ft", ft)):
        for r, ppl in enumerate(curve, start=1):
            change = "" if r == 1 else (str(changes[r - 2]) if changes and name == "iobs" else "0.0")
            rows.append({"model": model, "calibration_seed": seed, "sparsity": sparsity, "setting": setting,
                         "variant": name, "round": str(r), "valid_ppl": str(ppl),
                         "mask_changed_since_previous": change})
    return rows


def dense_row(ppl: float, model: str = "m", seed: str = "0") -> dict:
    return {"model": model, "calibration_seed": seed, "sparsity": "", "setting": "", "variant": "dense",
            "round": "0", "valid_ppl": str(ppl), "mask_changed_since_previous": ""}


def test_parse_setting(sweep):
    s = sweep.parse_setting("adam:1e-4:20")
    assert (s.optimizer, s.lr, s.steps) == ("adam", 1e-4, 20)
    assert sweep.parse_setting(s.label) == s  # the label parses back to the same setting
    assert sweep.parse_setting("sgd:0:0").steps == 0  # projection only: the no-step control
    for bad in ("sgd:0.02", "sgd:0.02:20:1", "rmsprop:0.1:5", "sgd:-1:5", "sgd:0.1:-1", "sgd:nan:3", "sgd:x:3"):
        with pytest.raises(ConfigError):
            sweep.parse_setting(bad)


def test_best_round_lowest_earliest_and_nan_last(sweep):
    assert sweep.best_round({1: 50.0, 2: 48.0, 3: 47.5, 4: 49.0}) == (3, 47.5)
    assert sweep.best_round({1: 50.0, 2: 48.0, 3: 48.0}) == (2, 48.0)
    r, ppl = sweep.best_round({1: 60.0, 2: math.nan})
    assert (r, ppl) == (1, 60.0)
    with pytest.raises(IobsError):
        sweep.best_round({})


def test_summarize_fields(sweep):
    rows = [dense_row(40.0)] + rows_for("sgd:0.02:20", "0.7", [60.0, 55.0, 54.0, 56.0], [60.0, 56.0, 55.5, 55.0],
                                        changes=[0.01, 0.004, 0.002])
    (s,) = sweep.summarize(rows)
    assert (s["dense"], s["sparsegpt"]) == (40.0, 60.0)
    assert (s["iobs_round"], s["iobs_best"], s["ft_round"], s["ft_best"]) == (3, 54.0, 4, 55.0)
    assert s["gap"] == pytest.approx(54.0 / 55.0 - 1)
    ratios = [55 / 56 - 1, 54 / 55.5 - 1, 56 / 55 - 1]
    mean = sum(ratios) / 3
    assert s["gap_wiggle"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in ratios) / 2))
    assert s["max_mask_change"] == pytest.approx(0.01)


def test_summarize_needs_both_variants_and_keeps_cells_apart(sweep):
    only_iobs = [r for r in rows_for("sgd:0.02:20", "0.5", [50, 49], [50, 48]) if r["variant"] == "iobs"]
    assert sweep.summarize(only_iobs) == []
    rows = rows_for("a", "0.5", [50, 49], [50, 48]) + rows_for("a", "0.5", [52, 51], [52, 53], seed="1")
    by_seed = {s["calibration_seed"]: s for s in sweep.summarize(rows)}
    assert by_seed["0"]["gap"] > 0 > by_seed["1"]["gap"]  # not pooled across seeds


def test_choose_setting_lowest_relative_score(sweep):
    rows = (rows_for("sgd:0.02:20", "0.5", [50, 49.0], [50, 49.5]) + rows_for("sgd:0.02:20", "0.7", [100, 90], [100, 95])
            + rows_for("sgd:0.05:10", "0.5", [50, 48.0], [50, 49]) + rows_for("sgd:0.05:10", "0.7", [100, 99], [100, 99]))
    chosen, scores = sweep.choose_setting(sweep.summarize(rows))
    # geometric means of I-OBS best / SparseGPT: sqrt(0.98 * 0.9) vs sqrt(0.96 * 0.99)
    assert scores["sgd:0.02:20"] == pytest.approx(math.sqrt(0.98 * 0.90))
    assert scores["sgd:0.05:10"] == pytest.approx(math.sqrt(0.96 * 0.99))
    assert chosen == "sgd:0.02:20"


def test_choose_setting_tie_goes_to_fewer_steps(sweep):
    rows = (rows_for("sgd:0.02:20", "0.7", [100, 90.0], [100, 95]) + rows_for("sgd:0.05:10", "0.7", [100, 90.1], [100, 95]))
    summary = sweep.summarize(rows)
    assert sweep.choose_setting(summary, tolerance=0.002)[0] == "sgd:0.05:10"  # 0.11% worse: a tie, fewer steps
    assert sweep.choose_setting(summary, tolerance=0.0)[0] == "sgd:0.02:20"  # no tie: strictly lowest


def test_choose_setting_ignores_incomplete_settings(sweep):
    rows = (rows_for("sgd:0.02:20", "0.5", [50, 49], [50, 49]) + rows_for("sgd:0.02:20", "0.7", [100, 95], [100, 96])
            + rows_for("adam:0.0001:20", "0.7", [100, 80], [100, 96]))  # best at 0.7, but never run at 0.5
    chosen, scores = sweep.choose_setting(sweep.summarize(rows))
    assert chosen == "sgd:0.02:20" and "adam:0.0001:20" not in scores
    with pytest.raises(IobsError):
        sweep.choose_setting(sweep.summarize(rows_for("a:1:1", "0.5", [50, math.nan], [50, 49])))


def test_csv_round_trip_and_summary_text(sweep, tmp_path):
    rows = [dense_row(40.0)] + rows_for("sgd:0.02:20", "0.7", [60.0, 55.0, 54.0], [60.0, 56.0, 55.5])
    full = [{c: r.get(c, "") for c in sweep.COLUMNS} for r in rows]
    path = tmp_path / "sweep.csv"
    path.write_text(sweep.rows_to_csv(full))
    back = sweep.read_rows([str(path)])
    assert sweep.summarize(back) == sweep.summarize(rows)
    text = sweep.format_summary(sweep.summarize(back))
    assert "sgd:0.02:20" in text and "54.00" in text
    with pytest.raises(DataError):
        sweep.read_rows([str(tmp_path / "missing.csv")])
