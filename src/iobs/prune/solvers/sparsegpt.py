"""SparseGPT (Frantar & Alistarh 2023): one pass over the columns, OBS updates via the Cholesky factor of H^-1."""

from __future__ import annotations

from typing import Sequence

import torch

from iobs.errors import ConfigError
from iobs.prune.solvers.common import (DEFAULT_PERCDAMP, InverseFactor, InverseMethod, SolveResult, check_spec,
                                       checked_hessian, checked_weight, finish, upper_inverse_factor)
from iobs.targets import SparsitySpec, check_nm_fits, pruned_count
from iobs.prune.sparsity import keep_all_but_lowest


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec, *, blocksize: int = 128,
                    percdamp: float = DEFAULT_PERCDAMP, max_damp_retries: int = 5,
                    mask: torch.Tensor | None = None, inverse: InverseMethod = "auto",
                    exact_loss: bool = False) -> SolveResult:
    """Prune columns left to right; each pruned weight's error is spread over the not-yet-processed columns.

    weight: [out, in] any float dtype (solved in float32); hessian: [in, in], H = (2/N) sum X X^T.
    Protocol: dead inputs get H_ii = 1 and a zero weight column; H is damped by percdamp * mean(diag H);
    U = upper Cholesky factor of H^-1, whose row i is the OBS update direction for column i given that columns < i
    are fixed (U_ii^2 = [H_F^-1]_ii for the remaining columns F = {i, ...}). Columns go in blocks of `blocksize`:
    updates inside a block are applied column by column, to later blocks once per block (lazy batch update).
    inverse: how U is computed (see upper_inverse_factor): "auto" (default: "explicit" for in <= 1024, where it
    costs a few percent of a solve, "triangular" above, where the factorization dominates), "explicit"
    (bit-identical to the project's solver before issue 13 at every width) or "triangular" (half the
    factorization flops; another float32 rounding of the same U, so on a 768x3072 layer ~0.1% of near-tied mask
    choices flip, loss within 3e-5 relative). The default config's models (in <= 1024) take the explicit route.

    Masks use the OBS saliency w^2 / U_ii^2 on the weights as updated so far:
    - unstructured: chosen once per block, across all rows of the block together, as in the reference code (so rows
      end up with different sparsities). The reference prunes everything <= the score at index int(fraction * numel)
      of each block (one weight too many, more on ties); here each block prunes an exact count,
      floor(f * out * end) - floor(f * out * start) for block columns [start, end), so every block is within one
      weight of the target fraction and the layer total is exactly floor(f * out * in).
    - N:M: at the first column of each group of m, the n lowest saliencies of the group in each row.
      blocksize must be a multiple of m so groups never straddle a block.
    mask (bool [out, in], True = kept), if given, replaces the selection: the same sweep then only applies the OBS
    updates for that fixed pattern (spec is not consulted; the result is zero exactly where the mask prunes, plus
    any weight that was already zero; kept weights on dead inputs keep their values instead of being zeroed).

    loss: tr(D H D^T), D = weight - result, H undamped. For float32 weights it comes from the sweep's own OBS
    errors (see _sweep), without the product's 2 out in^2 flops (a quarter of a 768x3072 solve); that equals the
    product up to the sweep's float32 rounding: relative 1e-7 on OPT-125M shapes, up to 1e-5 with ill-conditioned
    H (many dead inputs). exact_loss=True, or a weight in another dtype, computes the product on the result.
    """
    return sparsegpt_prune_group([weight], hessian, spec, blocksize=blocksize, percdamp=percdamp,
                                 max_damp_retries=max_damp_retries, masks=None if mask is None else [mask],
                                 inverse=inverse, exact_loss=exact_loss)[0]


