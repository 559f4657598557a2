"""The memory plan of the I-OBS gradient step on tiny random OPT, Llama and Phi: an offloaded optimizer and
checkpointed decoder layers take the same steps as the plain step; the memory estimate counts the parameters of
real models exactly and puts each item where the plan says."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig

from iobs.errors import ConfigError, IobsError
from iobs.iterative.memory import PHASES, ModelShape, model_shape, step_memory
from iobs.iterative.steps import StepConfig, checkpointed_layers, float32_masters, gradient_steps, trainable_parameters
from iobs.models.families import TINY_CONFIGS, decoder_layers
from iobs.prune.driver import prune_model
from tests.conftest import ATTENTIONS, FAMILIES

PLAIN = StepConfig(optimizer="adam", lr=1e-3, steps=2, micro_batch=4)


def run_steps(model, input_ids, config, masks=None) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Steps on a copy of `model`; returns the losses and the stepped weights."""
    model = copy.deepcopy(model)
    losses = gradient_steps(model, input_ids, config, masks=masks)
    return losses, {name: p.detach().clone() for name, p in model.named_parameters()}


def first_linear(layer: torch.nn.Module) -> torch.nn.Linear:
    return next(m for m in layer.modules() if isinstance(m, torch.nn.Linear))


# ---- offloaded optimizer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 1e-3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", FAMILIES)
def test_offloaded_optimizer_takes_bit_identical_steps(make_tiny_model, calibration_ids, family, dtype, optimizer,
                                                       lr, masked):
    """On the CPU the host masters go through the same kernels in the same order as the plain step (whose float32
    parameters are their own masters, and whose 16-bit ones have masters on the same CPU): equal bit for bit."""
    model = make_tiny_model(family, dtype=dtype)
    masks = prune_model(model, calibration_ids, "magnitude", "0.5", keep_masks=True, progress=False).masks
    # a small clip norm so that the global clipping is active in every step
    config = StepConfig(optimizer=optimizer, lr=lr, steps=3, micro_batch=4, masked=masked, max_grad_norm=0.1)
    losses, weights = run_steps(model, calibration_ids, config, masks)
    offloaded_losses, offloaded = run_steps(model, calibration_ids, replace(config, offload_optimizer=True), masks)
    assert offloaded_losses == losses
    for name, weight in weights.items():
        assert offloaded[name].dtype == dtype and torch.equal(offloaded[name], weight), name
    modules = dict(model.named_modules())
    moved = sum(int((offloaded[f"{n}.weight"] != modules[n].weight).sum()) for n in masks)
    revived = sum(int((offloaded[f"{n}.weight"][~m] != 0).sum()) for n, m in masks.items())
    assert moved > 0
    assert revived == 0 if masked else revived > 0


def test_offloaded_masters_are_host_float32_copies_of_every_trainable_parameter(make_tiny_model):
    for dtype in (torch.float32, torch.bfloat16):
        params = list(trainable_parameters(make_tiny_model("llama", dtype=dtype)).values())
        masters = float32_masters(params, offload=True)
        assert [id(p) for p in masters] == [id(p) for p in params]
        for p, master in masters.items():
            assert master.dtype == torch.float32 and master.device.type == "cpu" and not master.requires_grad
            assert master.untyped_storage().data_ptr() != p.untyped_storage().data_ptr()
            assert torch.equal(master, p.float())
        # without offload a float32 parameter is its own master
        assert len(float32_masters(params)) == (0 if dtype == torch.float32 else len(params))


