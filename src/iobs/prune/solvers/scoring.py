"""Solvers that only choose a mask from a score and never update the kept weights: magnitude and Wanda."""

from __future__ import annotations

import torch

from iobs.prune.solvers.common import SolveResult, checked_inputs, finish
from iobs.targets import SparsitySpec
from iobs.prune.sparsity import lowest_scores_mask


def magnitude_prune(weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec, *,
                    scope: str = "layer") -> SolveResult:
    """Prune the smallest |W_ij|; the Hessian is used only for the reported loss.

    weight: [out, in] any float dtype; hessian: [in, in]. Unstructured: scope="layer" compares across the whole
    layer (floor(fraction * out * in) pruned), scope="row" within each output row (floor(fraction * in) per row).
    N:M compares within each group of m consecutive inputs of a row.
    """
    w, _ = checked_inputs(weight, hessian, spec)
    keep = lowest_scores_mask(w.abs(), spec, scope)
    return finish(weight, w, keep, hessian)


def wanda_prune(weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec, *,
                scope: str = "row") -> SolveResult:
    """Wanda: prune the smallest |W_ij| * ||X_j||_2, compared within each output row by default.

    ||X_j|| is taken as sqrt(H_jj): H = (2/N) sum X X^T, so sqrt(H_jj) is ||X_j|| up to a constant that does not
    change any comparison. Dead inputs (H_jj = 0) score 0 and go first. No weight update. Shapes as magnitude_prune.
    """
    w, h = checked_inputs(weight, hessian, spec)
    scores = w.abs() * h.diagonal().sqrt().unsqueeze(0)
    keep = lowest_scores_mask(scores, spec, scope)
    return finish(weight, w, keep, hessian)