def sparsegpt_prune_group(weights: Sequence[torch.Tensor], hessian: torch.Tensor, spec: SparsitySpec, *,
                          blocksize: int = 128, percdamp: float = DEFAULT_PERCDAMP, max_damp_retries: int = 5,
                          masks: Sequence[torch.Tensor] | None = None,
                          inverse: InverseMethod = "auto", exact_loss: bool = False) -> list[SolveResult]:
    """sparsegpt_prune for several Linears that read the same input (q/k/v, gate/up): one factorization of the
    shared hessian [in, in], then one sweep per weight [out_k, in]. Each result is identical to sparsegpt_prune
    of that weight alone. masks: None or one fixed mask per weight."""
    check_spec(spec)
    if not weights:
        return []
    if blocksize < 1 or (spec.is_nm and blocksize % spec.m):
        raise ConfigError(f"sparsegpt blocksize must be a positive multiple of m for {spec.label}, got {blocksize}; "
                          "the default 128 works for 2:4 and 4:8")
    ws = [checked_weight(weight) for weight in weights]
    cols = ws[0].shape[1]
    check_nm_fits(cols, spec)
    if any(w.shape[1] != cols for w in ws):
        raise ConfigError(f"a sparsegpt group shares one Hessian, so every weight needs in_features={cols}; "
                          f"got {[tuple(w.shape) for w in ws]}")
    if masks is not None:
        if len(masks) != len(ws):
            raise ConfigError(f"a sparsegpt group of {len(ws)} weights got {len(masks)} fixed masks")
        for w, mask in zip(ws, masks):
            if mask.shape != w.shape or mask.dtype != torch.bool:
                raise ConfigError(f"a fixed sparsegpt mask must be bool {tuple(w.shape)}, got {mask.dtype} "
                                  f"{tuple(mask.shape)}")
    h = checked_hessian(hessian, cols, ws[0].device)
    factor = upper_inverse_factor(h, percdamp, max_damp_retries, method=inverse)
    results = []
    for k, (weight, w) in enumerate(zip(weights, ws)):
        mask = None if masks is None else masks[k].to(w.device)
        results.append(_sweep(weight, w, h, factor, spec, blocksize, mask, exact_loss))
    return results


