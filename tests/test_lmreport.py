"""Language-model tables, figures and mask dynamics (iobs.report) on small hand-made frames and metrics JSONs."""

import json
import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from iobs.errors import DataError
from iobs.pipeline.layout import by_round_key
from iobs.report import figures
from iobs.report.figures import LABELS
from iobs.report.dynamics import DYNAMICS_COLUMNS, dynamics_table
from iobs.report.frames import Perplexities, best_rounds, check_frame, load_pruning, selection_set, sparsity_label
from iobs.report.records import PRUNING_COLUMNS
from iobs.report.tables import (CONTROLS_COLUMNS, LLM_COLUMNS, METHODS_COLUMNS, SUMMARY_COLUMNS, controls_summary,
                                controls_table, llm_table, methods_table, reselection_share, share_explained,
                                share_sentence, summary_markdown, summary_table)
from iobs.report.versus import VERSUS_COLUMNS, model_family, paper_vs_run

# Per split, perplexity of rounds 1..5. The valid curve bottoms out at round 3, the test curve at round 4: a
# selection that peeked at test would report round 4.
IOBS = {"valid": [54.0, 53.0, 52.5, 53.5, 54.0], "test": [55.0, 54.0, 53.6, 53.0, 56.0]}
SPARSEGPT_FT = {"valid": [54.0, 53.8, 53.6, 53.4, 53.2], "test": [55.0, 54.9, 54.8, 54.7, 54.6]}
DENSE_FT = {"valid": [54.5, 54.0, 53.9, 54.2, 54.4], "test": [55.5, 55.0, 54.9, 55.2, 55.4]}
DENSE_FT_DENSE = {"valid": [50.0, 49.5, 49.0, 48.8, 48.7], "test": [51.0, 50.5, 50.0, 49.8, 49.7]}
ONESHOT = {"magnitude": 70.0, "wanda": 60.0, "sparsegpt": 55.0, "obc": 54.8}


def _rows(model, method, sparsity, rounds, values, eval_set="stdlib"):
    """values: {split: [per round]}, or one number for every round (valid; test is one point higher)."""
    return [{"model": model, "method": method, "sparsity": sparsity, "round": r, "eval_set": eval_set,
             "split": split, "perplexity": v + (1.0 if split == "test" and not isinstance(values, dict) else 0.0),
             "seconds": 1.0, "eval_tokens": 1000, "eval_seconds": 0.5}
            for split in ("valid", "test")
            for r, v in zip(rounds, values[split] if isinstance(values, dict) else [values] * len(rounds))]


def fake_frame(models=("tiny-opt", "tiny-phi"), shift=0.0) -> pd.DataFrame:
    rows = []
    for i, model in enumerate(models):
        offset = shift + i  # the second model is one point worse everywhere

        def add(curve, offset=offset):
            return {split: [v + offset for v in values] for split, values in curve.items()}

        rows += _rows(model, "dense", "0", [0], 50.0 + offset)
        for sparsity, extra in (("0.5", 0.0), ("0.7", 5.0), ("2:4", 8.0)):
            for method, value in ONESHOT.items():
                rows += _rows(model, method, sparsity, [0], value + offset + extra)
        for variant, curve in (("iobs", IOBS), ("sparsegpt_ft", SPARSEGPT_FT), ("dense_ft", DENSE_FT),
                               ("dense_ft_dense", DENSE_FT_DENSE)):
            rows += _rows(model, variant, "0.5", range(1, 6), add(curve))
    # an eval set with a test split only (like raw WikiText2): it must never be used to choose rounds
    rows += [{**row, "eval_set": "wikitext2", "perplexity": row["perplexity"] * (1 if row["round"] != 5 else 0.5)}
             for row in rows if row["split"] == "test"]
    return pd.DataFrame(rows, columns=PRUNING_COLUMNS)


@pytest.fixture
def frame():
    return check_frame(fake_frame())


@pytest.fixture
def ppl(frame):
    return Perplexities(frame, best_rounds(frame, selection_set(frame, ["wikitext2", "stdlib"])))


# ---- best round ------------------------------------------------------------------------------------------------

