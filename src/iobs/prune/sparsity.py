"""The exact-count mask selection every solver shares (the targets themselves: iobs.targets).

Counting rule (all solvers): a set of `count` weights that must lose `fraction` of its entries loses
floor(fraction * count) of them. N:M loses exactly n of every m consecutive inputs of a row.
"""

from __future__ import annotations

import torch

from iobs.errors import ConfigError
from iobs.targets import SparsitySpec, check_nm_fits, pruned_count


def lowest_scores_mask(scores: torch.Tensor, spec: SparsitySpec, scope: str = "layer") -> torch.Tensor:
    """Keep-mask that prunes the lowest scores, with an exact count.

    scores: [out, in] float. Returns [out, in] bool, True = kept. N:M prunes the n lowest of every m consecutive
    inputs per row (scope ignored). Unstructured prunes floor(fraction * numel) over the whole layer for
    scope="layer", floor(fraction * in) in every row for scope="row". Ties are broken by position (stable sort),
    so the count is exact even when many scores are equal (e.g. zeros).
    """
    out_features, in_features = scores.shape
    if spec.is_nm:
        check_nm_fits(in_features, spec)
        groups = scores.reshape(out_features, in_features // spec.m, spec.m)
        lowest = torch.argsort(groups, dim=2, stable=True)[..., : spec.n]
        keep = torch.ones_like(groups, dtype=torch.bool).scatter_(2, lowest, False)
        return keep.reshape(out_features, in_features)
    if scope == "layer":
        return keep_all_but_lowest(scores, pruned_count(scores.numel(), spec.fraction))
    if scope == "row":
        lowest = torch.argsort(scores, dim=1, stable=True)[:, : pruned_count(in_features, spec.fraction)]
        return torch.ones_like(scores, dtype=torch.bool).scatter_(1, lowest, False)
    raise ConfigError(f"unknown pruning scope {scope!r}; use 'layer' or 'row'")


def keep_all_but_lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask (bool, shape of scores) that prunes exactly `count` entries: the lowest scores, ties by position.

    Same result as pruning the first `count` entries of a stable argsort of scores.flatten(), without the sort:
    the count-th lowest value t (a selection, O(numel)) splits the entries into < t (all pruned), > t (all kept)
    and == t, of which the first count - #(< t) by position are pruned. scores must not hold NaN.
    """
    flat = scores.flatten()
    if count <= 0:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if count >= flat.numel():
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    threshold = flat.kthvalue(count).values
    keep = flat > threshold
    tied = flat == threshold
    missing = count - (flat.numel() - int(keep.sum()) - int(tied.sum()))  # how many of the ties are pruned
    keep |= tied & (tied.cumsum(0) > missing)
    return keep.reshape(scores.shape)
