"""The job runner: provenance beside outputs, one-line errors, no partial artifacts."""

import json
import types

import pytest

from iobs.errors import DataError
from iobs.pipeline.runner import JobContext, run_from_snakemake, run_job


def write_answer(ctx: JobContext):
    ctx.out("result").write_text(str(ctx.params["value"] * 2))
    return {"answer": ctx.params["value"] * 2}


def fail_with_data_error(ctx: JobContext):
    raise DataError("dataset folder /nowhere is missing: set data.path to a local copy")


def test_run_job_writes_provenance(tmp_path):
    ctx = JobContext(name="demo", input={}, params={"value": 21}, seed=7, wildcards={"w": "x"},
                     output={"result": str(tmp_path / "r.txt"), "provenance": str(tmp_path / "provenance.json")})
    run_job(ctx, "tests.test_jobs:write_answer")
    assert (tmp_path / "r.txt").read_text() == "42"
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["params"] == {"value": 21} and record["seed"] == 7 and record["answer"] == 42
    assert record["wildcards"] == {"w": "x"} and record["wall_seconds"] >= 0
    assert record["versions"]["torch"] and record["versions"]["python"]


class _Named(list):
    """Enough of Snakemake's Namedlist for the runner: a list with named items."""

    def __init__(self, **named):
        super().__init__(named.values())
        self._named = named

    def items(self):
        return self._named.items()


def test_snakemake_entry_turns_user_errors_into_one_line(tmp_path, capsys):
    smk = types.SimpleNamespace(
        rule="demo", input=_Named(), output=_Named(provenance=str(tmp_path / "p.json")),
        params=_Named(job="tests.test_jobs:fail_with_data_error"), wildcards=_Named(), threads=1,
        resources=_Named(), log=[str(tmp_path / "demo.log")],
    )
    with pytest.raises(SystemExit) as info:
        run_from_snakemake(smk)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "iobs error in rule demo: dataset folder /nowhere is missing: set data.path to a local copy"
    assert not (tmp_path / "p.json").exists()
    assert "set data.path" in (tmp_path / "demo.log").read_text()


@pytest.mark.parametrize("family", ["opt", "llama", "phi"])
def test_one_shot_jobs_restore_the_dense_weights_between_sparsities(make_tiny_model, family):
    """oneshot_group loads the model once: the copies of the decoder Linears put back after a pruning give the
    dense model exactly, so the next sparsity prunes what a fresh load would give."""
    import torch

    from iobs.prune.driver import prunable_weight_copies, prune_model, restore_weights

    model, fresh = make_tiny_model(family), make_tiny_model(family)
    copies = prunable_weight_copies(model)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    prune_model(model, ids, "sparsegpt", "0.5", progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    restore_weights(model, copies)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