# ---- gradient checkpointing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ATTENTIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_checkpointed_layers_take_the_same_steps(make_tiny_model, calibration_ids, family, attn):
    """Each layer is recomputed from its inputs with the same kernels: equal up to float rounding (on this CPU
    bit for bit), alone and together with the offloaded optimizer."""
    model = make_tiny_model(family, attn)
    losses, weights = run_steps(model, calibration_ids, PLAIN)
    for plan in ({"gradient_checkpointing": True}, {"gradient_checkpointing": True, "offload_optimizer": True}):
        planned_losses, planned = run_steps(model, calibration_ids, replace(PLAIN, **plan))
        torch.testing.assert_close(planned_losses, losses)
        for name, weight in weights.items():
            torch.testing.assert_close(planned[name], weight, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpointing_recomputes_every_layer_and_restores_the_forwards(make_tiny_model, calibration_ids, family):
    """A Linear inside each layer runs once per micro-batch, and once more (the recomputation) with checkpointing.
    Module hooks stay outside the checkpoint: the layer's own hook fires once per micro-batch either way."""
    model = make_tiny_model(family)
    layers = decoder_layers(model)
    counts = {}

    def counter(key):
        def hook(module, args, output):
            counts[key] = counts.get(key, 0) + 1
        return hook

    for i, layer in enumerate(layers):
        first_linear(layer).register_forward_hook(counter(("linear", i)))
        layer.register_forward_hook(counter(("layer", i)))
    micro_batches = -(-calibration_ids.shape[0] // PLAIN.micro_batch) * PLAIN.steps
    for checkpointing, runs in ((False, 1), (True, 2)):
        counts.clear()
        gradient_steps(model, calibration_ids, replace(PLAIN, gradient_checkpointing=checkpointing))
        for i in range(len(layers)):
            assert counts[("linear", i)] == runs * micro_batches, (checkpointing, i)
            assert counts[("layer", i)] == micro_batches, (checkpointing, i)
        assert not any("forward" in layer.__dict__ for layer in layers)


def test_checkpointing_restores_the_forwards_after_an_error(make_tiny_model, calibration_ids):
    model = make_tiny_model("llama")
    layers = decoder_layers(model)
    own = layers[1].forward  # an instance-level forward (e.g. set by another tool) comes back as it was
    layers[1].forward = own
    with pytest.raises(IobsError, match="lower the learning rate"):
        gradient_steps(model, calibration_ids, StepConfig(optimizer="sgd", lr=1e30, steps=3, max_grad_norm=None,
                                                          gradient_checkpointing=True))
    with pytest.raises(RuntimeError, match="inside"):
        with checkpointed_layers(layers):
            assert all("forward" in layer.__dict__ for layer in layers)
            raise RuntimeError("inside")
    assert layers[1].__dict__["forward"] is own
    assert not any("forward" in layer.__dict__ for i, layer in enumerate(layers) if i != 1)


# ---- memory estimate -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_model_shape_counts_the_parameters_of_real_models(make_tiny_model, tiny_dims, family):
    model = make_tiny_model(family)
    shape = model_shape(TINY_CONFIGS[family](tiny_dims))
    assert shape.parameters == sum(p.numel() for p in model.parameters())  # OPT's tied lm_head counted once
    assert shape.trainable == sum(p.numel() for p in trainable_parameters(model).values())
    assert (shape.layers, shape.hidden, shape.mlp_width, shape.vocab) == \
        (tiny_dims.layers, tiny_dims.hidden, tiny_dims.ffn, tiny_dims.vocab_size)


def test_model_shape_of_a_published_model_costs_no_memory():
    """Llama-2-7B's published dimensions give its published parameter count, on the meta device."""
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32)
    shape = model_shape(config)
    assert shape.parameters == 6_738_415_616
    assert shape.trainable == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096)


SHAPE = ModelShape(parameters=1000, trainable=800, layers=4, hidden=16, mlp_width=64, vocab=100)
PLANNED = ("float32 master weights", "float32 master gradients", "optimizer state")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_plan_moves_items_between_device_and_host(dtype):
    b = dtype.itemsize
    config = StepConfig(optimizer="adam", micro_batch=2)
    plain = step_memory(SHAPE, dtype, 32, config)
    offloaded = step_memory(SHAPE, dtype, 32, replace(config, offload_optimizer=True))
    checkpointed = step_memory(SHAPE, dtype, 32, replace(config, gradient_checkpointing=True))
    device, host = plain.bytes_on("device"), plain.bytes_on("host")
    assert device["weights"] == 1000 * b and device["gradients"] == 800 * b and device["optimizer state"] == 6400
    masters = 0 if dtype == torch.float32 else 3200  # a float32 parameter is its own master unless offloaded
    assert device["float32 master weights"] == device["float32 master gradients"] == masters
    assert set(host.values()) == {0} and plain.peak("host") == 0

    moved_device, moved_host = offloaded.bytes_on("device"), offloaded.bytes_on("host")
    assert all(moved_device[name] == 0 for name in PLANNED)
    assert [moved_host[name] for name in PLANNED] == [3200, 3200, 6400]
    assert all(moved_device[n] == device[n] for n in device if n not in PLANNED)
    assert offloaded.peak("host") == 3200 + 3200 + 6400  # the update phase
    assert offloaded.peak("device") == sum(moved_device[n] for n in ("weights", "gradients", "activations", "logits"))

    kept = checkpointed.bytes_on("device")
    assert kept["activations"] < device["activations"] / 2 and checkpointed.peak("host") == 0
    assert all(kept[n] == device[n] for n in device if n != "activations")

    for memory in (plain, offloaded, checkpointed):
        by_phase = [sum(i.nbytes for i in memory.items if phase in i.phases) for phase in PHASES]
        assert memory.peak() == max(by_phase) <= memory.peak("device") + memory.peak("host")
    assert step_memory(SHAPE, dtype, 32, replace(config, optimizer="sgd")).bytes_on("device")["optimizer state"] == 0


def test_memory_estimate_arguments_are_checked():
    with pytest.raises(ConfigError, match="dtype"):
        step_memory(SHAPE, torch.int8, 32, StepConfig())
    with pytest.raises(ConfigError, match="seqlen"):
        step_memory(SHAPE, torch.float16, 0, StepConfig())
