"""Sequential layer-wise pruning of any decoder-only model (the SparseGPT protocol), one decoder layer at a time.

walk_layers is the engine: capture the first decoder layer's inputs, then for each layer move it to the compute
device, let a visitor inspect or change it, and re-run it to produce the next layer's inputs (so layer l+1 sees
the outputs of the already-modified layer l). prune_model and collect_hessians are visitors of it.

Memory beyond the model's weights is about one layer's working set: the layer being processed, its Linears'
Hessians (float32 [in, in], one per distinct input: q/k/v share one, see iobs.prune.hessian.LayerHessians) and
the captured activations [N, L, hidden] in the model's dtype (on the compute device, or on CPU with
offload_activations=True). The only per-family knowledge is iobs.models.families.decoder_layers.
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from iobs import registry
from iobs.errors import ConfigError, IobsError
from iobs.models.families import decoder_layers
from iobs.prune.capture import CapturedInputs, capture_first_layer_inputs, run_layer
from iobs.prune.hessian import LayerHessians, StopLayer
from iobs.prune.solvers import SOLVERS, solve, solve_group
from iobs.targets import SparsitySpec

log = logging.getLogger("iobs")


@dataclass
class LayerStep:
    """What a walk_layers visitor gets: one decoder layer (already on `device`) and its captured inputs."""

    index: int
    name: str  # the layer's module name inside the model, e.g. "model.decoder.layers.3"
    layer: nn.Module
    inputs: CapturedInputs
    device: torch.device

    def forward(self, on_batch: Callable[[int], None] | None = None) -> None:
        """Run the layer over all calibration inputs without keeping its outputs (hooks see everything)."""
        run_layer(self.layer, self.inputs, self.device, write_outputs=False, on_batch=on_batch)


@dataclass
class WalkResult:
    outputs: CapturedInputs  # the last layer's outputs (its inputs when rerun_last=False): hidden [N, L, hidden]
    capture_seconds: float
    layer_seconds: list[float]  # visit + re-run, per layer
    rerun_seconds: list[float] = field(default_factory=list)  # the re-run alone, per layer (0 when skipped)


@dataclass
class LinearReport:
    name: str
    shape: tuple[int, int]  # (out_features, in_features)
    loss: float  # the solver's layer-wise reconstruction loss
    sparsity: float  # achieved: fraction of exact zeros in the written weight (above the target with dead inputs)
    seconds: float  # solve + write time (a shared solve split by rows; the Hessian pass is in the layer's time)
    dead_inputs: int = 0  # inputs never active in calibration (H_ii = 0); SparseGPT/OBC zero their weights


@dataclass
class PruneReport:
    method: str
    sparsity: str
    linears: list[LinearReport]
    layer_seconds: list[float]  # Hessian pass + solves + re-run, per decoder layer
    capture_seconds: float
    total_sparsity: float  # zeros / weights over all pruned Linears
    total_seconds: float
    peak_memory_mb: float
    peak_memory_kind: str  # "process_max_rss" (lifetime peak of this process) or "cuda_max_allocated"
    # per decoder layer: "hessians" (the forward that feeds them), "solves", "rerun" (0 for the last layer)
    phase_seconds: dict[str, list[float]] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> bool [out, in] on CPU, True = kept

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (masks left out)."""
        record = asdict(self)
        record.pop("masks")
        return record


def resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """The compute device: as given, or where the first decoder layer lives (prune in place)."""
    if device is None:
        return _home_device(decoder_layers(model)[0], torch.device("cpu"))
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IobsError(f"device '{device}' requested but CUDA is not available: use device='cpu'")
    return device


def _home_device(module: nn.Module, default: torch.device) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return default


def prunable_linears(layer: nn.Module, layer_name: str, skip: Iterable[str] = ()) -> dict[str, nn.Linear]:
    """Every nn.Linear inside the layer, by full module name, minus names matching a `skip` glob pattern."""
    patterns = list(skip)
    found = {}
    for sub_name, module in layer.named_modules():
        if isinstance(module, nn.Linear):
            name = f"{layer_name}.{sub_name}" if sub_name else layer_name
            if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                found[name] = module
    return found


