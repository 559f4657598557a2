"""Layer-wise pruning solvers: (weight [out, in], hessian [in, in], spec, **options) -> SolveResult.

Pure functions: inputs are never modified; computation is in float32 and the weight comes back in its input dtype.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from iobs.errors import ConfigError
from iobs.prune.solvers.common import SolveResult
from iobs.prune.solvers.obc import obc_prune
from iobs.prune.solvers.scoring import magnitude_prune, wanda_prune
from iobs.prune.solvers.sparsegpt import sparsegpt_prune
from iobs.prune.sparsity import SparsitySpec

SOLVERS: dict[str, Callable[..., SolveResult]] = {
    "magnitude": magnitude_prune,
    "wanda": wanda_prune,
    "sparsegpt": sparsegpt_prune,
    "obc": obc_prune,
}

__all__ = ["SOLVERS", "SolveResult", "solve", "magnitude_prune", "wanda_prune", "sparsegpt_prune", "obc_prune"]


def solve(method: str, weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec | str | float,
          **options) -> SolveResult:
    """Prune one layer with SOLVERS[method]; unknown methods or options raise a one-line ConfigError."""
    if method not in SOLVERS:
        raise ConfigError(f"unknown pruning method {method!r}; choose one of {', '.join(sorted(SOLVERS))}")
    solver = SOLVERS[method]
    accepted = [name for name, p in inspect.signature(solver).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for pruning method {method!r}; "
                          f"it accepts {', '.join(accepted)}")
    if not isinstance(spec, SparsitySpec):
        spec = SparsitySpec.parse(spec)
    return solver(weight, hessian, spec, **options)
