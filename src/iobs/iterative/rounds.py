"""One I-OBS round, and the two controls that share its code (the I-OBS paper, arXiv 2408.17163).

A round r takes the state left by round r-1 (the dense model at r = 1) and this round's calibration batch X_r:
  1. projection: prune the state layer by layer onto the sparsity target with the solver (SparseGPT or OBC);
     the result is the round's sparse model, "I-OBS(r)", which is evaluated;
  2. gradient steps on the calibration LM loss with X_r; the stepped weights are the state for round r+1.
Round 1's projection of the dense model with the base calibration batch is exactly one-shot SparseGPT.

The controls differ only in their Schedule (iobs.registry), so they use the same batches, optimizer and step counts:
  sparsegpt_ft: project once (round 1), then masked steps; round r's model = SparseGPT + (r-1) blocks of masked
                fine-tuning.
  dense_ft:     steps on the unpruned model; round r's model = one-shot projection of the dense model after r-1
                blocks of steps (and the dense state itself is the matching dense reference).
  iobs_fixed_mask: I-OBS whose projections after round 1 keep round 1's mask (the solver only corrects the kept
                weights): against iobs it isolates the mask reselection, against sparsegpt_ft the unmasked steps
                followed by a Hessian-aware correction.
"""

from __future__ import annotations

import copy
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from iobs import registry
from iobs.errors import ConfigError
from iobs.iterative.dynamics import changed_fraction, regrowth
from iobs.iterative.steps import StepConfig, gradient_steps, micro_batches_per_step
from iobs.prune.driver import PruneReport, prune_model
from iobs.registry import Schedule


@dataclass
class RoundResult:
    masks: dict[str, torch.Tensor]  # Linear name -> bool [out, in], True = kept
    support: dict[str, torch.Tensor]  # Linear name -> bool [out, in], True = the sparse model's weight is nonzero
    state: nn.Module  # what round r+1 starts from
    step_losses: list[float]
    projection: PruneReport | None
    dynamics: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


@dataclass
class History:
    """The masks and supports of rounds 1 and r-1 that round r needs (all None before round 1)."""
    previous_masks: dict[str, torch.Tensor] | None = None
    first_masks: dict[str, torch.Tensor] | None = None
    previous_support: dict[str, torch.Tensor] | None = None
    first_support: dict[str, torch.Tensor] | None = None

    def after(self, result: RoundResult) -> "History":
        """The history that the next round gets."""
        first = self.first_masks is None
        return History(previous_masks=result.masks, previous_support=result.support,
                       first_masks=result.masks if first else self.first_masks,
                       first_support=result.support if first else self.first_support)

    def as_kwargs(self) -> dict:
        return {"previous_masks": self.previous_masks, "first_masks": self.first_masks,
                "previous_support": self.previous_support, "first_support": self.first_support}


def variant(name: str) -> Schedule:
    """The schedule of a registered variant (iobs.registry)."""
    if name not in registry.VARIANTS:
        raise ConfigError(f"unknown iterative variant '{name}' (choose one of {', '.join(registry.VARIANTS)})")
    return registry.VARIANTS[name].schedule


def current_masks(model: nn.Module, names) -> dict[str, torch.Tensor]:
    """Where the named Linears' weights are nonzero: {name: bool [out, in]} on the CPU."""
    modules = dict(model.named_modules())
    return {name: (modules[name].weight != 0).detach().cpu() for name in names}


@contextmanager
def step_progress(sequences: int, steps: StepConfig, round_index: int, progress: bool):
    """A tqdm bar (stderr) over the micro-batches of a round's gradient steps; yields the keyword arguments of
    gradient_steps that move it (none without progress)."""
    if not progress:
        yield {}
        return
    per_step = micro_batches_per_step(sequences, steps)
    bar = tqdm(total=steps.steps * per_step, desc=f"round {round_index} gradient steps", unit="micro-batch",
               file=sys.stderr)

    def on_micro_batch(loss_so_far: float) -> None:
        bar.update()
        if bar.n % per_step == 0:  # a step is complete: its loss is the full-batch loss
            bar.set_postfix(loss=f"{loss_so_far:.4g}", refresh=False)

    try:
        yield {"on_micro_batch": on_micro_batch}
    finally:
        bar.close()


