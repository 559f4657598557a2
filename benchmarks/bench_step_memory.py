"""Memory of the I-OBS gradient step under each memory plan: the estimate for the paper's models, and a measurement.

    .venv/bin/python benchmarks/bench_step_memory.py                 # both parts (the measurement: minutes on 1 core)
    .venv/bin/python benchmarks/bench_step_memory.py --no-measure    # the estimate tables only (a second)
    .venv/bin/python benchmarks/bench_step_memory.py --device cuda --models llama-2-7b-2layers --seqlen 2048 \
        --sequences 1 --micro-batch 1       # a GPU: a 7B layer's memory plan, against the estimate

Plans: none, checkpointing (StepConfig.gradient_checkpointing), offload (StepConfig.offload_optimizer), both.

(a) Estimate (iobs.iterative.memory) for OPT-125M, Phi-1.5, Llama-2-7B (float16) and Llama-3-8B (bfloat16) at
    micro_batch 1 x 2048 tokens, SGD and Adam. The configs carry the published dimensions (written out below; no
    hub access) and are built on the meta device, so parameter counts are exact.
(b) Measurement on this machine's CPU: every plan runs gradient_steps in a fresh interpreter on a random model of
    OPT-125M's shape, and of a Llama of the same width and depth. Reported: seconds per step and the peak RSS
    increase over the loaded model (ru_maxrss, its high-water mark reset once the model is built), with glibc's
    default malloc and with freed blocks returned to the system (MALLOC_MMAP_THRESHOLD_=65536), next to the
    estimate. On a CPU the compute device is the host, so the comparable estimate is the peak of device and host
    items together, less the weights that were already resident.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig, PhiConfig

from iobs.iterative.memory import model_shape, step_memory
from iobs.iterative.steps import StepConfig, gradient_steps

# Published dimensions (the models' config.json on the hub).
MODELS = {
    "opt-125m": (torch.float16, lambda: OPTConfig(
        vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
        word_embed_proj_dim=768, max_position_embeddings=2048)),
    "phi-1_5": (torch.float16, lambda: PhiConfig(
        vocab_size=51200, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
        partial_rotary_factor=0.5, max_position_embeddings=2048)),
    "llama-2-7b": (torch.float16, lambda: LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096)),
    "llama-3-8b": (torch.bfloat16, lambda: LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0)),
}
PLANS = {
    "none": {},
    "checkpointing": {"gradient_checkpointing": True},
    "offload": {"offload_optimizer": True},
    "both": {"gradient_checkpointing": True, "offload_optimizer": True},
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Measured: OPT-125M, and a Llama of the same width and depth (SwiGLU MLP, RMSNorm, rotary; 32k vocabulary).
MEASURED = {
    "opt-125m": MODELS["opt-125m"][1],
    "llama-small": lambda: LlamaConfig(
        vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
        num_key_value_heads=12, max_position_embeddings=2048),
    # a GPU (--device cuda): the memory plan of Llama-2-7B's layers, two of them, embeddings and head included
    "llama-2-7b-2layers": lambda: LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=2, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096),
}


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f}"


def estimate_tables(seqlen: int, micro_batch: int) -> None:
    print(f"== Estimate: micro_batch {micro_batch} x seqlen {seqlen}; GB = 1e9 bytes; device / host peaks ==")
    print(f"{'model':<11} {'dtype':<9} {'params':>7} {'trained':>7} {'optim':<5} "
          + " ".join(f"{plan:>15}" for plan in PLANS))
    shapes = {}
    for name, (dtype, config) in MODELS.items():
        shape = shapes[name] = model_shape(config())
        for optimizer in ("sgd", "adam"):
            cells = []
            for plan in PLANS.values():
                memory = step_memory(shape, dtype, seqlen, StepConfig(optimizer=optimizer, micro_batch=micro_batch,
                                                                       **plan))
                cells.append(f"{gb(memory.peak('device'))} / {gb(memory.peak('host'))}")
            print(f"{name:<11} {str(dtype).removeprefix('torch.'):<9} {shape.parameters / 1e9:>6.3f}B "
                  f"{shape.trainable / 1e9:>6.3f}B {optimizer:<5} " + " ".join(f"{c:>15}" for c in cells))
    for name in ("llama-2-7b", "llama-3-8b"):
        dtype = MODELS[name][0]
        print(f"\n-- {name} ({str(dtype).removeprefix('torch.')}), SGD: item GB on device / host per plan "
              "(Adam adds its moments where the masters are) --")
        memories = {plan: step_memory(shapes[name], dtype, seqlen, StepConfig(optimizer="sgd", micro_batch=micro_batch,
                                                                             **flags))
                    for plan, flags in PLANS.items()}
        print(f"{'item':<26} " + " ".join(f"{plan:>15}" for plan in PLANS))
        for i, item in enumerate(memories["none"].items):
            cells = [f"{gb(m.bytes_on('device')[item.name])} / {gb(m.bytes_on('host')[item.name])}"
                     for m in memories.values()]
            print(f"{item.name:<26} " + " ".join(f"{c:>15}" for c in cells))
        print(f"{'peak (over the phases)':<26} "
              + " ".join(f"{gb(m.peak('device')) + ' / ' + gb(m.peak('host')):>15}" for m in memories.values()))
        adam = step_memory(shapes[name], dtype, seqlen, StepConfig(optimizer="adam", micro_batch=micro_batch))
        print(f"{'Adam moments':<26} {gb(adam.bytes_on('device')['optimizer state']):>15}")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> None:
    """One plan in this (fresh) interpreter; prints one JSON line."""
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(MEASURED[args.model](), dtype=dtype).eval().to(args.device)
    ids = torch.randint(0, model.config.vocab_size, (args.sequences, args.seqlen), generator=torch.Generator())
    config = StepConfig(optimizer=args.optimizer, lr=1e-5, steps=args.steps, micro_batch=args.micro_batch,
                        **PLANS[args.child])
    on_gpu = args.device.startswith("cuda")
    if on_gpu:  # the device's own high-water mark, from the loaded model on
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before, reset = torch.cuda.memory_allocated(), True
    else:
        try:  # reset the high-water mark (ru_maxrss) to the current RSS: model building must not count
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            reset = True
        except OSError:
            reset = False
        before = _rss_bytes() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    losses = gradient_steps(model, ids, config)
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if on_gpu:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"increase": peak - before, "seconds_per_step": seconds / args.steps, "reset": reset,
                      "losses": losses}))


def measure(args, model: str) -> None:
    dtype = DTYPES[args.dtype]
    shape = model_shape(MEASURED[model]())
    where = "this CPU" if args.device == "cpu" else args.device
    print(f"\n== Measured on {where} ({args.threads} thread): random {model}-shaped model in {args.dtype}, "
          f"{args.sequences} x {args.seqlen} tokens, micro_batch {args.micro_batch}, {args.steps} steps, "
          f"{args.optimizer} ==")
    print(f"{'plan':<14} {'s/step':>7} {'RSS increase GB':>16} {'(freed returned)':>16} {'estimate GB':>12} "
          f"{'(device':>8} {'host)':>6}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for plan, flags in PLANS.items():
        command = [sys.executable, __file__, "--child", plan, "--models", model, "--dtype", args.dtype,
                   "--optimizer", args.optimizer, "--sequences", str(args.sequences), "--seqlen", str(args.seqlen),
                   "--steps", str(args.steps), "--micro-batch", str(args.micro_batch), "--threads", str(args.threads),
                   "--device", args.device]
        results = []
        # glibc keeps freed blocks below its (adaptive) mmap threshold resident; with a fixed 64 KiB threshold every
        # tensor is its own mapping, returned on free, so the second run's RSS follows the live tensors. On a GPU
        # both runs read the device's allocator (the same figure twice).
        for extra in ({}, {"MALLOC_MMAP_THRESHOLD_": "65536"}):
            done = subprocess.run(command, capture_output=True, text=True, env={**env, **extra}, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        memory = step_memory(shape, dtype, args.seqlen,
                             StepConfig(optimizer=args.optimizer, micro_batch=args.micro_batch, **flags))
        weights = memory.bytes_on("device")["weights"]
        note = "" if all(r["reset"] for r in results) else "  (high-water mark not reset: lower bound)"
        print(f"{plan:<14} {results[0]['seconds_per_step']:>7.1f} {gb(results[0]['increase']):>16} "
              f"{gb(results[1]['increase']):>16} {gb(memory.peak() - weights):>12} {gb(memory.peak('device')):>8} "
              f"{gb(memory.peak('host')):>6}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqlen-estimate", type=int, default=2048, help="tokens per sequence of the estimate")
    parser.add_argument("--no-measure", action="store_true", help="print the estimate tables only")
    parser.add_argument("--models", nargs="+", choices=sorted(MEASURED), default=["llama-small", "opt-125m"],
                        help="models to measure")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="measured models' dtype")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="measured steps' optimizer")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per sequence of the measurement")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the measured steps run (cuda: the device's peak)")
    parser.add_argument("--child", choices=sorted(PLANS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.model = args.models[0]
        child(args)
        return
    estimate_tables(args.seqlen_estimate, micro_batch=1)
    if not args.no_measure:
        for model in args.models:
            measure(args, model)


if __name__ == "__main__":
    main()
