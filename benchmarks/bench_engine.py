"""The layer-wise engine against its pre-issue-13 self (issue 13): solver, decoder layer, I-OBS round phases.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_engine.py                  # all parts, one thread
    PYTHONPATH=src .venv/bin/python benchmarks/bench_engine.py --parts solve --repeats 5
    PYTHONPATH=src .venv/bin/python benchmarks/bench_engine.py --parts solve --device cuda \
        --shapes 768x768,3072x768,768x3072,4096x4096,11008x4096,4096x11008     # a GPU: OPT-125M and Llama-2-7B

Every ratio is new / baseline measured in the same run: baseline and new calls are interleaved and each side's
median over --repeats is taken, so machine load (a shared CPU) affects both alike.

solve: OPT-125M shapes (out x in) 768x768, 3072x768, 768x3072; X = randn(tokens, in) @ M with a random mixing
    matrix M (correlated inputs), H = (2/N) X^T X for N = 32 sequences; weights randn * 0.02. Baseline: the frozen
    copy of the old solver in benchmarks/_baseline_sparsegpt.py. New: sparsegpt_prune with its default
    (inverse="auto": "explicit" for in <= 1024, "triangular" above), and with each route forced; "explicit" must
    be bit-identical to the baseline.
    GFLOP/s of a solve, nominal flops of the algorithm that ran (not of a kernel):
      factorization  old/explicit: cholesky c^3/3 + cholesky_inverse 2c^3/3 + cholesky c^3/3 = 4c^3/3
                     triangular:   L^-1 by one recursion (triangular.inverse_cholesky_in_place) = 2c^3/3,
                                   the flops of a cholesky plus a triangular inverse
      column updates r c (c-1) (every column spreads its error over the later columns of all r rows, 2 flops
                     each, in-block or lazily); old only: the loss product 2 r c^2.
    compared with a float32 torch.mm [2048, 2048] @ [2048, 2048] timed in the same run, alternating with the
    solves; both sides are the median of the same number of samples.
layer: one decoder layer of random OPT-125M width (hidden 768, ffn 3072) and a Llama layer of the same width,
    calibration --samples x --seqlen tokens; the old flow (six Hessians, full forward, one solve per Linear,
    re-run) against prune_model's flow, with the default inverse ("auto") and with "explicit" (masks and layer
    outputs identical to the old flow's); masks compared. Phases printed for all three.
rounds: one I-OBS round (iobs.iterative.rounds.run_round) on a small random OPT, split into projection (Hessian
    pass, solves, re-run), the bookkeeping between (pre-projection copy, support, dynamics), steps, and I/O
    (saving the sparse model as the round job does).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from iobs.prune.solvers.common import AUTO_EXPLICIT_MAX_COLS, upper_inverse_factor
from iobs.prune.solvers.sparsegpt import sparsegpt_prune
from iobs.targets import SparsitySpec

HERE = Path(__file__).resolve().parent


def _load_local(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


baseline = _load_local("_baseline_sparsegpt")

SHAPES = [(768, 768), (3072, 768), (768, 3072)]
PATTERNS = ["0.5", "2:4"]


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # CUDA calls return before the kernels finish


def timed(fn, *args, **kwargs):
    _synchronize()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    _synchronize()
    return time.perf_counter() - start, out


def interleaved(calls: dict, repeats: int) -> tuple[dict, dict]:
    """Run every call once per repeat, in turn; return (median seconds by name, last output by name)."""
    seconds = {name: [] for name in calls}
    outputs = {}
    for _ in range(repeats):
        for name, fn in calls.items():
            t, outputs[name] = timed(fn)
            seconds[name].append(t)
    return {name: statistics.median(ts) for name, ts in seconds.items()}, outputs


def matmul_gflops(size: int = 2048, device: str = "cpu") -> float:
    """GFLOP/s of one float32 [size, size] @ [size, size] (after a warm-up): one sample, like one solve."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    torch.mm(a, b, out=out)
    return 2 * size**3 / timed(torch.mm, a, b, out=out)[0] / 1e9


def solve_flops(rows: int, cols: int, inverse: str) -> float:
    if inverse == "auto":
        inverse = "explicit" if cols <= AUTO_EXPLICIT_MAX_COLS else "triangular"
    factor = (4 if inverse in ("explicit", "old") else 2) * cols**3 / 3
    loss = 2 * rows * cols**2 if inverse == "old" else 0
    return factor + rows * cols * (cols - 1) + loss


