"""The layer-wise driver on tiny random OPT, Llama and Phi: capture/replay, Hessians, pruning, saving, offload."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.cache_utils import Cache, DynamicCache

from iobs.errors import ConfigError, DataError, IobsError
from iobs.models.families import decoder_layers
from iobs.prune.capture import capture_first_layer_inputs, run_layer
from iobs.prune.driver import collect_hessians, prunable_linears, prune_model, walk_layers
from iobs.prune.save import load_masks, pack_mask, save_pruned_model, unpack_mask
from iobs.prune.solvers import solve
from tests.conftest import ATTENTIONS, FAMILIES


def layer_linears(model) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and any(m is x for layer in decoder_layers(model) for x in layer.modules())}


def layer_outputs_of_full_forward(model, ids):
    """(hidden_states from output_hidden_states, last decoder layer's output via a forward hook)."""
    seen = {}

    def record(module, args, output):
        seen["last"] = output if isinstance(output, torch.Tensor) else output[0]

    hook = decoder_layers(model)[-1].register_forward_hook(record)
    try:
        with torch.no_grad():
            hidden_states = model(input_ids=ids, output_hidden_states=True).hidden_states
    finally:
        hook.remove()
    return hidden_states, seen["last"]


@pytest.mark.parametrize("attn", ATTENTIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_replayed_layers_match_full_forward(make_tiny_model, calibration_ids, family, attn):
    """Each layer's replayed inputs equal a full forward's hidden states when every layer is run, changed, and
    re-run, as in pruning. A live KV cache in the replayed kwargs would make the re-run attend to the stale
    keys/values of the first run (silently, under SDPA); a wrong mask or rotary table would show as well."""
    model = make_tiny_model(family, attn)
    seen_inputs = []
    generator = torch.Generator().manual_seed(0)

    def visit(step):
        seen_inputs.append(step.inputs.hidden.clone())
        step.forward()  # the Hessian pass
        for linear in step.layer.modules():  # stand-in for pruning: change every weight before the re-run
            if isinstance(linear, nn.Linear):
                linear.weight.mul_(1 + 0.5 * torch.rand(linear.weight.shape, generator=generator))

    result = walk_layers(model, calibration_ids, visit, batch_size=4, progress=False)
    hidden_states, last = layer_outputs_of_full_forward(model, calibration_ids)  # of the changed model
    assert len(seen_inputs) == len(decoder_layers(model))
    for index, inputs in enumerate(seen_inputs):
        torch.testing.assert_close(inputs, hidden_states[index], rtol=1e-5, atol=1e-5,
                                   msg=f"inputs of layer {index}")
    torch.testing.assert_close(result.outputs.hidden, last, rtol=1e-5, atol=1e-5)


def _received_kwargs(model, layers, input_ids) -> dict:
    """The keyword arguments the model itself passes its first decoder layer (whatever this transformers names them)."""
    seen = {}

    def record(module, args, kwargs):
        seen.update(kwargs)

    handle = layers[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    finally:
        handle.remove()
    return seen


def test_capture_replays_exact_kwargs_without_cache(make_tiny_model, calibration_ids):
    model = make_tiny_model("llama", "eager")
    layers = decoder_layers(model)
    captured = capture_first_layer_inputs(model, layers, calibration_ids, batch_size=4,
                                          device=torch.device("cpu"), storage=torch.device("cpu"))
    assert [(s.start, s.stop) for s in captured.slices] == [(0, 4), (4, 6)]
    first, second = captured.calls
    # the same keywords the layer gets from the model, none dropped or renamed (transformers 4.x calls the cache
    # past_key_value(s), 5.x cache=); no live cache object among them
    received = _received_kwargs(model, layers, calibration_ids[:4])
    assert set(first.kwargs) == set(received) - {"hidden_states"}
    assert not any(isinstance(value, Cache) for value in first.kwargs.values())
    assert first.kwargs["attention_mask"].shape == (4, 1, 24, 24)  # eager: a materialised 4-D mask per batch
    cos, sin = first.kwargs["position_embeddings"]
    assert cos.shape[-2] == 24 and sin.shape == cos.shape
    assert second.kwargs["position_embeddings"][0] is cos  # identical per-batch tensors are stored once


class _LayerTakingAnything(nn.Linear):
    def forward(self, hidden, **extras):
        return super().forward(hidden)


class _CacheUnderAnyName(nn.Module):
    """A stand-in model that hands its first layer a live KV cache under a keyword no transformers release uses."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.layers = nn.ModuleList([_LayerTakingAnything(8, 8)])

    def forward(self, input_ids, use_cache=False):
        hidden = self.embed(input_ids)
        return self.layers[0](hidden, kv_store_v9=DynamicCache(), flag=use_cache)


def test_capture_drops_a_live_cache_whatever_its_keyword():
    model = _CacheUnderAnyName()
    captured = capture_first_layer_inputs(model, model.layers, torch.zeros(2, 3, dtype=torch.long), batch_size=2,
                                          device=torch.device("cpu"), storage=torch.device("cpu"))
    (call,) = captured.calls
    assert call.kwargs == {"kv_store_v9": None, "flag": False}


def test_tuple_and_tensor_layer_outputs_are_both_handled(make_tiny_model, calibration_ids):
    class TupleOutput(nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, *args, **kwargs):
            return (self.layer(*args, **kwargs), None)

    model = make_tiny_model("opt")
    layers = decoder_layers(model)
    cpu = torch.device("cpu")
    plain = capture_first_layer_inputs(model, layers, calibration_ids, batch_size=4, device=cpu, storage=cpu)
    wrapped = capture_first_layer_inputs(model, layers, calibration_ids, batch_size=4, device=cpu, storage=cpu)
    run_layer(layers[0], plain, cpu, write_outputs=True)
    run_layer(TupleOutput(layers[0]), wrapped, cpu, write_outputs=True)
    assert torch.equal(plain.hidden, wrapped.hidden)
    assert not torch.equal(plain.hidden, layer_outputs_of_full_forward(model, calibration_ids)[0][0])


@pytest.mark.parametrize("family", FAMILIES)
def test_hessians_from_hooks_equal_direct_computation(make_tiny_model, calibration_ids, family):
    """H = (2/N) sum over sequences of X^T X, N = number of sequences, for every Linear in every layer."""
    model = make_tiny_model(family)
    linears = layer_linears(model)
    inputs = {}

    def record(name):
        def hook(module, args, output):
            inputs[name] = args[0]  # returns None: a forward hook's return value would replace the output
        return hook

    handles = [lin.register_forward_hook(record(name)) for name, lin in linears.items()]
    with torch.no_grad():
        model(input_ids=calibration_ids)
    for h in handles:
        h.remove()

    hessians = collect_hessians(model, calibration_ids, batch_size=4)  # batches of 4 and 2 sequences
    assert set(hessians) == set(linears)
    n = calibration_ids.shape[0]
    for name, x in inputs.items():
        x = x.double().reshape(-1, x.shape[-1])  # OPT's MLP sees [N*L, d], the others [N, L, d]
        expected = 2.0 / n * x.T @ x
        torch.testing.assert_close(hessians[name].double(), expected, rtol=1e-4, atol=1e-5, msg=name)


def expected_magnitude(weight: torch.Tensor, spec: str) -> torch.Tensor:
    """Independent reference: zero the half of |W| that is smallest (whole layer), or 2 of every 4 per row."""
    if spec == "2:4":
        groups = weight.reshape(weight.shape[0], -1, 4)
        smallest = groups.abs().topk(2, dim=-1, largest=False).indices
        return groups.scatter(-1, smallest, 0.0).reshape(weight.shape)
    threshold = weight.abs().flatten().kthvalue(weight.numel() // 2).values
    return weight * (weight.abs() > threshold)


@pytest.mark.parametrize("spec", ["0.5", "2:4"])
@pytest.mark.parametrize("family", FAMILIES)
def test_magnitude_through_driver_equals_direct_pruning(make_tiny_model, calibration_ids, family, spec):
    model = make_tiny_model(family)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    report = prune_model(model, calibration_ids, "magnitude", spec, options={"scope": "layer"}, batch_size=4,
                         progress=False)
    linears = layer_linears(model)
    assert [r.name for r in report.linears] == list(linears)
    for name, param in model.named_parameters():
        module_name = name.rsplit(".", 1)[0]
        if module_name in linears and name.endswith(".weight"):
            assert torch.equal(param, expected_magnitude(before[name], spec)), name
        else:  # biases, norms, embeddings and lm_head are never touched
            assert torch.equal(param, before[name]), name


@pytest.mark.parametrize("spec", ["0.5", "2:4"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sparsegpt_reaches_target_sparsity_and_stays_finite(make_tiny_model, calibration_ids, family, spec):
    model = make_tiny_model(family)
    dense_logits = model(input_ids=calibration_ids).logits.detach()
    report = prune_model(model, calibration_ids, "sparsegpt", spec, batch_size=4, keep_masks=True, progress=False)

    linears = layer_linears(model)
    assert len(report.linears) == len(linears) and len(report.layer_seconds) == len(decoder_layers(model))
    for entry in report.linears:
        weight = linears[entry.name].weight
        assert entry.shape == tuple(weight.shape) and entry.seconds >= 0 and entry.loss > 0
        assert entry.sparsity == (weight == 0).float().mean().item() == 0.5, entry.name
        assert not weight[~report.masks[entry.name]].any()  # every pruned position is zero
        if spec == "2:4":
            assert ((weight.reshape(weight.shape[0], -1, 4) == 0).sum(-1) == 2).all(), entry.name
    assert report.total_sparsity == 0.5 and report.total_seconds > 0 and report.peak_memory_mb > 0
    assert set(report.to_dict()) >= {"linears", "layer_seconds", "total_sparsity", "total_seconds",
                                     "peak_memory_mb"} and "masks" not in report.to_dict()
    logits = model(input_ids=calibration_ids).logits.detach()
    assert torch.isfinite(logits).all() and not torch.allclose(logits, dense_logits)


def test_layers_see_the_pruned_outputs_of_earlier_layers(make_tiny_model, calibration_ids):
    """The Hessian each q_proj is pruned with comes from the already-pruned model, not from the dense one."""
    model = make_tiny_model("llama")
    dense = collect_hessians(model, calibration_ids, batch_size=4)
    handed_to_solver = []

    def recording_solver(method, weight, hessian, spec, **options):
        handed_to_solver.append(hessian.clone())
        return solve(method, weight, hessian, spec, **options)

    report = prune_model(model, calibration_ids, "sparsegpt", "0.5", batch_size=4, solver=recording_solver,
                         progress=False)
    used = {entry.name: h for entry, h in zip(report.linears, handed_to_solver, strict=True)}
    pruned = collect_hessians(model, calibration_ids, batch_size=4)
    for index in range(len(decoder_layers(model))):
        name = f"model.layers.{index}.self_attn.q_proj"
        torch.testing.assert_close(used[name], pruned[name], rtol=1e-5, atol=1e-6)
        if index > 0:  # layer 0 sees the embeddings either way
            assert not torch.allclose(used[name], dense[name], rtol=1e-3, atol=1e-4)


def test_offload_path_matches_in_place(make_tiny_model, calibration_ids):
    in_place, offloaded = make_tiny_model("phi"), make_tiny_model("phi")
    prune_model(in_place, calibration_ids, "sparsegpt", "0.5", batch_size=4, progress=False)
    prune_model(offloaded, calibration_ids, "sparsegpt", "0.5", batch_size=4, device="cpu",
                offload_activations=True, progress=False)
    for (name, a), (_, b) in zip(in_place.named_parameters(), offloaded.named_parameters()):
        assert torch.equal(a, b), name
        assert b.device.type == "cpu"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_layer_moved_to_cuda_matches_cpu(make_tiny_model, calibration_ids):
    on_cpu, moved = make_tiny_model("llama"), make_tiny_model("llama")
    prune_model(on_cpu, calibration_ids, "sparsegpt", "0.5", batch_size=4, progress=False)
    report = prune_model(moved, calibration_ids, "sparsegpt", "0.5", batch_size=4, device="cuda",
                         offload_activations=True, progress=False)
    assert report.peak_memory_kind == "cuda_max_allocated"
    for (name, a), (_, b) in zip(on_cpu.named_parameters(), moved.named_parameters()):
        assert b.device.type == "cpu", name  # only the current layer visits the GPU
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("family", ["opt", "llama"])  # OPT ties lm_head to the embeddings, this Llama does not
def test_saved_model_reloads_with_zeros_and_identical_logits(make_tiny_model, calibration_ids, tmp_path, family):
    model = make_tiny_model(family)
    report = prune_model(model, calibration_ids, "sparsegpt", "2:4", batch_size=4, keep_masks=True, progress=False)
    target = tmp_path / "pruned"
    save_pruned_model(model, target, masks=report.masks)
    save_pruned_model(model, target, masks=report.masks)  # replacing an existing directory works too
    assert (target / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]  # no staging or trash left behind

    reloaded = AutoModelForCausalLM.from_pretrained(target).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=calibration_ids).logits, model(input_ids=calibration_ids).logits)
    reloaded_params = dict(reloaded.named_parameters())
    for name, linear in layer_linears(model).items():
        assert torch.equal(reloaded_params[f"{name}.weight"] == 0, linear.weight == 0), name
    masks = load_masks(target / "masks.pt")
    assert set(masks) == set(report.masks)
    assert all(torch.equal(masks[n], report.masks[n]) for n in masks)


def test_mask_packing_round_trips_odd_sizes():
    generator = torch.Generator().manual_seed(0)
    for shape in [(1,), (3, 5), (7, 9, 2), (64, 64)]:
        mask = torch.rand(shape, generator=generator) > 0.5
        packed = pack_mask(mask)
        assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
        assert torch.equal(unpack_mask(packed, shape), mask)


def test_mask_file_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_masks(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="junk.pt"):
        load_masks(tmp_path / "junk.pt")


def test_reprune_sparse_half_precision_model_and_collect_masks(make_tiny_model, calibration_ids):
    """A later I-OBS round: prune an already-sparse bfloat16 model again; on_linear sees every result."""
    model = make_tiny_model("opt", dtype=torch.bfloat16)
    prune_model(model, calibration_ids, "sparsegpt", "0.5", batch_size=4, progress=False)
    seen = {}
    report = prune_model(model, calibration_ids, "sparsegpt", "0.5", batch_size=4, progress=False,
                         on_linear=lambda name, linear, result: seen.update({name: result.mask}))
    assert set(seen) == {r.name for r in report.linears}
    assert all(lin.weight.dtype == torch.bfloat16 for lin in layer_linears(model).values())
    assert report.total_sparsity >= 0.5  # bfloat16 rounding may add a few zeros, never remove one
    assert torch.isfinite(model(input_ids=calibration_ids).logits.float()).all()


def test_skip_patterns_and_bad_inputs(make_tiny_model, calibration_ids):
    model = make_tiny_model("opt")
    layer = decoder_layers(model)[0]
    names = prunable_linears(layer, "model.decoder.layers.0", skip=["*.self_attn.*"])
    assert sorted(names) == ["model.decoder.layers.0.fc1", "model.decoder.layers.0.fc2"]

    report = prune_model(model, calibration_ids, "magnitude", "0.5", skip=["*.fc?"], progress=False)
    assert {r.name.rsplit(".", 1)[1] for r in report.linears} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert not (decoder_layers(model)[0].fc1.weight == 0).any()

    with pytest.raises(ConfigError, match="skip patterns"):
        prune_model(model, calibration_ids, "magnitude", "0.5", skip=["*"], progress=False)
    with pytest.raises(DataError, match="int64"):
        prune_model(model, calibration_ids.float(), "magnitude", "0.5", progress=False)
    with pytest.raises(DataError, match="int64"):
        prune_model(model, calibration_ids[0], "magnitude", "0.5", progress=False)
    with pytest.raises(ConfigError, match="unknown pruning method"):
        prune_model(model, calibration_ids, "nonsense", "0.5", progress=False)


def test_prune_onto_fixed_masks(make_tiny_model, calibration_ids):
    """prune_model(fixed_masks=...) hands each Linear its own mask: given SparseGPT's own masks it reproduces
    SparseGPT exactly; a method that cannot take a mask, or a mask missing for a Linear, is refused in one line."""
    chosen = make_tiny_model("phi")
    report = prune_model(chosen, calibration_ids, "sparsegpt", "0.5", keep_masks=True, progress=False)
    again = make_tiny_model("phi")
    prune_model(again, calibration_ids, "sparsegpt", "0.5", fixed_masks=report.masks, progress=False)
    for (name, a), (_, b) in zip(chosen.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="cannot prune onto a given mask"):
        prune_model(make_tiny_model("phi"), calibration_ids, "magnitude", "0.5", fixed_masks=report.masks,
                    progress=False)
    partial = dict(list(report.masks.items())[1:])
    with pytest.raises(IobsError, match="no fixed mask for"):
        prune_model(make_tiny_model("phi"), calibration_ids, "sparsegpt", "0.5", fixed_masks=partial, progress=False)


# ---------------------------------------------------------------- issue 13: one Hessian per input, one pass

def old_flow_prune(model, ids, method, spec, batch_size=4):
    """The driver's flow before issue 13: one Hessian per Linear from a full forward, one solve per Linear."""
    from iobs.prune.hessian import hessian_hooks

    def visit(step):
        linears = prunable_linears(step.layer, step.name)
        with hessian_hooks(linears, step.device) as (accumulators, set_batch):
            step.forward(on_batch=set_batch)
        for name, linear in linears.items():
            result = solve(method, linear.weight.detach().float(), accumulators[name].hessian, spec)
            linear.weight.copy_(result.weight)

    walk_layers(model, ids, visit, batch_size=batch_size, progress=False)


@pytest.mark.parametrize("condition", ["dense", "already_sparse", "dead_inputs"])
@pytest.mark.parametrize("spec", ["0.5", "2:4"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_equals_the_old_flow_bit_for_bit(make_tiny_model, calibration_ids, family, spec, condition):
    """Shared Hessians, early stop and the group solve change no bit (at these widths the solver's auto route
    is the old explicit one), also on an already-sparse model (a later I-OBS round) and with dead inputs."""
    if condition == "dead_inputs" and family != "opt":
        pytest.skip("dead inputs are made through OPT's ReLU")
    new, old = make_tiny_model(family), make_tiny_model(family)
    for model in (new, old):
        if condition == "already_sparse":
            prune_model(model, calibration_ids, "magnitude", "0.5", progress=False)
        if condition == "dead_inputs":
            _kill_fc1_units(model, slice(0, 40))
    prune_model(new, calibration_ids, "sparsegpt", spec, batch_size=2, progress=False)
    old_flow_prune(old, calibration_ids, "sparsegpt", spec, batch_size=2)
    for (name, a), (_, b) in zip(new.named_parameters(), old.named_parameters()):
        assert torch.equal(a, b), name


EXPECTED_GROUPS = {  # what the module graph gives, by name suffix: Linears reading the same tensor
    "opt": [["q_proj", "k_proj", "v_proj"], ["out_proj"], ["fc1"], ["fc2"]],
    "llama": [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]],
    "phi": [["q_proj", "k_proj", "v_proj", "fc1"], ["dense"], ["fc2"]],  # parallel attention and MLP
}


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_hessians_group_shared_inputs_and_stop_early(make_tiny_model, calibration_ids, family):
    from iobs.prune.driver import layer_hessians_of
    from iobs.prune.driver import LayerStep
    from iobs.prune.hessian import hessian_hooks

    model = make_tiny_model(family)
    layer = decoder_layers(model)[0]
    cpu = torch.device("cpu")
    inputs = capture_first_layer_inputs(model, decoder_layers(model), calibration_ids, batch_size=2, device=cpu,
                                        storage=cpu)  # 3 batches
    linears = prunable_linears(layer, "layer")
    last = list(linears.values())[-1] if family != "phi" else linears["layer.mlp.fc2"]
    calls = []
    counter = last.register_forward_hook(lambda *_: calls.append(1))
    try:
        grouped = layer_hessians_of(LayerStep(0, "layer", layer, inputs, cpu), linears)
    finally:
        counter.remove()
    assert [[n.rsplit(".", 1)[1] for n in g] for g in grouped.groups] == EXPECTED_GROUPS[family]
    assert len(calls) == 1  # only the first batch runs the last Linear; later ones stop at its input
    with hessian_hooks(linears, cpu) as (reference, set_batch):
        run_layer(layer, inputs, cpu, write_outputs=False, on_batch=set_batch)
    for group in grouped.groups:
        assert all(grouped.hessian(n) is grouped.hessian(group[0]) for n in group)  # one tensor per group
        for name in group:
            assert torch.equal(grouped.hessian(name), reference[name].hessian), name


def test_symmetric_accumulation_equals_the_full_product():
    from iobs.prune.hessian import HessianAccumulator

    g = torch.Generator().manual_seed(5)
    symmetric, full = HessianAccumulator(900), HessianAccumulator(900, symmetric=False)  # 4 column blocks
    assert len(symmetric._bounds) == 4
    for sequences in (2, 3):
        x = torch.randn(sequences, 40, 900, generator=g)
        symmetric.add(x, sequences)
        full.add(x, sequences)
    h = symmetric.hessian
    assert torch.equal(h, h.T)
    # the same sums of the same products; MKL may still pick different kernels for the narrower products
    # (bit-identical at OPT-125M sizes, see benchmarks/bench_engine.py), so float32 rounding is allowed
    assert float((h - full.hessian).abs().max()) <= 1e-6 * float(full.hessian.abs().max())


def _kill_fc1_units(model, units):
    """Make fc2's inputs `units` of every OPT layer dead: ReLU(fc1 x + b) with b = -1e4 is 0 for all tokens."""
    for layer in decoder_layers(model):
        layer.fc1.bias.data[units] = -1e4


@pytest.mark.parametrize("units, expect_all", [(slice(0, 96), False), (slice(None), True)])
def test_dead_inputs_are_reported_and_logged(make_tiny_model, calibration_ids, caplog, units, expect_all):
    """Issue 10: SparseGPT zeroes the weights of inputs never active in calibration, which takes the layer
    beyond its target when more than the target fraction is dead (to 100% when all are): said in the log,
    naming the Linear, and in the metrics (dead_inputs, and sparsity = the achieved fraction of zeros)."""
    import logging

    model = make_tiny_model("opt")
    _kill_fc1_units(model, units)
    with caplog.at_level(logging.WARNING, logger="iobs"):
        report = prune_model(model, calibration_ids, "sparsegpt", "0.5", batch_size=4, progress=False)
    fc2 = [r for r in report.linears if r.name.endswith(".fc2")]
    dead = 128 if expect_all else 96
    assert all(r.dead_inputs == dead for r in fc2)
    expected = dead / 128  # the zeroed dead weights have saliency 0, so they are the first to be "pruned"
    assert all(r.sparsity == pytest.approx(expected, abs=1e-3) for r in fc2)
    assert all(r.dead_inputs == 0 for r in report.linears if not r.name.endswith(".fc2"))
    messages = [r.getMessage() for r in caplog.records if ".fc2" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(messages) == len(fc2) and all("never active" in m for m in messages)
    assert all(("100%" in m) == expect_all for m in messages)
    record = report.to_dict()
    assert record["linears"][-1]["dead_inputs"] == dead
    assert set(record["phase_seconds"]) == {"hessians", "solves", "rerun"}
    assert record["phase_seconds"]["rerun"][-1] == pytest.approx(0.0, abs=1e-3)  # the last re-run is skipped
