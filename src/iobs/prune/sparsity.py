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
    and == t, of which the first count - #(< t) by (row-major) position are pruned. scores must not hold NaN; it
    may be a transposed view (the SparseGPT sweep's blocks): the selection reads it in memory order, only a tie
    that splits at t reads it in row-major order.
    """
    if count <= 0:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if count >= scores.numel():
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    threshold = kth_lowest(_memory_order(scores), count)
    keep = scores > threshold                                # the layout of scores
    tied = scores == threshold
    tied_count = int(tied.sum())
    missing = count - (scores.numel() - int(keep.sum()) - tied_count)  # how many of the ties are pruned, >= 1
    if missing < tied_count:  # some ties kept: the first `missing` of them by position are pruned
        ties = tied.reshape(-1)
        keep = keep.reshape(-1) | (ties & (ties.cumsum(0) > missing))
    return keep.reshape(scores.shape)


def _memory_order(x: torch.Tensor) -> torch.Tensor:
    """x's entries as a flat view in memory order (a copy only when x is neither contiguous nor a 2-D transpose)."""
    if x.dim() == 2 and not x.is_contiguous() and x.T.is_contiguous():
        return x.T.reshape(-1)
    return x.reshape(-1)


def kth_lowest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th lowest value (1-based) of a 1-D float tensor without NaN, as a 0-d tensor: flat.kthvalue(k).values.

    float32 scores >= 0 on the CPU (every saliency: squares, magnitudes) take a radix step first: their int32 bit
    patterns sort like the values, so one bincount over the top 16 bits finds the bucket holding the k-th value and
    kthvalue runs only on that bucket; about 6x faster than kthvalue on a SparseGPT block (98k scores), same value.
    """
    if flat.dtype != torch.float32 or flat.device.type != "cpu" or flat.numel() < 4096 or bool((flat < 0).any()):
        return flat.kthvalue(k).values
    high = flat.view(torch.int32) >> 16                     # [numel] in [0, 32768): sign bit clear
    cumulative = torch.bincount(high, minlength=1 << 15).cumsum(0)
    bucket = int(torch.searchsorted(cumulative, k))         # first bucket whose running count reaches k
    below = int(cumulative[bucket - 1]) if bucket else 0
    return flat[high == bucket].kthvalue(k - below).values
