"""Record SparseGPT's outputs on OPT-125M shapes, or compare them with a recording: the bit-identity check for
engine changes (issue 13). Masks and weights must be equal bit for bit; losses within --loss-rtol.

    PYTHONPATH=src .venv/bin/python benchmarks/solver_bits.py --save /tmp/before.pt      # on the old code
    PYTHONPATH=src .venv/bin/python benchmarks/solver_bits.py --compare /tmp/before.pt   # on the new code

Cases (80): shapes 768x768, 3072x768, 768x3072 and 200x300; 50%, 70% and 2:4; plain inputs, dead inputs (every
37th input column of X zero) and already-sparse weights; both factor routes (explicit, triangular); and a fixed
mask (plain and dead inputs, explicit). X = randn(4096, in) @ a random mixing matrix, as in bench_engine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import layer_inputs  # noqa: E402

from iobs.prune.solvers.scoring import magnitude_prune  # noqa: E402
from iobs.prune.solvers.sparsegpt import sparsegpt_prune  # noqa: E402
from iobs.targets import SparsitySpec  # noqa: E402

SHAPES = [(768, 768), (3072, 768), (768, 3072), (200, 300)]


def outputs() -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{case label: (weight, mask, loss)} of every case."""
    out = {}
    for rows, cols in SHAPES:
        w, h = layer_inputs(rows, cols, 4096, 8, 1)
        dead_h = h.clone()
        dead = torch.arange(0, cols, 37)
        dead_h[dead, :] = 0
        dead_h[:, dead] = 0
        sparse_w = magnitude_prune(w, h, SparsitySpec.parse("0.5")).weight
        blocksize = 128 if cols > 300 else 64
        for pattern in ("0.5", "0.7", "2:4"):
            spec = SparsitySpec.parse(pattern)
            for kind, (weight, hessian) in {"plain": (w, h), "dead": (w, dead_h), "sparse": (sparse_w, h)}.items():
                for inverse in ("explicit", "triangular"):
                    r = sparsegpt_prune(weight, hessian, spec, inverse=inverse, blocksize=blocksize)
                    out[f"{rows}x{cols} {pattern} {kind} {inverse}"] = (r.weight, r.mask, r.loss)
        mask = magnitude_prune(w, h, SparsitySpec.parse("0.6")).mask
        for kind, hessian in {"plain": h, "dead": dead_h}.items():
            r = sparsegpt_prune(w, hessian, SparsitySpec.parse("0.5"), mask=mask, inverse="explicit",
                                blocksize=blocksize)
            out[f"{rows}x{cols} fixed {kind} explicit"] = (r.weight, r.mask, r.loss)
    return out


def compare(recorded: dict, current: dict, loss_rtol: float) -> int:
    """Print every case that differs; return how many do."""
    if set(recorded) != set(current):
        print(f"the recording has other cases: {sorted(set(recorded) ^ set(current))[:4]}")
        return len(set(recorded) ^ set(current))
    differ = 0
    for case, (weight, mask, loss) in recorded.items():
        new_weight, new_mask, new_loss = current[case]
        same = torch.equal(weight, new_weight) and torch.equal(mask, new_mask)
        if not same or abs(loss - new_loss) > loss_rtol * abs(loss):
            differ += 1
            print(f"DIFFERS {case}: {int((mask != new_mask).sum())} mask entries, max |dW| "
                  f"{float((weight - new_weight).abs().max()):.2e}, loss {loss} -> {new_loss}")
    print(f"{len(recorded)} cases, {differ} differ")
    return differ


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="write the outputs of this code to this file")
    group.add_argument("--compare", help="compare the outputs of this code with this recording")
    p.add_argument("--loss-rtol", type=float, default=0.0, help="relative tolerance of the losses (default exact)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.compare and not Path(args.compare).is_file():
        p.error(f"{args.compare} does not exist: record one with --save on the old code first")
    start = time.perf_counter()
    current = outputs()
    print(f"{len(current)} cases solved in {time.perf_counter() - start:.1f} s")
    if args.save:
        torch.save(current, args.save)
        print(f"wrote {args.save}")
        return 0
    return 1 if compare(torch.load(args.compare), current, args.loss_rtol) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