def _sweep(original: torch.Tensor, w: torch.Tensor, h: torch.Tensor, factor: InverseFactor, spec: SparsitySpec,
           blocksize: int, mask: torch.Tensor | None, exact_loss: bool = False) -> SolveResult:
    """One weight's column sweep. w: [rows, cols] float32 working copy of `original` (modified); h: the undamped
    float32 Hessian (read only, for the loss of non-float32 weights).

    Layout: each block is worked on transposed ([B, rows], contiguous), so column i of the block is one contiguous
    row and the in-block rank-1 update is a contiguous matrix update; the arithmetic per element is the same as
    the row-major form (bit-identical results, measured in benchmarks/bench_engine.py).

    Loss without the product: with E [rows, cols] the OBS errors (e_i = pruned part of column i / U_ii), the sweep
    gives W_final = W0' - E U (W0' = W0 with dead columns zeroed), and U H_d U^T = I, so
    tr((W0' - W) H_d (W0' - W)^T) = ||E||_F^2. H_d = H + damping I on the live inputs (dead rows and columns of H
    are zero, and U never couples a dead input to another), hence tr(D H D^T) = ||E||^2 - damping ||D_live||^2.
    """
    rows, cols = w.shape
    fixed = mask is not None
    dead = factor.dead
    any_dead = bool(dead.any())
    if fixed and any_dead:  # the protocol zeroes dead inputs' weights, which a fixed mask may keep: put them back
        dead_weights = w[:, dead].clone()
    if any_dead:
        w[:, dead] = 0.0
    upper = factor.upper
    # The whole sweep works on the transpose: wt [cols, rows] and keep_t [cols, rows], so a block of columns is a
    # contiguous slice (no per-block transposed copies), column i of the weight is one contiguous row, and the
    # lazy update writes a contiguous slice. The arithmetic per element is the same as the row-major form.
    wt = w.T.contiguous()
    keep_t = mask.T.contiguous() if fixed else torch.ones_like(wt, dtype=torch.bool)
    error_energy = torch.zeros((), dtype=torch.float64, device=w.device)

    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        width = end - start
        block = wt[start:end]                                   # [B, rows] view
        upper_block = upper[start:end, start:end]
        pivots = upper_block.diagonal()
        errors = torch.empty_like(block)                        # [B, rows], errors[i] = e for block column i
        if not spec.is_nm and not fixed:
            count = pruned_count(rows * end, spec.fraction) - pruned_count(rows * start, spec.fraction)
            # scores in the [rows, B] order (a transposed view): ties are broken by that position, as everywhere
            keep_t[start:end] = keep_all_but_lowest(block.square().div_(pivots.square()[:, None]).T, count).T
        pruned = keep_t[start:end].logical_not().to(torch.float32)  # [B, rows], 1 = pruned
        choose_groups = spec.is_nm and not fixed
        if choose_groups:  # [B/m, m, rows] views: group g's weights, squared pivots and pruned flags
            block_groups = block.view(width // spec.m, spec.m, rows).unbind(0)
            pruned_groups = pruned.view(width // spec.m, spec.m, rows).unbind(0)
            pivot_groups = pivots.square().view(width // spec.m, spec.m, 1).unbind(0)
            earlier = torch.ones(spec.m, spec.m, dtype=torch.bool, device=w.device).tril_(-1).unsqueeze(2)
        # Views made once per block: the loop below is Python-bound for OPT-125M shapes (B rank-1 updates of
        # [<= B, rows]), so every tensor and call per column counts. The rank-1 update is an addmm with an inner
        # dimension of 1: one product and one subtraction per element, the bits of a broadcast multiply and a
        # subtraction, in one call and without a temporary.
        block_rows, error_rows, pruned_rows = block.unbind(0), errors.unbind(0), pruned.unbind(0)
        pivot_values = pivots.unbind(0)  # 0-d tensors: a Python float would be wrapped anew per call
        for i in range(width):
            if choose_groups and i % spec.m == 0:
                # prune the n lowest saliencies of each row's group, ties by position: an entry's place in a
                # stable sort is #(lower) + #(equal and earlier); m^2 comparisons beat a sort call for small m
                g = i // spec.m
                saliency = block_groups[g].square().div_(pivot_groups[g])            # [m, rows]
                other, this = saliency.unsqueeze(0), saliency.unsqueeze(1)             # [1, m, rows], [m, 1, rows]
                place = torch.where(earlier, other <= this, other < this).sum(1)       # [m, rows]
                torch.lt(place, spec.n, out=pruned_groups[g])
            error = error_rows[i]
            torch.mul(block_rows[i], pruned_rows[i], out=error).div_(pivot_values[i])
            if i + 1 < width:
                block[i + 1:].addmm_(upper_block[i, i + 1:, None], error[None], alpha=-1)
        if choose_groups:
            keep_t[start:end] = pruned == 0
        block.mul_(keep_t[start:end])                           # pruned entries exactly 0
        error_energy += errors.square().sum(dtype=torch.float64)
        if end < cols:
            wt[end:].addmm_(upper[start:end, end:].T, errors, alpha=-1)  # lazy update, in place
    w = wt.T.contiguous()
    keep = keep_t.T.contiguous()
    if fixed and any_dead:  # H couples a dead input to nothing, so the sweep left those columns alone
        w[:, dead] = dead_weights
    if exact_loss or original.dtype != torch.float32:
        return finish(original, w, keep, h)
    # pruned entries are exactly 0 already (block.mul_ above), except dead columns a fixed mask restored
    pruned_weight = w.masked_fill_(~keep, 0.0) if fixed and any_dead else w
    delta = original.detach().float() - pruned_weight
    if any_dead:
        delta[:, dead] = 0.0
    loss = float(error_energy) - factor.damping * float(delta.square().sum(dtype=torch.float64))
    return SolveResult(weight=pruned_weight, mask=keep, loss=max(loss, 0.0))