def test_best_round_is_chosen_on_valid_not_test(frame):
    select_on = selection_set(frame, ["wikitext2", "stdlib"])
    assert select_on == "stdlib"  # wikitext2 comes first in the config order but has no valid split
    best = best_rounds(frame, select_on)
    iobs = best[(best["model"] == "tiny-opt") & (best["method"] == "iobs")].iloc[0]
    assert iobs["round"] == 3 and iobs["valid_perplexity"] == 52.5  # test would pick round 4, wikitext2 round 5
    rounds = dict(zip(best["method"], best["round"]))
    assert rounds == {"dense_ft": 3, "iobs": 3, "sparsegpt_ft": 5}
    assert "dense_ft_dense" not in set(best["method"])  # the dense reference follows dense_ft's round


def test_best_round_ties_go_to_the_earliest_round_and_nan_never_wins():
    rows = _rows("m", "iobs", "0.5", [1, 2, 3], {"valid": [math.nan, 52.0, 52.0], "test": [1.0, 2.0, 3.0]})
    best = best_rounds(check_frame(pd.DataFrame(rows, columns=PRUNING_COLUMNS)), "stdlib")
    assert best["round"].tolist() == [2]


def test_best_round_without_a_valid_split_is_a_data_error(frame):
    test_only = frame[frame["split"] == "test"]
    assert selection_set(test_only) is None
    with pytest.raises(DataError, match="valid"):
        best_rounds(test_only, None)


def test_load_pruning_keeps_sparsity_text_and_rejects_bad_files(tmp_path, frame):
    path = tmp_path / "pruning.csv"
    frame[frame["sparsity"] != "2:4"].to_csv(path, index=False)  # without 2:4, pandas would read floats
    loaded = load_pruning(path)
    assert set(loaded["sparsity"]) == {"0", "0.5", "0.7"}
    frame.drop(columns="perplexity").to_csv(path, index=False)
    with pytest.raises(DataError, match="perplexity"):
        load_pruning(path)
    pd.concat([frame, frame.head(1)]).to_csv(path, index=False)
    with pytest.raises(DataError, match="more than one row"):
        load_pruning(path)


def test_sparsity_labels_are_file_safe():
    assert sparsity_label("2:4") == "2-4" and sparsity_label("0.5") == "0.5"


# ---- tables ----------------------------------------------------------------------------------------------------

def test_llm_table_reports_test_at_the_valid_round(frame, ppl):
    table = llm_table(frame, ppl, preferred_sets=["stdlib"])
    assert list(table.columns) == LLM_COLUMNS
    row = table[(table["model"] == "tiny-opt") & (table["eval_set"] == "stdlib")].iloc[0]
    assert (row["dense"], row["sparsegpt"], row["iobs_3"]) == (51.0, 56.0, 53.6)
    assert row["iobs_best_round"] == 3 and row["iobs_best"] == 53.6  # not the test minimum 53.0 of round 4
    assert table["eval_set"].tolist()[:2] == ["stdlib", "wikitext2"]
    assert len(table) == 4  # 2 models x 2 eval sets x one I-OBS sparsity


def test_tables_without_rounds_are_empty_with_their_columns(frame):
    oneshot = frame[frame["round"] == 0]
    ppl = Perplexities(oneshot, best_rounds(oneshot, selection_set(oneshot)))
    assert list(llm_table(oneshot, ppl).columns) == LLM_COLUMNS and llm_table(oneshot, ppl).empty
    controls = controls_table(oneshot, ppl)
    assert list(controls.columns) == CONTROLS_COLUMNS and controls.empty
    assert "No I-OBS rounds were evaluated" in controls_summary(controls, "stdlib")
    methods = methods_table(oneshot, ppl)
    assert len(methods) == 2 * 2 * 3 and methods["iobs_best"].isna().all()
    assert list(dynamics_table({}).columns) == DYNAMICS_COLUMNS


def test_sparsegpt_falls_back_to_round_one_of_iobs(frame):
    without = frame[frame["method"] != "sparsegpt"]
    ppl = Perplexities(without, best_rounds(without, "stdlib"))
    assert ppl.sparsegpt("tiny-opt", "0.5", "stdlib", "test") == IOBS["test"][0]