def run_round(state: nn.Module, batch: torch.Tensor, round_index: int, schedule: Schedule, *, solver: str,
              sparsity: str, steps: StepConfig, solver_options: dict | None = None,
              previous_masks: dict[str, torch.Tensor] | None = None,
              first_masks: dict[str, torch.Tensor] | None = None,
              previous_support: dict[str, torch.Tensor] | None = None,
              first_support: dict[str, torch.Tensor] | None = None, seed: int = 0, take_steps: bool = True,
              on_sparse: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = None,
              progress: bool = False, device=None, batch_size: int = 1,
              offload_activations: bool = False) -> RoundResult:
    """Run round `round_index` (1-based) on `state` (modified in place), with calibration batch [N, L] int64.

    on_sparse(model, masks) receives the round's sparse model ("I-OBS(r)") before any gradient step, e.g. to save
    it: no second copy of the model is kept in memory (dense_ft keeps one state_dict copy of the dense weights).
    previous_masks / first_masks: the masks of rounds r-1 and 1 (for the mask dynamics, and as the fixed mask of
    non-projecting rounds). previous_support / first_support: where the sparse models of rounds r-1 and 1 were
    nonzero; the dynamics then also count changes of the support, which leave out the kept-but-zero positions
    whose kept/pruned label is a solver tie-break (inputs never active, e.g. dead ReLU units). take_steps=False
    skips the gradient steps.
    """
    if round_index < 1:
        raise ConfigError(f"rounds are numbered from 1, got {round_index}")
    timings = {}
    project = round_index == 1 or schedule.project_every_round
    projection = None
    pre_projection = None
    dense_backup = None
    t0 = time.perf_counter()
    if project:
        if previous_masks is not None:
            modules = dict(state.named_modules())
            pre_projection = {n: modules[n].weight.detach().cpu().clone() for n in previous_masks}
        if not schedule.carry_projection:
            dense_backup = copy.deepcopy(state.state_dict())
        fixed = None
        if schedule.fixed_mask and round_index > 1:
            fixed = first_masks if first_masks is not None else previous_masks
            if fixed is None:
                raise ConfigError(f"round {round_index} projects onto round 1's mask but none was given")
        projection = prune_model(state, batch, solver, sparsity, options=solver_options, keep_masks=True,
                                 batch_size=batch_size, offload_activations=offload_activations,
                                 progress=progress, device=device, fixed_masks=fixed)
        masks = projection.masks
    else:
        if previous_masks is None:
            raise ConfigError(f"round {round_index} keeps the previous mask but none was given")
        masks = previous_masks
    timings["projection"] = time.perf_counter() - t0

    support = current_masks(state, masks)
    dynamics = {}
    # At round 2, round 1 is both the previous and the first round (the same objects): count the changes once.
    if previous_masks is not None:
        dynamics["changed_since_previous"] = changed_fraction(previous_masks, masks)
        if first_masks is not None:
            dynamics["changed_since_first"] = dynamics["changed_since_previous"] if first_masks is previous_masks \
                else changed_fraction(first_masks, masks)
    if previous_support is not None:
        dynamics["support_changed_since_previous"] = changed_fraction(previous_support, support)
        if first_support is not None:
            dynamics["support_changed_since_first"] = dynamics["support_changed_since_previous"] \
                if first_support is previous_support else changed_fraction(first_support, support)
    if pre_projection is not None:
        # Regrowth on the support when it is known: a kept-but-zero weight that stays zero did not come back.
        before, after = (previous_support, support) if previous_support is not None else (previous_masks, masks)
        dynamics["regrowth"] = regrowth(before, after, pre_projection)

    if on_sparse is not None:
        on_sparse(state, masks)
    if dense_backup is not None:
        state.load_state_dict(dense_backup)
        del dense_backup

    losses: list[float] = []
    t0 = time.perf_counter()
    if take_steps:
        losses = round_steps(state, batch, round_index, schedule, steps=steps, masks=masks, seed=seed,
                             device=device, progress=progress)
    timings["steps"] = time.perf_counter() - t0
    return RoundResult(masks=masks, support=support, state=state, step_losses=losses,
                       projection=projection, dynamics=dynamics, seconds=timings)


