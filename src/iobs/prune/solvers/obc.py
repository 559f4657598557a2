"""OBC (Frantar & Alistarh 2022, Optimal Brain Compression): exact greedy OBS, one output row at a time."""

from __future__ import annotations

import torch

from iobs.errors import ConfigError
from iobs.prune.solvers.common import (DEFAULT_PERCDAMP, SolveResult, checked_inputs, damped_inverse, finish,
                                       zero_dead_inputs)
from iobs.targets import SparsitySpec, pruned_count


def obc_prune(weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec, *, percdamp: float = DEFAULT_PERCDAMP,
              max_damp_retries: int = 5, max_in_features: int = 2048, max_batch_bytes: int = 2**28) -> SolveResult:
    """Per row, repeatedly remove the weight with the smallest w_q^2 / [Hinv]_qq, update the rest of the row by OBS
    and downdate Hinv to the remaining inputs.

    weight: [out, in] any float dtype (solved in float32); hessian: [in, in]. Dead inputs and damping as SparseGPT.
    The rows share H, so each row's final weights are the exact least-squares optimum (under the damped H) on its
    own support; only the support is greedy.
    - unstructured: every row loses floor(fraction * in) weights. OBC's global variant instead ranks the per-row
      loss curves across rows and spreads sparsity unevenly; equal rows is a simpler, documented choice.
    - N:M: the same greedy, restricted at each step to groups that still have fewer than n removed.
    Cost: with k removals per row, O(out * in * k^2 / 2) multiply-adds and O(batch * k * in) memory: Hinv after t
    removals is kept as H^-1 - V V^T with t rank-one terms (V [t, in]), cheaper than downdating a dense [in, in]
    copy per row. Rows go in batches of about max_batch_bytes of V. Layers wider than max_in_features raise
    ConfigError (the cost grows like in^3 per row); use sparsegpt for those.
    """
    w, h = checked_inputs(weight, hessian, spec)
    rows, cols = w.shape
    if cols > max_in_features:
        raise ConfigError(f"obc costs O(out * in^3) and this layer has in_features={cols} > max_in_features="
                          f"{max_in_features}; use method 'sparsegpt' or raise max_in_features")
    zero_dead_inputs(w, h)
    hinv = damped_inverse(h, percdamp, max_damp_retries)
    steps = spec.n * (cols // spec.m) if spec.is_nm else pruned_count(cols, spec.fraction)
    keep = torch.ones_like(w, dtype=torch.bool)
    batch = max(1, max_batch_bytes // (4 * max(steps, 1) * cols))
    for first in range(0, rows, batch):
        part = slice(first, min(first + batch, rows))
        keep[part] = greedy_obs_rows(w[part], hinv, spec, steps)
    return finish(weight, w, keep, hessian)


def greedy_obs_rows(w: torch.Tensor, hinv: torch.Tensor, spec: SparsitySpec, steps: int) -> torch.Tensor:
    """Remove `steps` weights from each row of w ([rows, in] float32, updated in place); return the keep-mask.

    hinv: [in, in] float32, the (damped) inverse Hessian shared by all rows.
    """
    rows, cols = w.shape
    row_ids = torch.arange(rows, device=w.device)
    # Floor for divisions: conditional variances are positive in exact arithmetic; float32 cancellation must not
    # turn them into zero or negative numbers (which would give inf/NaN updates).
    floor = torch.finfo(torch.float32).eps * float(hinv.diagonal().max())
    variances = hinv.diagonal().repeat(rows, 1)           # diag of each row's current Hinv, [rows, in]
    directions = w.new_empty(rows, steps, cols)           # V: current Hinv = hinv - V^T V, one row of V per removal
    keep = torch.ones_like(w, dtype=torch.bool)
    removed_in_group = torch.zeros(rows, cols // spec.m, dtype=torch.long, device=w.device) if spec.is_nm else None
    for t in range(steps):
        saliency = w.square() / variances.clamp_min(floor)
        saliency.masked_fill_(~keep, float("inf"))
        if removed_in_group is not None:
            saliency.masked_fill_((removed_in_group == spec.n).repeat_interleave(spec.m, dim=1), float("inf"))
        q = saliency.argmin(dim=1)                         # [rows]
        done = directions[:, :t]                           # [rows, t, in]
        coefficients = done.gather(2, q.view(rows, 1, 1).expand(rows, t, 1))          # V[:, q], [rows, t, 1]
        column = torch.baddbmm(hinv[q].unsqueeze(1), coefficients.transpose(1, 2), done, alpha=-1).squeeze(1)
        pivot = column[row_ids, q].clamp_min(floor)        # [Hinv]_qq
        w -= (w[row_ids, q] / pivot).unsqueeze(1) * column
        w[row_ids, q] = 0.0
        direction = column / pivot.sqrt().unsqueeze(1)
        directions[:, t] = direction
        variances -= direction.square()
        keep[row_ids, q] = False
        if removed_in_group is not None:
            removed_in_group[row_ids, q // spec.m] += 1
    return keep
