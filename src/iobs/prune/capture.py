"""Capture what a model feeds its first decoder layer, and replay decoder layers on it one at a time.

The model is called normally (so every architecture builds its own masks, position ids and rotary embeddings);
a forward pre-hook on the first decoder layer records the hidden states and EVERY other positional and keyword
argument, then aborts the forward. Later layers are run by replaying exactly those arguments, which is all a
decoder layer receives from its model in transformers (>= 4.5x, 5.x).

Two traps this module avoids:
- A live KV cache in the captured kwargs makes every re-run of a layer append keys/values and attend to stale
  ones (about 11% output error after pruning, no exception). The model is called with use_cache=False and any
  cache object that still shows up is replaced by None.
- Under SDPA some models pass attention_mask=None and rely on is_causal, under eager a 4-D float mask
  [B, 1, L, L]. Nothing is reconstructed; what was passed is replayed. Identical per-batch tensors (such masks,
  rotary tables) are stored once.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from iobs.errors import DataError, IobsError


class _NeverRaised(Exception):
    """Placeholder for run_layer's `until`: nothing raises it."""


class _StopForward(Exception):
    """Raised by the capture hook to end the model's forward once the first layer's inputs are known."""


@dataclass
class LayerCall:
    """The arguments one mini-batch's forward passed to a decoder layer, apart from the hidden states."""

    args: tuple
    kwargs: dict
    hidden_as_kwarg: bool  # the hidden states came as hidden_states=... rather than positionally


@dataclass
class CapturedInputs:
    """Inputs of the current decoder layer for all calibration sequences.

    hidden: Tensor[N, L, hidden] in the model's dtype, on the storage device; rows sliced per mini-batch.
    calls: one LayerCall per mini-batch (slices[i] of hidden), tensors on the storage device.
    """

    hidden: torch.Tensor
    slices: list[slice]
    calls: list[LayerCall] = field(default_factory=list)

    @property
    def num_sequences(self) -> int:
        return self.hidden.shape[0]

    def batches(self) -> Iterator[tuple[slice, LayerCall]]:
        return zip(self.slices, self.calls)


def to_device(value: Any, device: torch.device) -> Any:
    """Move every tensor inside nested tuples/lists/dicts; leave other objects as they are."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def _drop_caches(kwargs: dict) -> dict:
    try:
        from transformers.cache_utils import Cache
    except ImportError:  # pragma: no cover - transformers is a dependency
        return kwargs
    return {k: (None if isinstance(v, Cache) else v) for k, v in kwargs.items()}


def _share_equal(new: Any, old: Any) -> Any:
    """Return `new` with every tensor that equals its counterpart in `old` replaced by that counterpart."""
    if isinstance(new, torch.Tensor):
        same = (isinstance(old, torch.Tensor) and old.shape == new.shape and old.dtype == new.dtype
                and old.device == new.device and torch.equal(old, new))
        return old if same else new
    if isinstance(new, (tuple, list)) and type(old) is type(new) and len(old) == len(new):
        return type(new)(_share_equal(n, o) for n, o in zip(new, old))
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: _share_equal(v, old.get(k)) for k, v in new.items()}
    return new


def first_tensor(output: Any) -> torch.Tensor:
    """A decoder layer's hidden-state output: transformers 5 layers return a tensor, older ones a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise IobsError(f"a decoder layer returned {type(output).__name__}, expected a tensor or a tuple starting "
                    "with one: this architecture needs support in iobs.prune.capture")


@contextmanager
def non_layer_weights_on(model: nn.Module, layers: nn.ModuleList, device: torch.device):
    """Temporarily move every parameter and buffer outside `layers` (embeddings, rotary tables, norms) to device.

    Tensors are swapped in place (param.data, module._buffers) so tied weights stay tied and modules keep their
    identity; everything goes back where it was on exit.
    """
    inside = {id(m) for m in layers.modules()}
    moved_params: dict[int, tuple[nn.Parameter, torch.device]] = {}
    moved_buffers: list[tuple[nn.Module, str, torch.Tensor]] = []
    try:
        for module in model.modules():
            if id(module) in inside:
                continue
            for param in module._parameters.values():
                if param is not None and id(param) not in moved_params and param.device != device:
                    moved_params[id(param)] = (param, param.device)
                    param.data = param.data.to(device)
            for name, buf in module._buffers.items():
                if buf is not None and buf.device != device:
                    moved_buffers.append((module, name, buf))
                    module._buffers[name] = buf.to(device)
        yield
    finally:
        for param, original in moved_params.values():
            param.data = param.data.to(original)
        for module, name, buf in moved_buffers:
            module._buffers[name] = buf


