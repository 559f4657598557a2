"""Frozen copy of the project's SparseGPT solve before issue 13 (commit 25f69fe), the benchmark's baseline.

Same algorithm, same float32 arithmetic, self-contained (the helpers it used from iobs are copied too), so that
benchmarks/bench_engine.py keeps comparing against the same code however src/ changes. Not used by the package.
weight [out, in] any float dtype; hessian [in, in]; spec: iobs SparsitySpec; returns (weight, mask, loss).
"""

from __future__ import annotations

import math

import torch

_FLOOR_SLACK = 1e-6


def _pruned_count(count: int, fraction: float) -> int:
    return math.floor(fraction * count + _FLOOR_SLACK)


def _keep_all_but_lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    lowest = torch.argsort(scores.flatten(), stable=True)[:count]
    return torch.ones(scores.numel(), dtype=torch.bool, device=scores.device).index_fill_(0, lowest, False) \
        .reshape(scores.shape)


def _nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    lowest = torch.argsort(groups, dim=2, stable=True)[..., :n]
    return torch.ones_like(groups, dtype=torch.bool).scatter_(2, lowest, False).reshape(rows, cols)


def _checked_inputs(weight, hessian):
    w = weight.detach().to(torch.float32, copy=True)
    h = hessian.detach().to(device=w.device, dtype=torch.float32, copy=True)
    if not torch.isfinite(w).all():
        raise ValueError("weight contains NaN or inf")
    if not torch.isfinite(h).all():
        raise ValueError("hessian contains NaN or inf")
    if (h.diagonal() < 0).any():
        raise ValueError("hessian has negative diagonal entries")
    return w, h


def _damped_upper_inverse_factor(h, percdamp, max_damp_retries=5):
    scale = float(h.diagonal().mean())
    identity = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    relative = percdamp
    for attempt in range(max_damp_retries + 1):
        factor, info = torch.linalg.cholesky_ex(h + relative * scale * identity)
        if info == 0:
            result = torch.cholesky_inverse(factor)
            result, info = torch.linalg.cholesky_ex(result, upper=True)
            if info == 0 and torch.isfinite(result).all():
                return result
        relative = max(10 * relative, 0.01)
    raise ValueError("Hessian is not positive definite")


def baseline_sparsegpt(weight, hessian, spec, *, blocksize=128, percdamp=0.01, mask=None):
    """(weight, mask, loss) exactly as iobs.prune.solvers.sparsegpt_prune computed them before issue 13."""
    w, h = _checked_inputs(weight, hessian)
    rows, cols = w.shape
    fixed = mask is not None
    if fixed:
        dead = h.diagonal() == 0
        dead_weights = w[:, dead].clone()
    dead_ids = (h.diagonal() == 0).nonzero().squeeze(1)
    h[dead_ids, dead_ids] = 1.0
    w[:, dead_ids] = 0.0
    hinv = _damped_upper_inverse_factor(h, percdamp)
    keep = mask.clone() if fixed else torch.ones_like(w, dtype=torch.bool)
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        block = w[:, start:end].clone()
        hinv_block = hinv[start:end, start:end]
        pivots = hinv_block.diagonal()
        errors = torch.zeros_like(block)
        if not spec.is_nm and not fixed:
            count = _pruned_count(rows * end, spec.fraction) - _pruned_count(rows * start, spec.fraction)
            keep[:, start:end] = _keep_all_but_lowest(block.square() / pivots.square(), count)
        for i in range(end - start):
            if spec.is_nm and not fixed and i % spec.m == 0:
                group = slice(i, i + spec.m)
                saliency = block[:, group].square() / pivots[group].square()
                keep[:, start + i: start + i + spec.m] = _nm_mask(saliency, spec.n, spec.m)
            column = block[:, i]
            kept = column * keep[:, start + i]
            errors[:, i] = (column - kept) / pivots[i]
            block[:, i + 1:] -= errors[:, i: i + 1] * hinv_block[i: i + 1, i + 1:]
            block[:, i] = kept
        w[:, start:end] = block
        w[:, end:] -= errors @ hinv[start:end, end:]
    if fixed:
        w[:, dead] = dead_weights
    pruned = w.masked_fill(~keep, 0.0).to(weight.dtype)
    delta = weight.detach().float() - pruned.float()
    loss = float(((delta @ hessian.detach().float()) * delta).sum(dtype=torch.float64))
    return pruned, keep, loss


def baseline_prune_layer(layer, inputs, device, spec, *, solve=None) -> dict:
    """One decoder layer as the driver did it before issue 13, phases timed: a full forward with one Hessian per
    Linear (forward hooks, full X^T X products), one solve per Linear, then the re-run (outputs written to
    inputs.hidden). Returns {"masks": {name: bool [out, in]}, "seconds": {phase: s}}."""
    import time

    from torch import nn

    from iobs.prune.capture import run_layer

    solve = solve or baseline_sparsegpt
    linears = {name: m for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
    state = {"sequences": 0}
    hessians = {name: [torch.zeros(lin.in_features, lin.in_features, device=device), 0]
                for name, lin in linears.items()}

    def make_hook(entry):
        def hook(module, args, output):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            total = entry[1] + state["sequences"]
            entry[0].mul_(entry[1] / total).addmm_(x.T, x, alpha=2.0 / total)
            entry[1] = total
        return hook

    seconds = {}
    start = time.perf_counter()
    handles = [lin.register_forward_hook(make_hook(hessians[name])) for name, lin in linears.items()]
    try:
        with torch.no_grad():
            run_layer(layer, inputs, device, write_outputs=False, on_batch=lambda b: state.update(sequences=b))
    finally:
        for handle in handles:
            handle.remove()
    seconds["hessians"] = time.perf_counter() - start
    start = time.perf_counter()
    masks = {}
    with torch.no_grad():
        for name, lin in linears.items():
            weight, mask, _ = solve(lin.weight.detach().float(), hessians.pop(name)[0], spec)
            lin.weight.copy_(weight)
            masks[name] = mask
    seconds["solves"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        run_layer(layer, inputs, device, write_outputs=True)
    seconds["rerun"] = time.perf_counter() - start
    return {"masks": masks, "seconds": seconds}