def prunable_weight_copies(model: nn.Module) -> dict[str, torch.Tensor]:
    """{full module name: CPU copy of the weight} of every Linear that prune_model may change (no skip patterns):
    with restore_weights, a dense model pruned at several targets without reloading it."""
    layers = decoder_layers(model)
    return {name: linear.weight.detach().to("cpu", copy=True)
            for layer, layer_name in zip(layers, _layer_names(model, layers))
            for name, linear in prunable_linears(layer, layer_name).items()}


@torch.no_grad()
def restore_weights(model: nn.Module, copies: dict[str, torch.Tensor]) -> None:
    """Write prunable_weight_copies' tensors back in place (same Parameters, dtypes and devices)."""
    for name, weight in copies.items():
        model.get_submodule(name).weight.copy_(weight)


def _layer_names(model: nn.Module, layers: nn.ModuleList) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    return [names.get(id(layer), f"layers.{i}") for i, layer in enumerate(layers)]


@torch.no_grad()
def walk_layers(model: nn.Module, input_ids: torch.Tensor, visit: Callable[[LayerStep], None], *,
                batch_size: int = 1, device: torch.device | str | None = None, offload_activations: bool = False,
                progress: bool = True, description: str = "layers", rerun_last: bool = True) -> WalkResult:
    """Visit every decoder layer in order with its (sequentially updated) calibration inputs.

    input_ids: Tensor[N, L] int64, processed in mini-batches of batch_size sequences. Each layer is moved to
    `device` for its visit and moved back after; the rest of the model stays where it is. The visitor may change
    the layer's weights; the layer is then re-run and its outputs become the next layer's inputs.
    Returns the last layer's outputs and timings. rerun_last=False skips the last layer's re-run, for callers
    that do not use its outputs (prune_model).
    """
    layers = decoder_layers(model)
    compute = resolve_device(model, device)
    storage = torch.device("cpu") if offload_activations else compute
    names = _layer_names(model, layers)
    was_training = model.training
    model.eval()
    layer_seconds, rerun_seconds = [], []
    try:
        start = time.perf_counter()
        inputs = capture_first_layer_inputs(model, layers, input_ids, batch_size=batch_size, device=compute,
                                            storage=storage)
        capture_seconds = time.perf_counter() - start
        for index in tqdm(range(len(layers)), desc=description, disable=not progress, file=sys.stderr):
            start = time.perf_counter()
            layer = layers[index]
            home = _home_device(layer, compute)
            layer.to(compute)
            try:
                visit(LayerStep(index, names[index], layer, inputs, compute))
                rerun = time.perf_counter()
                if rerun_last or index < len(layers) - 1:
                    run_layer(layer, inputs, compute, write_outputs=True)
                rerun_seconds.append(time.perf_counter() - rerun)
            finally:
                layer.to(home)
            layer_seconds.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return WalkResult(inputs, capture_seconds, layer_seconds, rerun_seconds)


def collect_hessians(model: nn.Module, input_ids: torch.Tensor, *, skip: Iterable[str] = (), batch_size: int = 1,
                     device: torch.device | str | None = None, offload_activations: bool = False,
                     progress: bool = False) -> dict[str, torch.Tensor]:
    """Dense pass: every in-layer Linear's H = (2/N) sum X^T X (float32 [in, in], on CPU), model unchanged.
    Linears that read the same input (q/k/v, ...) map to the same tensor object."""
    hessians: dict[str, torch.Tensor] = {}

    def visit(step: LayerStep) -> None:
        layer_hessians = layer_hessians_of(step, prunable_linears(step.layer, step.name, skip))
        for group in layer_hessians.groups:  # Linears reading the same input share one CPU tensor
            shared = layer_hessians.hessian(group[0]).cpu()
            hessians.update({name: shared for name in group})

    walk_layers(model, input_ids, visit, batch_size=batch_size, device=device,
                offload_activations=offload_activations, progress=progress, description="hessians")
    return hessians


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process_max_rss"


