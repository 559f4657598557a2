"""The per-round job (iobs.pipeline.rounds, iterative.granularity: round) makes the rounds of the library's eager
loop: run one job per round, each from the state, masks and batch files the previous one wrote, and every
round's sparse model, masks, step losses and dynamics are those of run_round called round after round."""

from __future__ import annotations

import json

import pytest
import torch

from iobs.models.load import load_model
from iobs.pipeline.runner import JobContext, run_job
from iobs.prune.save import load_masks, save_pruned_model
from tests.conftest import word_tokenizer
from tests.test_iterative import ROUNDS, STEPS, assert_same_weights, run_rounds, snapshot, with_dropout


@pytest.fixture
def batches(tiny_dims) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [torch.randint(0, tiny_dims.vocab_size, (4, 16), generator=generator) for _ in range(ROUNDS)]


@pytest.mark.parametrize("name", ["iobs", "dense_ft"])
def test_one_job_per_round_makes_the_eager_rounds(make_tiny_model, batches, tmp_path, name):
    results, eager = run_rounds(with_dropout(make_tiny_model("opt")), batches, name)
    dense = tmp_path / "dense"
    save_pruned_model(with_dropout(make_tiny_model("opt")), dense, tokenizer=word_tokenizer(False))
    steps = {"optimizer": STEPS.optimizer, "lr": STEPS.lr, "steps": STEPS.steps, "micro_batch": STEPS.micro_batch,
             "max_grad_norm": STEPS.max_grad_norm}
    for r in range(1, ROUNDS + 1):
        folder = tmp_path / f"round{r}"
        torch.save(batches[r - 1], tmp_path / f"batch{r}.pt")
        inputs = {"windows": str(tmp_path / f"batch{r}.pt")}
        if r == 1:
            inputs["model"] = str(dense)
        else:
            inputs.update(state=str(tmp_path / f"round{r - 1}" / "state"),
                          previous_masks=str(tmp_path / f"round{r - 1}" / "masks.pt"),
                          first_masks=str(tmp_path / "round1" / "masks.pt"))
        outputs = {key: str(folder / key) for key in ("model", "state")}
        outputs.update(masks=str(folder / "masks.pt"), metrics=str(folder / "metrics.json"))
        run_job(JobContext(name="iterative_round", input=inputs, output=outputs,
                           params=dict(variant=name, round=r, solver="sparsegpt", sparsity="0.5", options={},
                                       steps=steps, seed=7, batch_size=1)), "iobs.pipeline.rounds:iterative_round")

        sparse = snapshot(load_model(str(folder / "model"), "float32", "cpu"))
        assert_same_weights(sparse, eager[r - 1])
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["step_losses"] == results[r - 1].step_losses  # this round's own steps, taken after it
        assert metrics["dynamics"] == json.loads(json.dumps(results[r - 1].dynamics))
        masks = load_masks(folder / "masks.pt")
        assert all(torch.equal(masks[n], results[r - 1].masks[n]) for n in masks)

