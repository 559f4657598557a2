"""Gradient steps on the calibration language-modelling loss, for the decoder layers only.

Between two projections I-OBS moves the weights along the calibration loss's gradient (the I-OBS paper's algorithm,
step 3). What the paper leaves open is a parameter here: optimizer, learning rate, number of steps, and whether
the step is masked (pruned weights stay exactly zero: SparseGPT + masked fine-tuning when used as a control) or
dense (pruned weights may regrow; the next projection decides which survive).
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager, nullcontext
from typing import Callable

import torch
import torch.utils.checkpoint
from torch import nn

from iobs.errors import IobsError
from iobs.iterative.step_config import StepConfig  # noqa: F401  (re-exported: callers import it from here)
from iobs.models.families import decoder_layers


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The decoder layers' parameters (weights, biases, norms): embeddings and lm_head stay frozen."""
    layers = decoder_layers(model)
    layer_ids = {id(p) for p in layers.parameters()}
    return {name: p for name, p in model.named_parameters() if id(p) in layer_ids}


def _weight_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[nn.Parameter, torch.Tensor]:
    """Linear-module-name -> bool mask  to  Parameter -> bool mask (on the mask's own device)."""
    modules = dict(model.named_modules())
    out = {}
    for name, mask in masks.items():
        if name not in modules:
            raise IobsError(f"mask for '{name}' does not match any module of the model: masks and model differ")
        weight = modules[name].weight
        if tuple(mask.shape) != tuple(weight.shape):
            raise IobsError(f"mask for '{name}' has shape {tuple(mask.shape)}, weight has {tuple(weight.shape)}")
        out[weight] = mask.to(dtype=torch.bool)
    return out