def layer_inputs(rows: int, cols: int, tokens: int, sequences: int, seed: int,
                 device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [rows, cols], H [cols, cols]) float32 on `device`, made there (a 7B shape is teraflops on a CPU)."""
    g = torch.Generator(device=device).manual_seed(seed)
    mixing = torch.randn(cols, cols, generator=g, device=device) / cols**0.5
    x = torch.randn(tokens, cols, generator=g, device=device) @ mixing
    hessian = torch.zeros(cols, cols, device=device).addmm_(x.T, x, alpha=2.0 / sequences)
    return torch.randn(rows, cols, generator=g, device=device) * 0.02, hessian


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(n) for n in item.split("x")) for item in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise SystemExit(f"bench_engine: --shapes {text!r}: give out x in pairs such as 768x768,768x3072")
    return shapes


def compare(new, old) -> dict:
    """Numerics of a new SolveResult against the baseline's (weight, mask, loss)."""
    weight, mask, loss = old
    return {"mask_differences": int((new.mask != mask).sum()), "numel": mask.numel(),
            "max_abs_weight_difference": float((new.weight - weight).abs().max()),
            "bit_identical": bool(torch.equal(new.weight, weight) and torch.equal(new.mask, mask)),
            "loss_relative_difference": abs(new.loss - loss) / loss}


def bench_solve(args) -> dict:
    print(f"\n== solve on {args.device}: shapes {args.shapes}, {args.samples} x {args.seqlen} tokens, blocksize 128, "
          f"median of {args.repeats}, ratio = new / baseline in the same run")
    print(f"{'shape':>9} {'pattern':>7} {'base s':>7} {'new s':>7} {'ratio':>6} {'tri':>5} {'expl':>5} "
          f"{'masks differ':>15} {'max|dW|':>8} {'loss rel':>8} {'tri masks differ':>16} {'explicit==base':>14}")
    results = []
    shapes = parse_shapes(args.shapes)
    for rows, cols in shapes:
        weight, hessian = layer_inputs(rows, cols, args.samples * args.seqlen, args.samples, args.seed, args.device)
        for pattern in PATTERNS:
            spec = SparsitySpec.parse(pattern)
            medians, out = interleaved({
                "baseline": lambda: baseline.baseline_sparsegpt(weight, hessian, spec),
                "new": lambda: sparsegpt_prune(weight, hessian, spec),
                "triangular": lambda: sparsegpt_prune(weight, hessian, spec, inverse="triangular"),
                "explicit": lambda: sparsegpt_prune(weight, hessian, spec, inverse="explicit"),
            }, args.repeats)
            numerics = {name: compare(out[name], out["baseline"]) for name in ("new", "triangular", "explicit")}
            ratios = {name: medians[name] / medians["baseline"] for name in ("new", "triangular", "explicit")}
            results.append({"shape": [rows, cols], "pattern": pattern, "seconds": medians, "ratios": ratios,
                            "numerics_vs_baseline": numerics})
            new = numerics["new"]
            print(f"{f'{rows}x{cols}':>9} {pattern:>7} {medians['baseline']:>7.3f} {medians['new']:>7.3f} "
                  f"{ratios['new']:>6.2f} {ratios['triangular']:>5.2f} {ratios['explicit']:>5.2f} "
                  f"{new['mask_differences']:>7}/{new['numel']:<7} {new['max_abs_weight_difference']:>8.1e} "
                  f"{new['loss_relative_difference']:>8.1e} {numerics['triangular']['mask_differences']:>16} "
                  f"{str(numerics['explicit']['bit_identical']):>14}")
    # GFLOP/s on the largest shape, beside a matmul in the same run
    rows, cols = max(shapes, key=lambda s: s[0] * s[1] ** 2)
    weight, hessian = layer_inputs(rows, cols, args.samples * args.seqlen, args.samples, args.seed, args.device)
    spec = SparsitySpec.parse("0.5")
    gemm, rates = [], {"new": [], "explicit": [], "old": []}
    repeats = max(args.repeats, 5)
    factor_seconds = {"triangular": [], "explicit": []}
    for _ in range(repeats):
        gemm.append(matmul_gflops(device=args.device))
        rates["new"].append(solve_flops(rows, cols, "auto") / timed(sparsegpt_prune, weight, hessian, spec)[0])
        rates["explicit"].append(solve_flops(rows, cols, "explicit")
                                 / timed(sparsegpt_prune, weight, hessian, spec, inverse="explicit")[0])
        rates["old"].append(solve_flops(rows, cols, "old")
                            / timed(baseline.baseline_sparsegpt, weight, hessian, spec)[0])
        for method in factor_seconds:
            factor_seconds[method].append(timed(upper_inverse_factor, hessian, 0.01, method=method)[0])
    mm = statistics.median(gemm)
    gflops = {k: statistics.median(v) / 1e9 for k, v in rates.items()}
    # the old algorithm's flop count over the new time: how fast the same job gets done, not a hardware rate
    gflops["new_in_old_flops"] = gflops["new"] * solve_flops(rows, cols, "old") / solve_flops(rows, cols, "auto")
    print(f"{rows}x{cols} 0.5 GFLOP/s (nominal flops of the algorithm that ran): new {gflops['new']:.1f} "
          f"({gflops['new'] / mm:.0%} of matmul), explicit {gflops['explicit']:.1f} ({gflops['explicit'] / mm:.0%}), "
          f"baseline {gflops['old']:.1f} ({gflops['old'] / mm:.0%}); torch.mm 2048^3 {mm:.1f} GFLOP/s; "
          f"new counted in the baseline's flops {gflops['new_in_old_flops']:.1f} "
          f"({gflops['new_in_old_flops'] / mm:.0%})")
    print(f"  factorization of H [{cols}, {cols}]: triangular {statistics.median(factor_seconds['triangular']):.3f} s, "
          f"explicit {statistics.median(factor_seconds['explicit']):.3f} s")
    return {"solves": results, "gflops": gflops, "matmul_gflops": mm, "largest": f"{rows}x{cols}",
            "factor_seconds": {k: statistics.median(v) for k, v in factor_seconds.items()}}