def test_methods_table_columns_and_values(frame, ppl):
    table = methods_table(frame, ppl, preferred_sets=["stdlib"])
    assert list(table.columns) == METHODS_COLUMNS
    opt = table[(table["model"] == "tiny-opt") & (table["eval_set"] == "stdlib")]
    assert opt["sparsity"].tolist() == ["0.5", "0.7", "2:4"]
    assert opt["magnitude"].tolist() == [71.0, 76.0, 79.0]
    assert opt["iobs_best"].iloc[0] == 53.6 and opt["iobs_best"].iloc[1:].isna().all()


def test_summary_table_puts_one_shot_beside_iobs_and_its_controls(frame, ppl):
    table = summary_table(frame, ppl, preferred_sets=["stdlib"])
    assert list(table.columns) == SUMMARY_COLUMNS
    opt = table[(table["model"] == "tiny-opt") & (table["eval_set"] == "stdlib")].set_index("sparsity")
    half = opt.loc["0.5"]
    # one-shot test = valid + 1; masked ft at its valid-best round 5; dense + ft at I-OBS's round 3; I-OBS(3) = best
    assert (half["dense"], half["magnitude"], half["sparsegpt"]) == (51.0, 71.0, 56.0)
    assert (half["sparsegpt_ft"], half["dense_ft_dense"], half["iobs_3"], half["iobs_best"]) == (54.6, 50.0, 53.6, 53.6)
    assert half["share_explained_by_sparsegpt_ft"] == pytest.approx((56.0 - 54.6) / (56.0 - 53.6))
    assert opt.loc[["0.7", "2:4"], ["sparsegpt_ft", "iobs_3", "iobs_best"]].isna().all().all()

    text = summary_markdown(table[table["eval_set"] == "stdlib"])
    header = text.splitlines()[0]
    for name in ("dense", "magnitude", "Wanda", "SparseGPT", "SparseGPT + masked ft", "dense + ft", "I-OBS(3)",
                 "I-OBS(best)"):
        assert f"| {name} |" in header
    assert "| tiny-opt | stdlib | 0.5 | 51.00 |" in text and "| 58% |" in text
    assert text.count("\n") == 2 + 2 * 3  # header, rule, 2 models x 3 sparsities
    assert "| - |" in text.splitlines()[3]  # 0.7: no I-OBS there


def test_controls_table_gaps_and_share(frame, ppl):
    table = controls_table(frame, ppl, preferred_sets=["stdlib"])
    assert list(table.columns) == CONTROLS_COLUMNS
    row = table[(table["model"] == "tiny-opt") & (table["eval_set"] == "stdlib")].iloc[0]
    # dense 51, SparseGPT 56 (gap 5); masked ft round 5: 54.6; I-OBS round 3: 53.6; dense ft round 3: 54.9,
    # whose dense reference at round 3 is 50.0
    assert (row["sparsegpt_ft_round"], row["iobs_round"], row["dense_ft_round"]) == (5, 3, 3)
    assert row["dense_ft_dense"] == 50.0 and row["gap"] == 5.0
    assert row["gap_closed_iobs"] == pytest.approx(2.4 / 5)
    assert row["gap_closed_sparsegpt_ft"] == pytest.approx(1.4 / 5)
    assert row["gap_closed_dense_ft_dense"] == pytest.approx(6.0 / 5)  # beyond the original dense model
    assert row["share_explained_by_sparsegpt_ft"] == pytest.approx(1.4 / 2.4)


