"""SparseGPT through the layer-wise driver on a randomly initialised OPT-125M-shaped model; prints a table.

    .venv/bin/python benchmarks/bench_sparsegpt.py                      # the protocol: 128 x 2048 tokens, 12 layers
    .venv/bin/python benchmarks/bench_sparsegpt.py --samples 16 --seqlen 512 --threads 1   # a few minutes on CPU

Shapes follow OPT-125M (hidden 768, ffn 3072, 12 heads, 12 layers); the vocabulary is reduced (--vocab) because
the embedding and lm_head are never pruned. Weights and tokens are random: the timing of a pass does not depend on
them, its perplexity would be meaningless.

Reported per decoder layer: wall seconds (Hessian pass + solves + re-run), the solver's share and its GFLOP/s,
beside a plain torch matmul's GFLOP/s measured in the same run with the same thread count.

Solver FLOP count for one Linear W [r, c] (nominal: the arithmetic of the algorithm, not of a given kernel):
    the upper Cholesky factor of H^-1 (see iobs.prune.solvers.common.upper_inverse_factor): for in <= 1024 the
        explicit route cholesky(H) c^3/3 + cholesky_inverse 2c^3/3 + cholesky(H^-1, upper) c^3/3 = 4c^3/3, above
        it the triangular one, cholesky c^3/3 + triangular inverse c^3/3 = 2c^3/3
    column updates: every column j spreads its error over the c-1-j later columns of all r rows, 2 flops each,
        within the block (column by column) or lazily (one matmul per block): sum_j 2r(c-1-j) = r c (c-1)
    total 4c^3/3 (or 2c^3/3) + r c (c-1); mask selection and the per-column error (O(r c)) are left out.
The forward passes (Hessian accumulation, 2 T c^2 per Linear for T tokens, included) are not counted.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import defaultdict

import torch

from iobs.models.families import TinyDims, build_tiny_model
from iobs.prune.driver import prune_model
from iobs.prune.solvers import solve
from iobs.atomic import atomic_write_json
from iobs.provenance import package_versions
from iobs.prune.solvers.common import AUTO_EXPLICIT_MAX_COLS


def sparsegpt_flops(rows: int, cols: int) -> float:
    factor = 4 * cols**3 / 3 if cols <= AUTO_EXPLICIT_MAX_COLS else 2 * cols**3 / 3
    return factor + rows * cols * (cols - 1)


def matmul_gflops(m: int, k: int, n: int, device: torch.device, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of a float32 [m, k] @ [k, n] matmul."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def inverse_gflops(cols: int, device: torch.device, repeats: int = 3) -> float:
    """Best-of GFLOP/s of the plain torch calls behind the 4c^3/3 term: cholesky, cholesky_inverse, cholesky."""
    x = torch.randn(cols, 2 * cols, device=device)
    h = x @ x.T / cols + torch.eye(cols, device=device)  # well-conditioned SPD
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 4 * cols**3 / 3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=128, help="calibration sequences (protocol: 128)")
    p.add_argument("--seqlen", type=int, default=2048, help="tokens per sequence (protocol: 2048)")
    p.add_argument("--layers", type=int, default=12, help="decoder layers (OPT-125M: 12)")
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--ffn", type=int, default=3072)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=4096, help="reduced from OPT's 50272: never pruned")
    p.add_argument("--sparsity", default="0.5", help="'0.5' or N:M such as '2:4'")
    p.add_argument("--blocksize", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4, help="sequences per forward mini-batch")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--offload", action="store_true", help="keep captured activations on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dims = TinyDims(vocab_size=args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads,
                    ffn=args.ffn, max_positions=args.seqlen)
    model = build_tiny_model("opt", dims, seed=args.seed)
    ids = torch.randint(0, args.vocab, (args.samples, args.seqlen),
                        generator=torch.Generator().manual_seed(args.seed))

    solves = []  # (rows, cols, seconds) per solve, in the order of report.linears

    def timed_solve(method, weight, hessian, spec, **options):
        _sync(device)
        start = time.perf_counter()
        result = solve(method, weight, hessian, spec, **options)
        _sync(device)
        solves.append((weight.shape[0], weight.shape[1], time.perf_counter() - start))
        return result

    report = prune_model(model, ids, "sparsegpt", args.sparsity, options={"blocksize": args.blocksize},
                         batch_size=args.batch_size, device=device, offload_activations=args.offload,
                         solver=timed_solve, progress=False)
    square = matmul_gflops(2048, 2048, 2048, device)
    lazy_shape = matmul_gflops(args.ffn, args.blocksize, args.ffn, device)  # fc2's lazy update [r, B] @ [B, c]
    inverse = {cols: inverse_gflops(cols, device) for cols in sorted({args.hidden, args.ffn})}

    per_layer = defaultdict(lambda: [0.0, 0.0])  # layer -> [solver seconds, flops]
    per_kind = defaultdict(lambda: [0, 0.0, 0.0])  # linear name suffix -> [count, seconds, flops]
    for entry, (rows, cols, seconds) in zip(report.linears, solves, strict=True):
        layer = int(entry.name.split(".layers.")[1].split(".")[0])
        kind = entry.name.rsplit(".", 1)[1]
        flops = sparsegpt_flops(rows, cols)
        per_layer[layer][0] += seconds
        per_layer[layer][1] += flops
        per_kind[kind][0] += 1
        per_kind[kind][1] += seconds
        per_kind[kind][2] += flops

    print(f"SparseGPT {args.sparsity}, OPT-125M shape ({args.layers} layers, hidden {args.hidden}, ffn {args.ffn}), "
          f"calibration {args.samples} x {args.seqlen} tokens, batch {args.batch_size}, {args.threads} thread(s), "
          f"{device}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'layer':>5} {'seconds':>8} {'solver s':>9} {'forward s':>9} {'solver GFLOP':>12} {'GFLOP/s':>8}")
    for layer, seconds in enumerate(report.layer_seconds):
        solver_s, flops = per_layer[layer]
        print(f"{layer:>5} {seconds:>8.2f} {solver_s:>9.2f} {seconds - solver_s:>9.2f} {flops / 1e9:>12.2f} "
              f"{flops / solver_s / 1e9:>8.1f}")
    print(f"\n{'linear':>8} {'shape':>11} {'mean s':>7} {'GFLOP':>7} {'GFLOP/s':>8}")
    for kind, (count, seconds, flops) in per_kind.items():
        rows, cols = next(e.shape for e in report.linears if e.name.endswith("." + kind))
        print(f"{kind:>8} {f'{rows}x{cols}':>11} {seconds / count:>7.3f} {flops / count / 1e9:>7.2f} "
              f"{flops / seconds / 1e9:>8.1f}")
    solver_seconds = sum(s for *_, s in solves)
    solver_flops = sum(f for _, f in per_layer.values())
    mean_layer = sum(report.layer_seconds) / len(report.layer_seconds)
    print(f"\ncapture {report.capture_seconds:.2f} s, mean {mean_layer:.2f} s per layer, "
          f"total {report.total_seconds:.1f} s (solver {solver_seconds:.1f} s = "
          f"{solver_flops / solver_seconds / 1e9:.1f} GFLOP/s)")
    print(f"torch.mm float32 GFLOP/s: 2048^3 {square:.1f}, [{args.ffn}x{args.blocksize}]@[{args.blocksize}x{args.ffn}] "
          f"{lazy_shape:.1f}")
    print("torch cholesky+cholesky_inverse+cholesky GFLOP/s (4c^3/3): "
          + ", ".join(f"c={cols} {g:.1f}" for cols, g in inverse.items()))
    print(f"peak memory {report.peak_memory_mb:.0f} MiB ({report.peak_memory_kind}), achieved sparsity "
          f"{report.total_sparsity:.4f}")

    results = {"args": vars(args), "layer_seconds": report.layer_seconds, "capture_seconds": report.capture_seconds,
               "total_seconds": report.total_seconds, "solver_seconds": solver_seconds,
               "solver_gflops_per_s": solver_flops / solver_seconds / 1e9, "matmul_gflops_per_s_2048": square,
               "matmul_gflops_per_s_lazy_update_shape": lazy_shape,
               "inverse_gflops_per_s": {str(c): g for c, g in inverse.items()}, "peak_memory_mb": report.peak_memory_mb,
               "peak_memory_kind": report.peak_memory_kind, "total_sparsity": report.total_sparsity,
               "versions": package_versions()}
    if args.json:
        atomic_write_json(args.json, results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