def new_prune_layer(layer, inputs, device, spec, **options) -> dict:
    """The same layer through the new driver pieces (what prune_model runs per layer), phases timed."""
    from iobs.prune.capture import run_layer
    from iobs.prune.driver import LayerStep, layer_hessians_of, prune_layer, prunable_linears

    seconds = {}
    with torch.no_grad():
        start = time.perf_counter()
        lh = layer_hessians_of(LayerStep(0, "", layer, inputs, device), prunable_linears(layer, ""))
        seconds["hessians"] = time.perf_counter() - start
        start = time.perf_counter()
        masks = {}
        for name, linear, result, _, _ in prune_layer(lh, "sparsegpt", spec, options=options):
            linear.weight.copy_(result.weight)
            masks[name.lstrip(".")] = result.mask
        seconds["solves"] = time.perf_counter() - start
        start = time.perf_counter()
        run_layer(layer, inputs, device, write_outputs=True)
        seconds["rerun"] = time.perf_counter() - start
    return {"masks": masks, "seconds": seconds, "groups": [[n.lstrip(".") for n in g] for g in lh.groups]}


def bench_layer(args) -> dict:
    import copy

    from iobs.models.families import TinyDims, build_tiny_model, decoder_layers
    from iobs.prune.capture import capture_first_layer_inputs

    print(f"\n== decoder layer: hidden 768, ffn 3072, 12 heads, {args.samples} x {args.seqlen} tokens, batches of "
          f"{args.batch_size}, random weights, {args.layer_pattern}; median of {args.layer_repeats}, interleaved")
    cpu = torch.device("cpu")
    results = {}
    for family in ("opt", "llama"):
        dims = TinyDims(vocab_size=512, hidden=768, layers=1, heads=12, ffn=3072, max_positions=args.seqlen)
        model = build_tiny_model(family, dims, seed=args.seed).eval()
        ids = torch.randint(0, 512, (args.samples, args.seqlen), generator=torch.Generator().manual_seed(args.seed))
        with torch.no_grad():
            captured = capture_first_layer_inputs(model, decoder_layers(model), ids, batch_size=args.batch_size,
                                                  device=cpu, storage=cpu)
        dense = decoder_layers(model)[0]
        spec = SparsitySpec.parse(args.layer_pattern)

        def fresh():
            return copy.deepcopy(dense), copy.copy(captured).__class__(captured.hidden.clone(), captured.slices,
                                                                       captured.calls)

        runs = {"baseline": [], "new": [], "explicit": []}
        for _ in range(args.layer_repeats):
            for name in runs:
                layer, inputs = fresh()
                start = time.perf_counter()
                if name == "baseline":
                    out = baseline.baseline_prune_layer(layer, inputs, cpu, spec)
                else:  # the default (inverse="auto") and the bit-identical route
                    out = new_prune_layer(layer, inputs, cpu, spec, **({"inverse": "explicit"}
                                                                        if name == "explicit" else {}))
                out["total"] = time.perf_counter() - start
                out["outputs"] = inputs.hidden
                runs[name].append(out)
        explicit = runs["explicit"][-1]
        old_masks = runs["baseline"][-1]["masks"]
        median = {name: {phase: statistics.median(r["seconds"][phase] for r in rs)
                         for phase in ("hessians", "solves", "rerun")} | {"total": statistics.median(
                             r["total"] for r in rs)} for name, rs in runs.items()}
        differ = {n: int((runs["new"][-1]["masks"][n] != m).sum()) for n, m in old_masks.items()}
        differ_explicit = {n: int((explicit["masks"][n] != m).sum()) for n, m in old_masks.items()}
        outputs_equal = torch.equal(explicit["outputs"], runs["baseline"][-1]["outputs"])
        ratio = median["new"]["total"] / median["baseline"]["total"]
        ratio_explicit = median["explicit"]["total"] / median["baseline"]["total"]
        results[family] = {"seconds": median, "ratio": ratio, "ratio_explicit": ratio_explicit,
                           "mask_differences": differ,
                           "mask_differences_explicit": differ_explicit, "groups": explicit["groups"],
                           "explicit_outputs_bit_identical": outputs_equal}
        print(f"{family}: groups {explicit['groups']}")
        print(f"  {'':9} {'hessians':>9} {'solves':>7} {'rerun':>6} {'total':>6}")
        for name in ("baseline", "new", "explicit"):
            m = median[name]
            print(f"  {name:9} {m['hessians']:>9.2f} {m['solves']:>7.2f} {m['rerun']:>6.2f} {m['total']:>6.2f}")
        print(f"  layer ratio new / baseline {ratio:.2f} (explicit route {ratio_explicit:.2f}); masks differing "
              f"(default auto route) "
              f"{sum(differ.values())} of {sum(m.numel() for m in old_masks.values())} ({differ}); with "
              f"inverse='explicit': {sum(differ_explicit.values())}, layer outputs bit-identical {outputs_equal}")
    return results