def test_dense_reference_follows_the_iobs_round_not_dense_ft(frame):
    """dense + ft is the dense model after as many step blocks as the I-OBS round shown took, whichever round
    fine-tune-then-prune (dense_ft) does best at (at high sparsity its best is often round 1, no steps at all)."""
    dense_ft_round_five = (frame["method"] == "dense_ft") & (frame["round"] == 5) & (frame["split"] == "valid")
    frame = frame.assign(perplexity=frame["perplexity"].where(~dense_ft_round_five, 40.0))
    ppl = Perplexities(frame, best_rounds(frame, "stdlib"))
    row = controls_table(frame, ppl, preferred_sets=["stdlib"]).iloc[0]
    assert (row["dense_ft_round"], row["iobs_round"]) == (5, 3)
    assert row["dense_ft_dense"] == ppl.get(row["model"], "dense_ft_dense", "0.5", 3, "stdlib", "test")
    assert row["dense_ft_dense"] != ppl.get(row["model"], "dense_ft_dense", "0.5", 5, "stdlib", "test")


def test_no_share_when_iobs_best_round_is_sparsegpt_itself(frame):
    round_one = (frame["method"] == "iobs") & (frame["round"] == 1) & (frame["split"] == "valid")
    frame = frame.assign(perplexity=frame["perplexity"].where(~round_one, 40.0))
    ppl = Perplexities(frame, best_rounds(frame, "stdlib"))
    controls = controls_table(frame, ppl, preferred_sets=["stdlib"])
    assert (controls["iobs_round"] == 1).all() and controls["share_explained_by_sparsegpt_ft"].isna().all()
    sentence = share_sentence(controls, "tiny-opt")
    assert "best validation round is round 1, one-shot SparseGPT itself" in sentence and "%" not in sentence


def test_share_explained_on_hand_made_numbers():
    assert share_explained(54.0, 53.5, 53.0) == pytest.approx(0.5)
    assert share_explained(54.0, 52.0, 53.0) == pytest.approx(2.0)  # the control beats I-OBS
    assert math.isnan(share_explained(54.0, 53.0, 54.0))  # no gain
    assert math.isnan(share_explained(54.0, 53.0, 55.0))


def _controls(rows):
    base = {"eval_set": "stdlib", "split": "test", "sparsegpt_ft_round": 5, "iobs_round": 3}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_share_sentence_when_iobs_gains():
    controls = _controls([{"model": "m", "sparsity": "0.5", "sparsegpt": 54.0, "sparsegpt_ft": 53.5, "iobs": 53.0}])
    sentence = share_sentence(controls, "m")
    assert sentence.startswith("m: at sparsity 0.5 (stdlib test)")
    assert "explains 50% of I-OBS's gain" in sentence and "from 54.00 to 53.00" in sentence
    assert "reaches 53.50" in sentence and sentence.endswith(".")


def test_share_sentence_when_iobs_does_not_gain_and_per_sparsity():
    controls = _controls([{"model": "m", "sparsity": "0.5", "sparsegpt": 54.0, "sparsegpt_ft": 53.0, "iobs": 54.2},
                          {"model": "m", "sparsity": "0.7", "sparsegpt": 60.0, "sparsegpt_ft": 59.0, "iobs": 58.0},
                          {"model": "other", "sparsity": "0.5", "sparsegpt": 1.0, "sparsegpt_ft": 1.0, "iobs": 1.0}])
    sentence = share_sentence(controls, "m")
    first, second = sentence.split("; ")
    assert "does not improve on one-shot SparseGPT (54.20 vs 54.00)" in first and "%" not in first
    assert "explains 50%" in second and "other" not in sentence
    summary = controls_summary(controls, "stdlib")
    assert summary.count("\n- ") == 2 and "`stdlib`" in summary


def test_share_sentence_when_the_control_beats_iobs_or_hurts():
    controls = _controls([{"model": "m", "sparsity": "0.5", "sparsegpt": 54.0, "sparsegpt_ft": 52.0, "iobs": 53.0},
                          {"model": "m", "sparsity": "0.7", "sparsegpt": 54.0, "sparsegpt_ft": 55.0, "iobs": 53.0}])
    better, worse = share_sentence(controls, "m").split("; ")
    assert "explains all of I-OBS's gain (share 200%)" in better
    assert "explains none of I-OBS's gain (share -100%)" in worse


def test_share_sentence_without_the_control():
    controls = _controls([{"model": "m", "sparsity": "0.5", "sparsegpt": 54.0, "sparsegpt_ft": math.nan,
                           "iobs": 53.0}])
    assert "no masked-fine-tuning control was evaluated" in share_sentence(controls, "m")