def calibration_loss(model: nn.Module, input_ids: torch.Tensor, micro_batch: int = 8) -> float:
    """Mean next-token NLL over input_ids [N, L] (int64), without gradients, in eval mode (no dropout)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, input_ids.shape[0], micro_batch):
                ids = input_ids[start:start + micro_batch].to(device)
                out = model(input_ids=ids, labels=ids, use_cache=False)
                tokens = ids.numel() - ids.shape[0]
                total += float(out.loss) * tokens
                count += tokens
    finally:
        model.train(was_training)
    return total / max(count, 1)


def float32_masters(params: list[nn.Parameter], offload: bool = False) -> dict[nn.Parameter, torch.Tensor]:
    """float32 copies of parameters, which the optimizer updates instead of them: Parameter -> Tensor (same shape).

    In bfloat16 an update smaller than half a unit in the last place is lost: Adam at lr 1e-5 on weights of
    size ~0.02 (ulp ~1e-4) leaves most weights unchanged. The masters accumulate every step's update and are
    rounded into the model's weights after each step. Without offload only low-precision parameters get one, on
    their own device (a float32 parameter is its own master). With offload every parameter gets one in host
    memory (float64 ones stay float64), so the optimizer and its state never touch the compute device.
    """
    if offload:
        # a 16-bit CUDA tensor converts on the host in a blocking copy: no float32 copy is made on the device
        return {p: p.detach().to("cpu", torch.promote_types(p.dtype, torch.float32), copy=True) for p in params}
    return {p: p.detach().float().clone() for p in params if p.dtype not in (torch.float32, torch.float64)}


def _gradients_into_masters(masters: dict[nn.Parameter, torch.Tensor]) -> None:
    """Move each parameter's gradient into its master's .grad (float32, on the master's device), one parameter at
    a time, dropping the parameter's own: the model's gradients and their float32 copies never coexist in full."""
    for p, master in masters.items():
        master.grad = None if p.grad is None else p.grad.to(master.device, master.dtype)
        p.grad = None


@contextmanager
def checkpointed_layers(layers: nn.ModuleList):
    """Within the block each layer's forward runs under torch.utils.checkpoint (non-reentrant): the layer keeps only
    its inputs and recomputes its activations in the backward pass.

    The wrapper is set on the instance, so module hooks stay outside the checkpoint and only forward is replayed.
    Transformers' own gradient_checkpointing_enable() is of no use here: it engages only in train mode, and the
    steps run in eval mode. Every layer's original forward comes back on exit, also on an exception.
    """
    absent = object()
    patched = []
    try:
        for layer in layers:
            patched.append((layer, layer.__dict__.get("forward", absent)))
            layer.forward = functools.partial(torch.utils.checkpoint.checkpoint, layer.forward, use_reentrant=False)
        yield layers
    finally:
        for layer, own in reversed(patched):
            if own is absent:
                del layer.forward
            else:
                layer.forward = own


def _accumulate_gradients(model: nn.Module, input_ids: torch.Tensor, micro_batch: int, device,
                          on_micro_batch: Callable[[float], None] | None = None) -> float:
    """Backward the full-batch mean loss over input_ids [N, L] in micro-batches; returns that loss.

    on_micro_batch(loss so far) is called after each micro-batch's backward (for a progress bar).

    The model's loss is a mean over a micro-batch's tokens; all sequences have L tokens, so weighting each
    micro-batch by its share of the sequences gives the full-batch mean even when the last one is shorter.
    """
    n_seq = input_ids.shape[0]
    total = 0.0
    for start in range(0, n_seq, micro_batch):
        ids = input_ids[start:start + micro_batch].to(device)
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss * (ids.shape[0] / n_seq)
        loss.backward()
        total += loss.item()
        if on_micro_batch is not None:
            on_micro_batch(total)
    return total


def micro_batches_per_step(sequences: int, config: StepConfig) -> int:
    """How many times gradient_steps calls on_micro_batch per step (the length of a progress bar)."""
    return -(-sequences // config.micro_batch)


def gradient_steps(model: nn.Module, input_ids: torch.Tensor, config: StepConfig,
                   masks: dict[str, torch.Tensor] | None = None, seed: int = 0,
                   on_micro_batch: Callable[[float], None] | None = None) -> list[float]:
    """Take config.steps full-batch gradient steps on input_ids [N, L] (int64); returns the loss before each step.

    Every step uses the whole batch (accumulated over micro-batches, each weighted by its share of the
    sequences), so for a model without dropout the result does not depend on the micro-batch size beyond float
    rounding. masks (Linear name -> bool [out, in], True = kept) are required when config.masked; then masked
    weights get zero gradient and are re-zeroed after each step. Only trainable_parameters change. Low-precision
    (bfloat16/float16) weights are stepped through float32 master copies (float32_masters). The model runs in eval
    mode (no dropout); `seed` seeds a forked RNG, so the caller's global RNG is left as it was.
    on_micro_batch(loss of the step so far) follows every micro-batch (see micro_batches_per_step), e.g. to move a
    progress bar: one step over a paper-scale batch takes minutes.

    Memory plan: config.gradient_checkpointing recomputes each decoder layer in the backward pass
    (checkpointed_layers); config.offload_optimizer keeps the masters, their gradients and the optimizer state on
    the host, and the device only the model, its gradients and the activations. Both give the same steps: on the
    CPU bit for bit, on a GPU up to float rounding (the norm and the update are then computed by other kernels).
    """
    if config.masked and not masks:
        raise IobsError("a masked gradient step needs the masks of the current sparse model")
    if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.dtype != torch.long \
            or input_ids.shape[0] == 0:
        got = f"{tuple(input_ids.shape)} {input_ids.dtype}" if torch.is_tensor(input_ids) else type(input_ids).__name__
        raise IobsError(f"gradient steps need int64 input_ids [sequences, length] with sequences >= 1, got {got}")
    weight_masks = _weight_masks(model, masks) if config.masked else {}
    params = list(trainable_parameters(model).values())
    trainable = {id(p) for p in params}
    previous = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    masters = float32_masters(params, offload=config.offload_optimizer)
    stepped = [masters.get(p, p) for p in params]  # what the optimizer updates
    # the mask of each stepped tensor, on its device
    stepped_masks = {masters.get(w, w): m.to(masters.get(w, w).device) for w, m in weight_masks.items()}
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(stepped, lr=config.lr)
    else:
        optimizer = torch.optim.Adam(stepped, lr=config.lr)
    device = next(model.parameters()).device
    was_training = model.training
    # Eval mode: the step follows the gradient of the calibration loss itself, with no dropout noise (hub OPT
    # models ship dropout 0.1), so it is deterministic and independent of the micro-batch size.
    model.eval()
    checkpointing = checkpointed_layers(decoder_layers(model)) if config.gradient_checkpointing else nullcontext()
    losses: list[float] = []
    try:
        with torch.random.fork_rng(), checkpointing:
            torch.manual_seed(seed)
            for _ in range(config.steps):
                for p in params:
                    p.grad = None
                step_loss = _accumulate_gradients(model, input_ids, config.micro_batch, device, on_micro_batch)
                if not math.isfinite(step_loss):
                    raise IobsError(f"calibration loss became {step_loss} during gradient steps: "
                                    "lower the learning rate")
                losses.append(step_loss)
                _gradients_into_masters(masters)
                for target, mask in stepped_masks.items():
                    if target.grad is not None:
                        target.grad.mul_(mask)
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(stepped, config.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    for target, mask in stepped_masks.items():
                        target.mul_(mask)
                    for p, master in masters.items():
                        p.copy_(master)
                        master.grad = None  # free before the next step's backward
    finally:
        for p in params:
            p.grad = None
        for master in masters.values():
            master.grad = None
        for p, flag in previous.items():
            p.requires_grad_(flag)
        model.train(was_training)
    return losses