def batch_slices(num_sequences: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, num_sequences)) for i in range(0, num_sequences, batch_size)]


@torch.no_grad()
def capture_first_layer_inputs(model: nn.Module, layers: nn.ModuleList, input_ids: torch.Tensor, *,
                               batch_size: int, device: torch.device, storage: torch.device) -> CapturedInputs:
    """Run the model on input_ids [N, L] (int64) in mini-batches and record what layers[0] receives.

    Only the non-layer weights are moved to `device` for this; the result lives on `storage`
    (hidden: [N, L, hidden] in the model's dtype).
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        got = (f"{tuple(input_ids.shape)} {input_ids.dtype}" if isinstance(input_ids, torch.Tensor)
               else type(input_ids).__name__)
        raise DataError(f"calibration input_ids must be an int64 tensor [sequences, length], got {got}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise DataError(f"calibration input_ids is empty ({tuple(input_ids.shape)}): give at least one token")
    if batch_size < 1:
        raise IobsError(f"batch_size must be >= 1, got {batch_size}")

    slices = batch_slices(input_ids.shape[0], batch_size)
    seen: dict[str, Any] = {}

    def hook(module, args, kwargs):
        if args:
            seen["hidden"], call = args[0], LayerCall(args[1:], dict(kwargs), hidden_as_kwarg=False)
        else:
            kwargs = dict(kwargs)
            seen["hidden"], call = kwargs.pop("hidden_states"), LayerCall((), kwargs, hidden_as_kwarg=True)
        call.kwargs = _drop_caches(call.kwargs)
        seen["call"] = call
        raise _StopForward

    hidden: torch.Tensor | None = None
    calls: list[LayerCall] = []
    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with non_layer_weights_on(model, layers, device):
            for sl in slices:
                seen.clear()
                try:
                    model(input_ids=input_ids[sl].to(device), use_cache=False)
                except _StopForward:
                    pass
                if "hidden" not in seen:
                    raise IobsError(f"{type(model).__name__} never called its first decoder layer: check "
                                    "LAYER_PATHS in iobs.models.families for this model_type")
                if hidden is None:
                    h = seen["hidden"]
                    hidden = torch.empty((input_ids.shape[0], *h.shape[1:]), dtype=h.dtype, device=storage)
                hidden[sl] = seen["hidden"].to(storage)
                call = seen["call"]
                call.args, call.kwargs = to_device(call.args, storage), to_device(call.kwargs, storage)
                if calls:
                    call.args = _share_equal(call.args, calls[-1].args)
                    call.kwargs = _share_equal(call.kwargs, calls[-1].kwargs)
                calls.append(call)
    finally:
        handle.remove()
    return CapturedInputs(hidden=hidden, slices=slices, calls=calls)


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: CapturedInputs, device: torch.device, *, write_outputs: bool,
              on_batch: Callable[[int], None] | None = None,
              until: type[BaseException] | None = None) -> None:
    """Run `layer` (already on `device`) over all captured mini-batches.

    on_batch(number_of_sequences) is called before each mini-batch (Hessian hooks use it to count sequences).
    until: an exception type that ends a mini-batch's forward early and is swallowed (hooks raise it once they
    have what they need, e.g. iobs.prune.hessian.StopLayer); not allowed with write_outputs.
    With write_outputs the layer's outputs overwrite inputs.hidden batch by batch: they become the next
    layer's inputs (each batch's input is no longer needed once its output exists).
    """
    if until is not None and write_outputs:
        raise IobsError("run_layer: a forward stopped early has no outputs to write")
    stop = until or _NeverRaised
    for sl, call in inputs.batches():
        if on_batch is not None:
            on_batch(sl.stop - sl.start)
        hidden = inputs.hidden[sl].to(device)
        args, kwargs = to_device(call.args, device), to_device(call.kwargs, device)
        try:
            if call.hidden_as_kwarg:
                out = layer(*args, hidden_states=hidden, **kwargs)
            else:
                out = layer(hidden, *args, **kwargs)
        except stop:
            continue
        if write_outputs:
            inputs.hidden[sl] = first_tensor(out).to(inputs.hidden.device, inputs.hidden.dtype)