# ---- paper vs run ----------------------------------------------------------------------------------------------

SETTINGS = {
    "models": {"tiny-opt": {"family": "opt"}, "tiny-phi": {"family": "phi"}},
    "eval": {"seqlen": 256, "max_windows": 64, "sets": {"stdlib": {"valid": {"kind": "stdlib", "split": "valid"},
                                                                   "test": {"kind": "stdlib", "split": "test"}}}},
    "calibration": {"num_windows": 64, "length": 256, "source": {"kind": "stdlib", "split": "train"}},
}


def test_paper_vs_run_names_the_settings_that_differ(frame, ppl):
    table = paper_vs_run(frame, ppl, SETTINGS, "stdlib")
    assert list(table.columns) == VERSUS_COLUMNS
    opt = table[(table["paper_model"] == "OPT-125M") & (table["dataset"] == "wikitext2")]
    iobs3 = opt[(opt["method"] == "iobs")].iloc[0]
    assert iobs3["paper"] == 25.20 and iobs3["run"] == 53.6 and iobs3["run_model"] == "tiny-opt"
    assert iobs3["differs"] == "model, data, seqlen, calibration"
    assert iobs3["seqlen_paper"] == 2048 and iobs3["seqlen_run"] == 256
    assert "64 x 256 tokens, stdlib train" == iobs3["calibration_run"]
    dense = opt[opt["method"] == "dense"].iloc[0]
    assert dense["differs"] == "model, data, seqlen"  # the dense model saw no calibration data
    llama = table[table["paper_model"] == "Llama-2-7B"]
    assert llama["run"].isna().all() and (llama["differs"] == "no llama-family model in this run").all()
    assert (llama["seqlen_paper"] == 4096).all()
    with_llama = paper_vs_run(frame, ppl, {**SETTINGS, "models": {"l": {"hub": "org/my-llama"}}}, "stdlib")
    rows = with_llama[with_llama["paper_model"] == "Llama-2-7B"].set_index(["method", "sparsity"])
    assert rows.loc[("magnitude", "2:4"), "differs"] == "model, data, seqlen"  # magnitude uses no calibration
    assert rows.loc[("wanda", "2:4"), "differs"] == "model, data, seqlen, calibration"
    assert rows.loc[("wanda", "2:4"), "model_run"] == "l: org/my-llama"


def test_paper_vs_run_same_protocol_differs_in_nothing():
    frame = check_frame(pd.DataFrame(_rows("opt", "dense", "0", [0], 27.0, eval_set="wiki"), columns=PRUNING_COLUMNS))
    settings = {"models": {"opt": {"hub": "facebook/opt-125m"}},
                "eval": {"seqlen": 2048, "max_windows": None, "sets": {"wiki": {"test": {"kind": "wikitext2"}}}},
                "calibration": {"num_windows": 128, "length": 2048, "source": {"kind": "c4", "split": "train"}}}
    table = paper_vs_run(frame, Perplexities(frame), settings, None)
    dense = table[(table["dataset"] == "wikitext2") & (table["method"] == "dense") & (table["paper"] == 27.65)].iloc[0]
    assert dense["differs"] == "" and dense["run"] == 28.0  # test split: value + 1
    c4 = table[table["dataset"] == "c4"].iloc[0]
    assert c4["differs"] == "data" and c4["eval_set"] == "wiki"  # no C4 eval set: WikiText2 stands in


def test_model_family_from_config_or_name():
    assert model_family({"family": "phi"}) == "phi"
    assert model_family({"hub": "meta-llama/Llama-2-7b-hf"}) == "llama"
    assert model_family({"path": "/models/opt-125m"}) == "opt"
    assert model_family({"hub": "gpt2"}) is None


# ---- mask dynamics ---------------------------------------------------------------------------------------------

