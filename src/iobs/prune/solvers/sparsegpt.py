"""SparseGPT (Frantar & Alistarh 2023): one pass over the columns, OBS updates via the Cholesky factor of H^-1."""

from __future__ import annotations

import torch

from iobs.errors import ConfigError
from iobs.prune.solvers.common import (DEFAULT_PERCDAMP, SolveResult, checked_inputs, damped_inverse, finish,
                                       zero_dead_inputs)
from iobs.prune.sparsity import SparsitySpec, keep_all_but_lowest, lowest_scores_mask, pruned_count


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec, *, blocksize: int = 128,
                    percdamp: float = DEFAULT_PERCDAMP, max_damp_retries: int = 5,
                    mask: torch.Tensor | None = None) -> SolveResult:
    """Prune columns left to right; each pruned weight's error is spread over the not-yet-processed columns.

    weight: [out, in] any float dtype (solved in float32); hessian: [in, in], H = (2/N) sum X X^T.
    Protocol: dead inputs get H_ii = 1 and a zero weight column; H is damped by percdamp * mean(diag H);
    U = upper Cholesky factor of H^-1, whose row i is the OBS update direction for column i given that columns < i
    are fixed (U_ii^2 = [H_F^-1]_ii for the remaining columns F = {i, ...}). Columns go in blocks of `blocksize`:
    updates inside a block are applied column by column, to later blocks once per block (lazy batch update).

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
    """
    w, h = checked_inputs(weight, hessian, spec)
    if blocksize < 1 or (spec.is_nm and blocksize % spec.m):
        raise ConfigError(f"sparsegpt blocksize must be a positive multiple of m for {spec.label}, got {blocksize}; "
                          "the default 128 works for 2:4 and 4:8")
    rows, cols = w.shape
    if mask is not None and (mask.shape != w.shape or mask.dtype != torch.bool):
        raise ConfigError(f"a fixed sparsegpt mask must be bool {tuple(w.shape)}, got {mask.dtype} {tuple(mask.shape)}")
    fixed = mask is not None
    if fixed:  # the protocol zeroes dead inputs' weights, which a fixed mask may keep: put them back after the sweep
        dead = h.diagonal() == 0
        dead_weights = w[:, dead].clone()
    zero_dead_inputs(w, h)
    hinv = damped_inverse(h, percdamp, max_damp_retries, upper_cholesky=True)
    keep = mask.to(w.device).clone() if fixed else torch.ones_like(w, dtype=torch.bool)

    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        block = w[:, start:end].clone()
        hinv_block = hinv[start:end, start:end]
        pivots = hinv_block.diagonal()
        errors = torch.zeros_like(block)
        if not spec.is_nm and not fixed:
            count = pruned_count(rows * end, spec.fraction) - pruned_count(rows * start, spec.fraction)
            keep[:, start:end] = keep_all_but_lowest(block.square() / pivots.square(), count)
        for i in range(end - start):
            if spec.is_nm and not fixed and i % spec.m == 0:
                group = slice(i, i + spec.m)
                saliency = block[:, group].square() / pivots[group].square()
                keep[:, start + i: start + i + spec.m] = lowest_scores_mask(saliency, spec)
            column = block[:, i]
            kept = column * keep[:, start + i]
            errors[:, i] = (column - kept) / pivots[i]
            block[:, i + 1:] -= errors[:, i: i + 1] * hinv_block[i: i + 1, i + 1:]
            block[:, i] = kept
        w[:, start:end] = block
        w[:, end:] -= errors @ hinv[start:end, end:]
    if fixed:  # H couples a dead input to nothing, so the sweep left those columns alone
        w[:, dead] = dead_weights
    return finish(weight, w, keep, hessian)
