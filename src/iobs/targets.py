"""Sparsity targets ("0.5", "2:4"; the grammar is iobs.registry.SPARSITY_PATTERN) and the counting rule.

Torch-free on purpose: the config validation, the Snakefile and the CLI parser read targets before torch loads.

Counting rule (all solvers): a set of `count` weights that must lose `fraction` of its entries loses
floor(fraction * count) of them. N:M loses exactly n of every m consecutive inputs of a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from iobs.errors import ConfigError
from iobs.registry import is_sparsity_text

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
        if isinstance(text, str) and not is_sparsity_text(text.strip()):  # "5e-1", ".5": not a result-path label
            raise SparsitySpecError(f"cannot read sparsity {text!r}; write the fraction as 0.5 (a leading 0, digits) "
                                    "or N:M like '2:4'")
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