def _metrics(tmp_path, model, variant, sparsity, round_index, previous, first, per_layer=None, regrowth=None,
             support=False):
    path = tmp_path / "prune" / model / variant / sparsity / f"round{round_index}" / "metrics.json"
    path.parent.mkdir(parents=True)
    dynamics = {}
    if previous is not None:
        per_layer = per_layer or {}
        dynamics = {"changed_since_previous": {"total": previous, "per_layer": per_layer},
                    "changed_since_first": {"total": first, "per_layer": {k: 2 * v for k, v in per_layer.items()}}}
        if regrowth is not None:
            dynamics["regrowth"] = regrowth
        if support:  # the support view: half the mask changes (the rest are kept-but-zero label flips)
            for since in ("previous", "first"):
                change = dynamics[f"changed_since_{since}"]
                dynamics[f"support_changed_since_{since}"] = {
                    "total": change["total"] / 2, "per_layer": {k: v / 2 for k, v in change["per_layer"].items()}}
    path.write_text(json.dumps({"variant": variant, "round": round_index, "sparsity": sparsity, "dynamics": dynamics,
                                "step_losses": [3.0, 2.9], "seconds": {"projection": 1.0, "steps": 2.0}}))
    return path


@pytest.fixture
def metric_paths(tmp_path):
    layers = {"model.layers.0.mlp.fc1": 0.004, "model.layers.0.mlp.fc2": 0.001}
    paths = [_metrics(tmp_path, "tiny-opt", "iobs", "0.5", 1, None, None)]
    paths += [_metrics(tmp_path, "tiny-opt", "iobs", "0.5", r, 0.002 / r, 0.002 * r, layers,
                       {"regrown": 10 * r, "ratio_mean": 0.9, "ratio_median": None}, support=True) for r in (2, 3)]
    paths += [_metrics(tmp_path, "tiny-opt", "sparsegpt_ft", "0.5", r, 0.0, 0.0) for r in (2, 3)]
    paths += [_metrics(tmp_path, "tiny-phi", "dense_ft", "2:4", 2, 0.01, 0.01)]
    return paths


def test_dynamics_table_from_metrics(metric_paths):
    table = dynamics_table(by_round_key(reversed(metric_paths)))
    assert list(table.columns) == DYNAMICS_COLUMNS
    total = table[table["layer"] == "total"]
    assert len(total) == 5  # round 1 has no dynamics
    iobs = total[total["variant"] == "iobs"]
    assert iobs["round"].tolist() == [2, 3]
    assert iobs["changed_since_previous"].tolist() == pytest.approx([0.001, 0.002 / 3])
    assert iobs["changed_since_first"].tolist() == pytest.approx([0.004, 0.006])
    assert iobs["support_changed_since_previous"].tolist() == pytest.approx([0.0005, 0.001 / 3])
    assert iobs["support_changed_since_first"].tolist() == pytest.approx([0.002, 0.003])
    assert total[total["variant"] != "iobs"]["support_changed_since_previous"].isna().all()  # older files: none
    assert iobs["regrown"].tolist() == [20, 30] and iobs["regrowth_ratio_median"].isna().all()
    layers = table[(table["variant"] == "iobs") & (table["round"] == 2) & (table["layer"] != "total")]
    assert dict(zip(layers["layer"], layers["changed_since_first"])) == {"model.layers.0.mlp.fc1": 0.008,
                                                                         "model.layers.0.mlp.fc2": 0.002}
    assert dict(zip(layers["layer"], layers["support_changed_since_first"])) == {"model.layers.0.mlp.fc1": 0.004,
                                                                                 "model.layers.0.mlp.fc2": 0.001}
    assert table.iloc[0]["layer"] == "total"  # the whole-model row leads each round
    assert set(table["sparsity"]) == {"0.5", "2:4"}


def test_dynamics_table_rejects_a_misplaced_file(tmp_path):
    path = _metrics(tmp_path, "m", "iobs", "0.5", 2, 0.1, 0.1)
    wrong = tmp_path / "prune" / "m" / "iobs" / "0.5" / "round3" / "metrics.json"
    wrong.parent.mkdir(parents=True)
    wrong.write_text(path.read_text())
    with pytest.raises(DataError, match="not what its path says"):
        dynamics_table(by_round_key([wrong]))


# ---- figures ---------------------------------------------------------------------------------------------------