SolveFn = Callable[..., Any]  # (method, weight [out, in] f32, hessian [in, in] f32, spec, **options) -> SolveResult


def prune_model(model: nn.Module, input_ids: torch.Tensor, method: str, sparsity: SparsitySpec | str, *,
                options: dict | None = None, skip: Iterable[str] = (), batch_size: int = 1,
                device: torch.device | str | None = None, offload_activations: bool = False,
                keep_masks: bool = False, on_linear: Callable[[str, nn.Linear, Any], None] | None = None,
                solver: SolveFn | None = None, progress: bool = True,
                fixed_masks: dict[str, torch.Tensor] | None = None) -> PruneReport:
    """Prune every Linear inside the decoder layers in place, layer by layer, with solve(method, ...).

    Per layer: hook the Linears, run the layer over all calibration inputs to get each Linear's Hessian, solve
    each Linear (weight cast to float32, written back in the model's dtype), then re-run the pruned layer to
    produce the next layer's inputs. Works on already-sparse models (later I-OBS rounds). on_linear(name, linear,
    result) is called after each write; keep_masks collects result.mask (bool, CPU) in the report.
    skip: glob patterns on full module names (e.g. "*.self_attn.q_proj"); lm_head and embeddings are never touched.
    solver replaces iobs.prune.solvers.solve (same signature). If a solve fails, earlier layers stay pruned.
    fixed_masks ({Linear name: bool [out, in]}, True = kept) prunes onto given masks instead of choosing them:
    each Linear's solve gets option mask=... (a solver that accepts it: sparsegpt).
    """
    spec = sparsity if isinstance(sparsity, SparsitySpec) else SparsitySpec.parse(sparsity)
    options = dict(options or {})
    if solver is None:
        if method not in SOLVERS:  # fail before the (possibly long) calibration forward
            raise ConfigError(f"unknown pruning method {method!r}; choose one of {', '.join(sorted(SOLVERS))}")
        solver = solve
        if fixed_masks is not None and "mask" not in inspect.signature(SOLVERS[method]).parameters:
            raise ConfigError(f"pruning method {method!r} cannot prune onto a given mask; "
                              f"{', '.join(registry.projection_solvers())} can")
    skip = list(skip)
    layers = decoder_layers(model)
    names = _layer_names(model, layers)
    if not any(prunable_linears(layer, name, skip) for layer, name in zip(layers, names)):
        raise ConfigError(f"no nn.Linear left to prune in the decoder layers (skip patterns: {skip}): "
                          "loosen the skip patterns")
    compute = resolve_device(model, device)
    if compute.type == "cuda":
        torch.cuda.reset_peak_memory_stats(compute)

    linear_reports: list[LinearReport] = []
    counts = {"zeros": 0, "weights": 0}
    masks: dict[str, torch.Tensor] = {}

    phases: dict[str, list[float]] = {"hessians": [], "solves": [], "rerun": []}

    def visit(step: LayerStep) -> None:
        t0 = time.perf_counter()
        linears = prunable_linears(step.layer, step.name, skip)
        layer_hessians = layer_hessians_of(step, linears)
        phases["hessians"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for name, linear, result, seconds, dead in prune_layer(layer_hessians, method, spec, options=options,
                                                               solver=solver, fixed_masks=fixed_masks):
            t1 = time.perf_counter()
            linear.weight.copy_(result.weight)  # keeps the Parameter (and any optimizer state) and its dtype
            zeros = int((linear.weight == 0).sum())
            counts["zeros"] += zeros
            counts["weights"] += linear.weight.numel()
            achieved = zeros / linear.weight.numel()
            if dead:  # a warning when it takes the Linear beyond its target (issue 10), else a note
                beyond = achieved > spec.fraction + 0.5 / linear.weight.numel()
                log.log(logging.WARNING if beyond else logging.INFO,
                        "%s: %d of %d inputs were never active in calibration (H_ii = 0)%s; achieved sparsity "
                        "%.4f for target %s", name, dead, linear.in_features,
                        ", so the layer is pruned to 100%" if dead == linear.in_features else
                        " and their weights are zeroed" if method in ("sparsegpt", "obc") else "",
                        achieved, spec.label)
            linear_reports.append(LinearReport(name, tuple(linear.weight.shape), float(result.loss), achieved,
                                               seconds + time.perf_counter() - t1, dead_inputs=dead))
            if keep_masks:
                masks[name] = result.mask.detach().to("cpu", torch.bool)
            if on_linear is not None:
                on_linear(name, linear, result)
            del result
        phases["solves"].append(time.perf_counter() - t0)

    start = time.perf_counter()
    walk = walk_layers(model, input_ids, visit, batch_size=batch_size, device=compute,
                       offload_activations=offload_activations, progress=progress,
                       description=f"{method} {spec.label}", rerun_last=False)
    total_seconds = time.perf_counter() - start
    phases["rerun"] = walk.rerun_seconds

    peak, kind = _peak_memory(compute)
    return PruneReport(method=method, sparsity=spec.label, linears=linear_reports,
                       layer_seconds=walk.layer_seconds, capture_seconds=walk.capture_seconds,
                       total_sparsity=counts["zeros"] / counts["weights"], total_seconds=total_seconds,
                       peak_memory_mb=peak, peak_memory_kind=kind, phase_seconds=phases, masks=masks)


def layer_hessians_of(step: LayerStep, linears: dict[str, nn.Linear], *, stop_early: bool = True,
                      symmetric: bool = True) -> LayerHessians:
    """One forward of the layer over all calibration inputs, feeding one Hessian per distinct Linear input."""
    layer_hessians = LayerHessians(linears, step.device, stop_early=stop_early, symmetric=symmetric)
    with layer_hessians.hooks():
        run_layer(step.layer, step.inputs, step.device, write_outputs=False, on_batch=layer_hessians.start_batch,
                  until=StopLayer)
    return layer_hessians


def prune_layer(layer_hessians: LayerHessians, method: str, spec: SparsitySpec, *, options: dict | None = None,
                solver: SolveFn | None = None, fixed_masks: dict[str, torch.Tensor] | None = None
                ) -> list[tuple[str, nn.Linear, Any, float, int]]:
    """Solve every Linear of one layer from its (shared) Hessian; nothing is written to the model.

    Returns (name, linear, result, seconds, dead_inputs) in the layer's module order. Linears that read the same
    input share one Hessian tensor and, with the default solver, one factorization (solve_group); a given
    `solver` (signature of solve) is called once per Linear with that shared tensor. seconds: the group's solve
    time split in proportion to the rows. fixed_masks as in prune_model.
    """
    options = dict(options or {})
    results: dict[str, tuple[Any, float, int]] = {}
    for group in layer_hessians.groups:
        hessian = layer_hessians.hessian(group[0])
        dead = int((hessian.diagonal() == 0).sum())
        members = [layer_hessians.linears[name] for name in group]
        masks = None
        if fixed_masks is not None:
            missing = [name for name in group if name not in fixed_masks]
            if missing:
                raise IobsError(f"no fixed mask for '{missing[0]}': the masks come from another model or skip list")
            masks = [fixed_masks[name].to(hessian.device, torch.bool) for name in group]
        t0 = time.perf_counter()
        weights = [linear.weight.detach().float() for linear in members]
        if solver is None:
            solved = solve_group(method, weights, hessian, spec, masks=masks, **options)
        else:
            solved = [solver(method, w, hessian, spec, **options, **({"mask": masks[k]} if masks else {}))
                      for k, w in enumerate(weights)]
        seconds = time.perf_counter() - t0
        rows = sum(linear.out_features for linear in members)
        for name, linear, result in zip(group, members, solved, strict=True):
            results[name] = (result, seconds * linear.out_features / rows, dead)
    return [(name, linear, *results[name]) for name, linear in layer_hessians.linears.items()]
