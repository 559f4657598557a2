"""Memory of the I-OBS gradient step (iobs.iterative.steps.gradient_steps), item by item, on the device and the host.

Parameter counts are exact: the model is built from its transformers config on the meta device (no memory, no
download) and its decoder layers are found as the steps find them (iobs.models.families.decoder_layers), so the
estimate works for any family the steps work for. Activations and logits are estimates (see step_memory).

A step has two phases, and an item counts towards the peak of the phases it is alive in:
  backward: forward and backward of the micro-batches (activations, logits and the model's gradients);
  update:   each gradient moves into its float32 master's, then clipping, the optimizer step and the copy-back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from iobs.errors import ConfigError, IobsError
from iobs.iterative.steps import StepConfig, trainable_parameters
from iobs.models.families import decoder_layers

PHASES = ("backward", "update")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Saved activations of one decoder layer, in elements of the model's dtype per token: 12 x hidden + 4 x MLP width.
# Counted with saved-tensor hooks on transformers 5 layers (SDPA, 16-bit): Llama-2-7B 12.0 h + 4.0 I, Llama-3-8B
# 6% less (grouped-query attention), Phi-1.5 3% less; OPT's ReLU MLP keeps less (OPT-125M: 43% of the formula).
HIDDEN_PER_TOKEN, MLP_PER_TOKEN = 12, 4
# At the backward of the loss the float32 log-softmax (saved), its incoming gradient and the gradient of its input
# coexist: 3 x 4 bytes per token and vocabulary entry, whatever the model's dtype.
LOGIT_BYTES = 12


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a causal LM; counts are numbers of scalars."""

    parameters: int  # all distinct parameters (tied embeddings once)
    trainable: int  # the decoder layers' parameters: what the steps update
    layers: int
    hidden: int
    mlp_width: int  # the widest input of a decoder layer's Linear (the MLP's down projection)
    vocab: int


@dataclass(frozen=True)
class MemoryItem:
    name: str
    nbytes: int
    where: str  # "device" (the compute device) or "host"
    phases: tuple[str, ...]  # the phases of a step it is alive in (PHASES)


@dataclass(frozen=True)
class StepMemory:
    items: tuple[MemoryItem, ...]

    def peak(self, where: str | None = None) -> int:
        """Largest total, over the phases, of the items on `where` ("device" or "host"; None = both, as when the
        compute device is the host)."""
        return max(sum(i.nbytes for i in self.items if phase in i.phases and where in (None, i.where))
                   for phase in PHASES)

    def bytes_on(self, where: str) -> dict[str, int]:
        """Item name -> bytes on `where` (0 for items elsewhere)."""
        return {i.name: i.nbytes if i.where == where else 0 for i in self.items}


def model_shape(config: PretrainedConfig) -> ModelShape:
    """Count a causal LM's parameters exactly by building it from `config` on the meta device (no memory)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layers = decoder_layers(model)
    widths = [m.in_features for m in layers.modules() if isinstance(m, nn.Linear)]
    if not widths:
        raise IobsError(f"the decoder layers of a {type(model).__name__} have no nn.Linear: cannot size its MLP")
    return ModelShape(parameters=sum(p.numel() for p in model.parameters()),
                      trainable=sum(p.numel() for p in trainable_parameters(model).values()),
                      layers=len(layers), hidden=int(config.hidden_size), mlp_width=max(widths),
                      vocab=model.get_output_embeddings().weight.shape[0])


def step_memory(shape: ModelShape, dtype: torch.dtype, seqlen: int, config: StepConfig) -> StepMemory:
    """Bytes of each item of gradient_steps for a model of `shape` in `dtype`, on sequences of `seqlen` tokens.

    With b = dtype's bytes, T = config.micro_batch x seqlen tokens, L layers, h = hidden, I = MLP width, V = vocab:
      weights      parameters x b                          device
      gradients    trainable x b                           device (until moved into the masters' gradients)
      masters      float32 copies of the trainable parameters (of the 16-bit ones only, unless offloaded), and
                   as much again for their gradients (update phase only)    host if offload_optimizer else device
      optimizer    Adam: 2 float32 moments per trainable parameter; SGD: none   with the masters
      activations  T x L x (12 h + 4 I) x b; with gradient checkpointing T x (L h + 12 h + 4 I) x b (every layer's
                   input, plus one layer recomputed in the backward pass)   device
      logits       T x V x 12 (float32 log-softmax and two gradients of its size at the loss)   device
    Not counted: the CUDA context and allocator slack, per-parameter temporaries, and the full-size temporary of
    torch's foreach Adam on a GPU (one more float32 copy of the masters, when they are not offloaded).
    """
    if dtype not in DTYPES:
        raise ConfigError(f"memory estimate: dtype {dtype} is not one of {', '.join(map(str, DTYPES))}")
    if seqlen < 1:
        raise ConfigError(f"memory estimate: seqlen must be at least 1, got {seqlen}")
    b = dtype.itemsize
    tokens = config.micro_batch * seqlen
    masters = shape.trainable if config.offload_optimizer or dtype != torch.float32 else 0
    home = "host" if config.offload_optimizer else "device"
    layer = tokens * (HIDDEN_PER_TOKEN * shape.hidden + MLP_PER_TOKEN * shape.mlp_width) * b
    if config.gradient_checkpointing:
        activations = tokens * shape.layers * shape.hidden * b + layer
    else:
        activations = shape.layers * layer
    moments = 2 * shape.trainable * 4 if config.optimizer == "adam" else 0
    return StepMemory(items=(
        MemoryItem("weights", shape.parameters * b, "device", PHASES),
        # without masters the optimizer steps the (float32) parameters with their own gradients
        MemoryItem("gradients", shape.trainable * b, "device", ("backward",) if masters else PHASES),
        MemoryItem("float32 master weights", masters * 4, home, PHASES),
        MemoryItem("float32 master gradients", masters * 4, home, ("update",)),
        MemoryItem("optimizer state", moments, home, PHASES),
        MemoryItem("activations", activations, "device", ("backward",)),
        MemoryItem("logits", LOGIT_BYTES * tokens * shape.vocab, "device", ("backward",)),
    ))