def test_figures_render(frame, ppl, metric_paths, tmp_path):
    methods = methods_table(frame, ppl, preferred_sets=["stdlib"])
    drawn = {
        "rounds": figures.plot_rounds(frame, ppl, "0.5", "stdlib", ["stdlib"]),
        "methods": figures.plot_methods(methods),
        "dynamics": figures.plot_mask_dynamics(dynamics_table(by_round_key(metric_paths))),
    }
    rounds_axes = drawn["rounds"].axes
    assert len(rounds_axes) == 2 * 3  # 2 models x (stdlib valid, stdlib test, wikitext2 test)
    first = rounds_axes[0]
    stars = [line for line in first.get_lines() if line.get_marker() == "*"]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in stars][0] == (3, 52.5)
    iobs_lines = [line for line in drawn["dynamics"].axes[0].get_lines() if line.get_label() == LABELS["iobs"]]
    assert iobs_lines[0].get_ydata().tolist() == pytest.approx([0.0005, 0.001 / 3])  # the support, when known
    for name, fig in drawn.items():
        path = figures.save_figure(fig, tmp_path / f"{name}.png")
        assert path.stat().st_size > 10_000
    assert not plt.get_fignums()  # save_figure closed them


def test_mask_reselection_share_from_the_fixed_mask_variant(frame):
    """iobs_fixed_mask rows 0.5 above I-OBS everywhere: of I-OBS's 1.0 edge over masked fine-tuning (54.6 vs 53.6),
    half is owed to reselecting the mask."""
    def controls_of(rows):
        return controls_table(rows, Perplexities(rows, best_rounds(rows, "stdlib")), preferred_sets=["stdlib"])

    without = controls_of(frame)
    fixed = frame[frame["method"] == "iobs"].assign(method="iobs_fixed_mask")
    controls = controls_of(pd.concat([frame, fixed.assign(perplexity=fixed["perplexity"] + 0.5)], ignore_index=True))
    row = controls[(controls["model"] == "tiny-opt") & (controls["eval_set"] == "stdlib")].iloc[0]
    assert row["iobs_fixed_mask_round"] == 3 and row["iobs_fixed_mask"] == pytest.approx(54.1)
    assert row["share_from_mask_reselection"] == pytest.approx(0.5)
    assert "reselecting the mask accounts for 50%" in share_sentence(controls, "tiny-opt")
    better = controls_of(pd.concat([frame, fixed.assign(perplexity=fixed["perplexity"] - 0.5)], ignore_index=True))
    assert "better than I-OBS itself, so reselecting the mask contributes nothing" in share_sentence(better, "tiny-opt")
    assert without["iobs_fixed_mask"].isna().all() and without["share_from_mask_reselection"].isna().all()
    assert "reselecting" not in share_sentence(without, "tiny-opt")


def test_reselection_share_on_hand_made_numbers():
    assert reselection_share(54.0, 53.0, 53.0) == 0.0  # the fixed mask does as well: nothing owed to the mask
    assert reselection_share(54.0, 54.0, 53.0) == pytest.approx(1.0)
    assert math.isnan(reselection_share(53.0, 53.5, 53.0))  # no edge over masked fine-tuning


def test_readme_smollm2_table_has_the_summary_tables_columns(frame, ppl):
    """The README's SmolLM2 table is summary_markdown's output: same header, the issue's columns (OBC not run)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    rows = [line for line in readme if line.startswith("| smollm2-135m-q4_1 |")]
    header = readme[readme.index(rows[0]) - 2]
    table = summary_table(frame, ppl, preferred_sets=["stdlib"]).assign(obc=math.nan)
    assert header == summary_markdown(table).splitlines()[0]
    for name in ("dense", "magnitude", "Wanda", "SparseGPT", "SparseGPT + masked ft", "dense + ft", "I-OBS(3)",
                 "I-OBS(best)"):
        assert f"| {name} |" in header
    reported = {(cells[1], cells[2]) for cells in (line.split(" | ") for line in rows)}
    assert reported == {(s, p) for s in ("wikitext2", "stdlib") for p in ("0.5", "2:4", "0.7")}