def bench_rounds(args) -> dict:
    """Round 2 of I-OBS (it has a previous round: pre-projection copy, dynamics) split into phases, with the
    round job's I/O (iobs.pipeline.rounds.iterative_round) replayed around it."""
    import tempfile

    from iobs.iterative.rounds import History, run_round, variant
    from iobs.iterative.steps import StepConfig
    from iobs.models.families import TinyDims, build_tiny_model
    from iobs.models.load import load_model
    from iobs.prune.save import load_masks_and_support, save_masks, save_pruned_model

    dims = TinyDims(vocab_size=4096, hidden=768, layers=args.round_layers, heads=12, ffn=3072,
                    max_positions=args.round_seqlen)
    g = torch.Generator().manual_seed(args.seed)
    batches = [torch.randint(0, 4096, (args.round_samples, args.round_seqlen), generator=g) for _ in range(2)]
    steps = StepConfig(steps=args.round_steps, micro_batch=4)
    print(f"\n== I-OBS round 2: OPT width 768/3072, {args.round_layers} layers, {args.round_samples} x "
          f"{args.round_seqlen} tokens, {args.round_steps} adam steps (micro-batch 4), sparsegpt 0.5, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_model("opt", dims, seed=args.seed)
        first = run_round(model, batches[0], 1, variant("iobs"), solver="sparsegpt", sparsity="0.5", steps=steps,
                          batch_size=4)
        history = History().after(first)
        save_pruned_model(model, tmp / "state1")
        save_masks(first.masks, tmp / "masks1.pt", support=first.support)
        io = {}
        start = time.perf_counter()
        state = load_model(tmp / "state1")
        previous_masks, previous_support = load_masks_and_support(tmp / "masks1.pt")
        io["load state + masks"] = time.perf_counter() - start
        history = History(previous_masks=previous_masks, previous_support=previous_support,
                          first_masks=previous_masks, first_support=previous_support)
        saved = {}

        def on_sparse(sparse, masks):
            start = time.perf_counter()
            save_pruned_model(sparse, tmp / "model2", masks=masks)
            saved["seconds"] = time.perf_counter() - start

        start = time.perf_counter()
        result = run_round(state, batches[1], 2, variant("iobs"), solver="sparsegpt", sparsity="0.5", steps=steps,
                           **history.as_kwargs(), on_sparse=on_sparse, batch_size=4)
        wall = time.perf_counter() - start
        io["save sparse model + masks (on_sparse)"] = saved["seconds"]
        start = time.perf_counter()
        save_pruned_model(result.state, tmp / "state2")
        io["save state"] = time.perf_counter() - start
        start = time.perf_counter()
        save_masks(result.masks, tmp / "masks2.pt", support=result.support)
        io["save masks + support"] = time.perf_counter() - start
    report = result.projection
    phases = report.phase_seconds
    projection = {"capture (embeddings -> layer 0 inputs)": report.capture_seconds,
                  "Hessian forwards": sum(phases["hessians"]), "solves": sum(phases["solves"]),
                  "re-runs": sum(phases["rerun"])}
    projection["other (layer moves, mask copies)"] = report.total_seconds - sum(projection.values())
    bookkeeping = {"pre-projection weight copy": result.seconds["projection"] - report.total_seconds,
                   "support, dynamics": wall - result.seconds["projection"] - result.seconds["steps"]
                   - saved["seconds"]}
    total = wall - saved["seconds"] + sum(io.values())
    rows = [("projection", k, v) for k, v in projection.items()] + [("bookkeeping", k, v) for k, v in
                                                                    bookkeeping.items()]
    rows += [("steps", f"{args.round_steps} gradient steps", result.seconds["steps"])]
    rows += [("I/O", k, v) for k, v in io.items()]
    for group, name, seconds in rows:
        print(f"  {group:>11}  {name:<42} {seconds:>7.2f} s {seconds / total:>6.1%}")
    print(f"  {'total':>11}  {'':<42} {total:>7.2f} s")
    return {"rows": [{"phase": g, "part": n, "seconds": v} for g, n, v in rows], "total": total}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="solve,layer,rounds", help="comma-separated: solve, layer, rounds")
    p.add_argument("--device", default="cpu", help="device of the solve part (the layer and rounds parts: CPU)")
    p.add_argument("--shapes", default=",".join(f"{r}x{c}" for r, c in SHAPES),
                   help="solve part: comma-separated out x in, e.g. 4096x4096,11008x4096,4096x11008 (Llama-2-7B)")
    p.add_argument("--samples", type=int, default=32, help="calibration sequences")
    p.add_argument("--seqlen", type=int, default=512, help="tokens per sequence")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layer-repeats", type=int, default=2)
    p.add_argument("--layer-pattern", default="0.5")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per forward mini-batch (layer part)")
    p.add_argument("--round-layers", type=int, default=2)
    p.add_argument("--round-samples", type=int, default=16)
    p.add_argument("--round-seqlen", type=int, default=256)
    p.add_argument("--round-steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"bench_engine: {args.threads} thread(s), torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")
    parts = set(args.parts.split(","))
    results = {"args": vars(args)}
    if "solve" in parts:
        results["solve"] = bench_solve(args)
    if "layer" in parts:
        results["layer"] = bench_layer(args)
    if "rounds" in parts:
        results["rounds"] = bench_rounds(args)
    print("\n== targets (issue 13), as measured in this run")
    if "solve" in results:
        worst = max(r["ratios"]["new"] for r in results["solve"]["solves"])
        masks = sum(r["numerics_vs_baseline"]["new"]["mask_differences"] for r in results["solve"]["solves"])
        share = results["solve"]["gflops"]["new"] / results["solve"]["matmul_gflops"]
        print(f"  solve <= 0.5x the old solver on every shape and pattern: worst {worst:.2f}; mask entries differing "
              f"from the old solver {masks} (0 with inverse='explicit')")
        print(f"  solver >= 50% of matmul GFLOP/s on {results['solve']['largest']}: {share:.0%} (nominal flops of the "
              "algorithm that ran)")
    if "layer" in results:
        print("  decoder layer <= 0.7x the old flow: " + ", ".join(
            f"{family} {r['ratio']:.2f} (explicit, identical masks: {r['ratio_explicit']:.2f})"
            for family, r in results["layer"].items()))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
