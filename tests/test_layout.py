"""iobs.pipeline.layout spells the results folder's paths as the rules always did (a finished run stays up to date),
and its inverses give back what the paths encode."""

from __future__ import annotations

import pytest

from iobs.errors import DataError
from iobs.pipeline import layout
from iobs.pipeline.layout import Layout

RESULTS = Layout("results")


def test_round_artifacts_and_their_job_files():
    stem = layout.round_stem("tiny-opt", "iobs", "0.5", 2)
    assert RESULTS.pruned_model("tiny-opt", "iobs", "0.5", 2) == "results/prune/tiny-opt/iobs/0.5/round2/model"
    assert RESULTS.round_masks("tiny-opt", "iobs", "0.5", 2) == "results/prune/tiny-opt/iobs/0.5/round2/masks.pt"
    assert RESULTS.provenance(stem) == "results/prune/tiny-opt/iobs/0.5/round2/provenance.json"
    assert RESULTS.log(stem) == "results/logs/prune/tiny-opt/iobs/0.5/round2.log"
    assert RESULTS.benchmark(stem) == "results/benchmarks/prune/tiny-opt/iobs/0.5/round2.tsv"
    dense_ft = layout.chain_stem("m", "dense_ft")
    assert RESULTS.provenance_beside(dense_ft) == "results/prune/m/dense_ft/chain.provenance.json"
    assert RESULTS.chain_checkpoint("m", "iobs", "2:4") == "results/prune/m/iobs/2:4/chain.partial"


def test_wildcards_pass_through_as_rule_patterns():
    assert (RESULTS.evaluation("{model}", "{method}", "{sparsity}", "{round}")
            == "results/eval/{model}/{method}/{sparsity}/round{round}/perplexity.json")
    assert RESULTS.stream("{tok}", "{source}") == "results/data/streams/{tok}/{source}.pt"


def test_the_evaluated_model_of_each_method():
    dense = "facebook/opt-125m"
    assert RESULTS.evaluated_model("m", "dense", "0", 0, dense) == dense
    assert RESULTS.evaluated_model("m", "dense_ft_dense", "0.5", 1, dense) == dense
    assert (RESULTS.evaluated_model("m", "dense_ft_dense", "0.5", "3", dense)
            == "results/prune/m/dense_ft/0.5/round2/state")
    assert RESULTS.evaluated_model("m", "sparsegpt", "2:4", 0, dense) == "results/prune/m/sparsegpt/2:4/round0/model"
    assert RESULTS.inside("results/prune/m/sparsegpt/2:4/round0/model") and not RESULTS.inside(dense)


def test_names_and_their_inverses():
    assert layout.source_slug({"kind": "stdlib", "split": "train"}) == "stdlib-train"
    assert layout.source_slug({"kind": "c4", "split": "validation", "documents": 5}).startswith("c4-validation-")
    assert layout.parse_calibration_label(layout.calibration_label("bpe", True)) == ("bpe", True)
    assert layout.parse_calibration_label("smollm2") == ("smollm2", False)
    assert [layout.batch_index(r, "fresh") for r in (1, 2, 3)] == [0, 1, 2]
    assert [layout.batch_index(r, "fixed") for r in (1, 2, 3)] == [0, 0, 0]
    path = RESULTS.prune_metrics("tiny-opt", "sparsegpt_ft", "2:4", 3)
    assert layout.round_key(path) == ("tiny-opt", "sparsegpt_ft", "2:4", 3)
    assert layout.by_round_key([path]) == {("tiny-opt", "sparsegpt_ft", "2:4", 3): path}
    with pytest.raises(DataError, match="is not a file of a round folder"):
        layout.round_key("results/tables/pruning.csv")


def test_notebook_inputs():
    synthetic = {"experiments": {"g": {"algorithms": ["kiht", "iobs"]}}, "rates": {"algorithms": ["iobs"]}}
    assert RESULTS.synthetic_runs(synthetic) == ["results/synthetic/g/kiht/trajectories.npz",
                                                 "results/synthetic/g/iobs/trajectories.npz"]
    assert RESULTS.synthetic_rate_runs(synthetic) == ["results/synthetic-rates/iobs/trajectories.npz"]
    assert RESULTS.round_metrics(["m"], ["iobs"], ["0.5"], 2) == ["results/prune/m/iobs/0.5/round1/metrics.json",
                                                                  "results/prune/m/iobs/0.5/round2/metrics.json"]
