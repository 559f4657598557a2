"""Sequential layer-wise pruning of any decoder-only model (the SparseGPT protocol), one decoder layer at a time.

walk_layers is the engine: capture the first decoder layer's inputs, then for each layer move it to the compute
device, let a visitor inspect or change it, and re-run it to produce the next layer's inputs (so layer l+1 sees
the outputs of the already-modified layer l). prune_model and collect_hessians are visitors of it.

Memory beyond the model's weights is about one layer's working set: the layer being processed, its Linears'
Hessians (float32, [in, in] each) and the captured activations [N, L, hidden] in the model's dtype (on the
compute device, or on CPU with offload_activations=True). The only per-family knowledge is
iobs.models.families.decoder_layers.
"""

from __future__ import annotations

import fnmatch
import inspect
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from iobs.errors import ConfigError, IobsError
from iobs.models.families import decoder_layers
from iobs.prune.capture import CapturedInputs, capture_first_layer_inputs, run_layer
from iobs.prune.hessian import hessian_hooks
from iobs.prune.solvers import SOLVERS, solve
from iobs.prune.sparsity import SparsitySpec


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
    outputs: CapturedInputs  # the last layer's outputs: hidden [N, L, hidden] in the model's dtype
    capture_seconds: float
    layer_seconds: list[float]  # visit + re-run, per layer


@dataclass
class LinearReport:
    name: str
    shape: tuple[int, int]  # (out_features, in_features)
    loss: float  # the solver's layer-wise reconstruction loss
    sparsity: float  # fraction of exact zeros in the written weight
    seconds: float  # solve + write time (the Hessian pass is counted in the layer's time)


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


def _layer_names(model: nn.Module, layers: nn.ModuleList) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    return [names.get(id(layer), f"layers.{i}") for i, layer in enumerate(layers)]


@torch.no_grad()
def walk_layers(model: nn.Module, input_ids: torch.Tensor, visit: Callable[[LayerStep], None], *,
                batch_size: int = 1, device: torch.device | str | None = None, offload_activations: bool = False,
                progress: bool = True, description: str = "layers") -> WalkResult:
    """Visit every decoder layer in order with its (sequentially updated) calibration inputs.

    input_ids: Tensor[N, L] int64, processed in mini-batches of batch_size sequences. Each layer is moved to
    `device` for its visit and moved back after; the rest of the model stays where it is. The visitor may change
    the layer's weights; the layer is then re-run and its outputs become the next layer's inputs.
    Returns the last layer's outputs and timings.
    """
    layers = decoder_layers(model)
    compute = resolve_device(model, device)
    storage = torch.device("cpu") if offload_activations else compute
    names = _layer_names(model, layers)
    was_training = model.training
    model.eval()
    layer_seconds = []
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
                run_layer(layer, inputs, compute, write_outputs=True)
            finally:
                layer.to(home)
            layer_seconds.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return WalkResult(inputs, capture_seconds, layer_seconds)


def collect_hessians(model: nn.Module, input_ids: torch.Tensor, *, skip: Iterable[str] = (), batch_size: int = 1,
                     device: torch.device | str | None = None, offload_activations: bool = False,
                     progress: bool = False) -> dict[str, torch.Tensor]:
    """Dense pass: every in-layer Linear's H = (2/N) sum X^T X (float32 [in, in], on CPU), model unchanged."""
    hessians: dict[str, torch.Tensor] = {}

    def visit(step: LayerStep) -> None:
        with hessian_hooks(prunable_linears(step.layer, step.name, skip), step.device) as (accs, set_batch):
            step.forward(on_batch=set_batch)
        hessians.update({name: acc.hessian.cpu() for name, acc in accs.items()})

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
            raise ConfigError(f"pruning method {method!r} cannot prune onto a given mask; sparsegpt can")
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

    def visit(step: LayerStep) -> None:
        linears = prunable_linears(step.layer, step.name, skip)
        with hessian_hooks(linears, step.device) as (accumulators, set_batch):
            step.forward(on_batch=set_batch)
        for name, linear in linears.items():
            t0 = time.perf_counter()
            hessian = accumulators.pop(name).hessian  # freed after this Linear's solve
            if fixed_masks is not None:
                if name not in fixed_masks:
                    raise IobsError(f"no fixed mask for '{name}': the masks come from another model or skip list")
                options["mask"] = fixed_masks[name].to(step.device, torch.bool)
            result = solver(method, linear.weight.detach().float(), hessian, spec, **options)
            linear.weight.copy_(result.weight)  # keeps the Parameter (and any optimizer state) and its dtype
            zeros = int((linear.weight == 0).sum())
            counts["zeros"] += zeros
            counts["weights"] += linear.weight.numel()
            linear_reports.append(LinearReport(name, tuple(linear.weight.shape), float(result.loss),
                                               zeros / linear.weight.numel(), time.perf_counter() - t0))
            if keep_masks:
                masks[name] = result.mask.detach().to("cpu", torch.bool)
            if on_linear is not None:
                on_linear(name, linear, result)
            del hessian, result

    start = time.perf_counter()
    walk = walk_layers(model, input_ids, visit, batch_size=batch_size, device=compute,
                       offload_activations=offload_activations, progress=progress,
                       description=f"{method} {spec.label}")
    total_seconds = time.perf_counter() - start

    peak, kind = _peak_memory(compute)
    return PruneReport(method=method, sparsity=spec.label, linears=linear_reports,
                       layer_seconds=walk.layer_seconds, capture_seconds=walk.capture_seconds,
                       total_sparsity=counts["zeros"] / counts["weights"], total_seconds=total_seconds,
                       peak_memory_mb=peak, peak_memory_kind=kind, masks=masks)
