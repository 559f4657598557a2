"""Sparsity targets ("0.5", "2:4") and the exact-count mask selection every solver shares.

Counting rule (all solvers): a set of `count` weights that must lose `fraction` of its entries loses
floor(fraction * count) of them. N:M loses exactly n of every m consecutive inputs of a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from iobs.errors import ConfigError

# floor(fraction * count) with a slack for float error, so that 0.29 * 100 (= 28.999999999999996) gives 29.
_FLOOR_SLACK = 1e-6


class SparsitySpecError(ConfigError, ValueError):
    """A sparsity string or number that cannot be a pruning target."""


def _fraction_message(value) -> str:
    # 0 is refused too: a "pruned" model identical to the dense one would pass for a result
    return (f"sparsity must be a fraction strictly between 0 and 1, got {value!r} (0 prunes nothing, 1 everything); "
            "e.g. 0.5")


@dataclass(frozen=True)
class SparsitySpec:
    """A per-layer pruning target (something is always pruned, never everything).

    "0.5" -> unstructured, half of the weights zero. "2:4" -> N:M with n=2 zeros in every m=4 consecutive inputs
    of each output row (fraction n/m).
    """

    fraction: float
    n: int | None = None
    m: int | None = None

    def __post_init__(self) -> None:
        if (self.n is None) != (self.m is None):
            raise SparsitySpecError(f"N:M sparsity needs both n and m, got n={self.n} m={self.m}")
        if self.is_nm:
            if not 0 < self.n < self.m:
                raise SparsitySpecError(f"N:M sparsity needs 0 < n < m, got '{self.n}:{self.m}'; e.g. '2:4'")
            if self.fraction != self.n / self.m:
                raise SparsitySpecError(f"fraction {self.fraction} does not match {self.n}:{self.m}; "
                                        f"use SparsitySpec.parse('{self.n}:{self.m}')")
        elif not (isinstance(self.fraction, (int, float)) and 0.0 < self.fraction < 1.0):
            raise SparsitySpecError(_fraction_message(self.fraction))

    @classmethod
    def parse(cls, text: str | float) -> SparsitySpec:
        """'0.5' or 0.5 -> unstructured; '2:4' -> N:M (n zeros of every m)."""
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise SparsitySpecError(f"sparsity must be a number like 0.5 or a string like '2:4', got {text!r}")
        if isinstance(text, str) and ":" in text:
            parts = text.strip().split(":")
            if len(parts) != 2 or not all(p.strip().isdecimal() for p in parts):
                raise SparsitySpecError(f"cannot read N:M sparsity {text!r}; write it as two integers like '2:4'")
            n, m = (int(p) for p in parts)
            if not 0 < n < m:
                raise SparsitySpecError(f"N:M sparsity needs 0 < n < m, got {text!r} (n zeros in every m weights; "
                                        "0 would prune nothing, n = m everything); e.g. '2:4'")
            return cls(fraction=n / m, n=n, m=m)
        try:
            fraction = float(text)
        except ValueError:
            raise SparsitySpecError(f"cannot read sparsity {text!r}; write a fraction like 0.5 or N:M like '2:4'") \
                from None
        if not 0.0 < fraction < 1.0:  # also rejects nan
            raise SparsitySpecError(_fraction_message(text))
        return cls(fraction=fraction)

    @property
    def is_nm(self) -> bool:
        return self.n is not None

    @property
    def label(self) -> str:
        """Stable text used in result paths: '0.5', '0.7', '2:4' (repr round-trips through parse)."""
        return f"{self.n}:{self.m}" if self.is_nm else repr(float(self.fraction))

    def __str__(self) -> str:
        return self.label


def pruned_count(count: int, fraction: float) -> int:
    """How many of `count` weights a target `fraction` removes: floor(fraction * count)."""
    return math.floor(fraction * count + _FLOOR_SLACK)


def check_nm_fits(in_features: int, spec: SparsitySpec) -> None:
    """N:M groups run along the input dimension, so it must be a multiple of m."""
    if spec.is_nm and in_features % spec.m:
        raise ConfigError(f"{spec.label} sparsity needs in_features divisible by {spec.m}, the layer has "
                          f"{in_features}; use an unstructured sparsity such as {spec.fraction} for this layer")


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