def round_steps(state: nn.Module, batch: torch.Tensor, round_index: int, schedule: Schedule, *, steps: StepConfig,
                masks: dict[str, torch.Tensor] | None, seed: int = 0, device=None, progress: bool = False) -> list[float]:
    """The gradient steps of round `round_index` on `state` (in place), with that round's batch and masks; the
    step losses. run_rounds takes them lazily, at the start of the next round, so the last round takes none."""
    if steps.steps <= 0:
        return []
    masked = steps.masked if schedule.masked_steps is None else schedule.masked_steps
    home = next(state.parameters()).device
    if device is not None and torch.device(device) != home:
        state.to(device)  # the steps need every layer on the compute device (the projection moved one at a time)
    step_config = replace(steps, masked=masked)
    with step_progress(batch.shape[0], step_config, round_index, progress) as progress_kwargs:
        losses = gradient_steps(state, batch, step_config, masks=masks if masked else None,
                                seed=seed + round_index, **progress_kwargs)
    state.to(home)
    return losses


def run_rounds(state: nn.Module, batch_for: Callable[[int], torch.Tensor], schedule: Schedule, *, rounds: int,
               solver: str, sparsities, steps: StepConfig, solver_options: dict | None = None, seed: int = 0,
               first_round: int = 1, histories: dict[str, History] | None = None, pending_steps: bool = True,
               final_steps: bool = False,
               on_round: Callable[[int, dict[str, RoundResult], dict[str, History]], None] | None = None,
               on_sparse: Callable[[int, str, nn.Module, dict[str, torch.Tensor]], None] | None = None,
               on_steps: Callable[[int, list[float], float], None] | None = None,
               progress: bool = False, device=None, batch_size: int = 1,
               offload_activations: bool = False) -> dict[str, History]:
    """The round loop (the pipeline's chain jobs, the CLI, the sweep and the tests all use it): rounds
    `first_round`..`rounds` of `schedule` on `state` (modified in place).

    batch_for(r): round r's calibration batch. Round r's gradient steps are taken lazily at the start of round
    r + 1 (so the last round takes none: nothing reads them), which makes the loop resumable from the end of any
    round: `state` is then that round's state before its steps, as on_round saw it, and `histories` its masks.
    sparsities: one label, or several for a schedule that does not carry its projection (dense_ft: the dense
    states do not depend on the sparsity, so one loop projects them onto every sparsity).
    on_sparse(r, sparsity, model, masks): the round's sparse model, before anything else changes it.
    on_round(r, {sparsity: RoundResult}, {sparsity: History after r}): after round r, with `state` at its
    resumable point (a checkpoint can be written here); each result's step_losses / seconds["steps"] are the steps
    taken at the start of round r (round r-1's). on_steps(r, losses, seconds): after round r's steps, whenever taken.
    pending_steps=False: `state` has taken round first_round-1's steps already (a state saved after them, as by the
    per-round job); final_steps=True: the last round's steps are taken too, so `state` ends as round rounds+1 would
    start. Returns the histories after the last round.
    """
    sparsities = [sparsities] if isinstance(sparsities, str) else list(sparsities)
    if schedule.carry_projection and len(sparsities) != 1:
        raise ConfigError("a variant that carries its projection runs one sparsity per loop")
    histories = dict(histories or {})

    def take_steps(r: int) -> tuple[list[float], float]:  # round r's steps, with its batch and (masked) its masks
        t0 = time.perf_counter()
        masks = histories[sparsities[0]].previous_masks if schedule.carry_projection else None
        losses = round_steps(state, batch_for(r), r, schedule, steps=steps, masks=masks, seed=seed, device=device,
                             progress=progress)
        seconds = time.perf_counter() - t0
        if on_steps is not None:
            on_steps(r, losses, seconds)
        return losses, seconds

    for r in range(first_round, rounds + 1):
        losses, step_seconds = [], 0.0
        if r > 1 and (r > first_round or pending_steps):
            losses, step_seconds = take_steps(r - 1)
        batch = batch_for(r)
        results = {}
        for sparsity in sparsities:
            history = histories.get(sparsity, History())
            hook = None if on_sparse is None else (lambda model, masks, s=sparsity: on_sparse(r, s, model, masks))
            result = run_round(state, batch, r, schedule, solver=solver, sparsity=sparsity, steps=steps,
                               solver_options=solver_options, **history.as_kwargs(), seed=seed, take_steps=False,
                               on_sparse=hook, progress=progress, device=device, batch_size=batch_size,
                               offload_activations=offload_activations)
            result.step_losses = losses
            result.seconds["steps"] = step_seconds
            histories[sparsity] = history.after(result)
            results[sparsity] = result
        if on_round is not None:
            on_round(r, results, dict(histories))
    if final_steps and rounds >= first_round:
        take_steps(rounds)
    return histories
