"""Layer-wise pruning solvers: (weight [out, in], hessian [in, in], spec, **options) -> SolveResult.

Which solvers exist is said once, in iobs.registry (a new solver: a module here plus one register_solver call).

Pure functions: inputs are never modified; computation is in float32 and the weight comes back in its input dtype.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Callable

import torch

from iobs import registry
from iobs.errors import ConfigError
from iobs.prune.solvers.common import SolveResult
from iobs.prune.solvers.obc import obc_prune
from iobs.prune.solvers.scoring import magnitude_prune, wanda_prune
from iobs.prune.solvers.sparsegpt import sparsegpt_prune
from iobs.targets import SparsitySpec


class _RegisteredSolvers(Mapping):
    """Name -> solver function, read from iobs.registry on each look-up (a solver registered later is seen)."""

    def __init__(self, group: bool = False) -> None:
        self._group = group

    def __getitem__(self, name: str) -> Callable:
        entry = registry.SOLVERS[name]
        function = entry.load_group() if self._group else entry.load()
        if function is None:
            raise KeyError(name)
        return function

    def __iter__(self) -> Iterator[str]:
        return iter(name for name, entry in registry.SOLVERS.items() if not self._group or entry.group_function)

    def __len__(self) -> int:
        return sum(1 for _ in self)


SOLVERS: Mapping[str, Callable[..., SolveResult]] = _RegisteredSolvers()
# Methods that can share work between Linears reading the same input: (weights, hessian, spec, masks=..., **options)
# -> one SolveResult per weight, each identical to SOLVERS[method] on that weight alone.
GROUP_SOLVERS: Mapping[str, Callable[..., list[SolveResult]]] = _RegisteredSolvers(group=True)

__all__ = ["SOLVERS", "GROUP_SOLVERS", "SolveResult", "solve", "solve_group", "magnitude_prune", "wanda_prune",
           "sparsegpt_prune", "obc_prune"]


def solve(method: str, weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec | str | float,
          **options) -> SolveResult:
    """Prune one layer with SOLVERS[method]; unknown methods or options raise a one-line ConfigError."""
    solver = _solver(method)
    _check_options(method, solver, options)
    if not isinstance(spec, SparsitySpec):
        spec = SparsitySpec.parse(spec)
    return solver(weight, hessian, spec, **options)


def solve_group(method: str, weights: list[torch.Tensor], hessian: torch.Tensor, spec: SparsitySpec | str | float,
                *, masks: list[torch.Tensor] | None = None, **options) -> list[SolveResult]:
    """Prune several Linears that read the same input (one shared hessian [in, in]); one result per weight,
    each equal to solve(method, weight, hessian, spec, mask=..., **options). masks: fixed masks, one per weight.
    Methods in GROUP_SOLVERS share their factorization; the others are solved one by one."""
    solver = _solver(method)
    _check_options(method, solver, {**options, **({"mask": None} if masks is not None else {})})
    if not isinstance(spec, SparsitySpec):
        spec = SparsitySpec.parse(spec)
    if method in GROUP_SOLVERS:
        return GROUP_SOLVERS[method](weights, hessian, spec, masks=masks, **options)
    if masks is None:
        return [solver(w, hessian, spec, **options) for w in weights]
    return [solver(w, hessian, spec, mask=m, **options) for w, m in zip(weights, masks, strict=True)]


def _solver(method: str) -> Callable[..., SolveResult]:
    if method not in SOLVERS:
        raise ConfigError(f"unknown pruning method {method!r}; choose one of {', '.join(sorted(SOLVERS))}")
    return SOLVERS[method]


def _check_options(method: str, solver: Callable[..., SolveResult], options: dict) -> None:
    accepted = [name for name, p in inspect.signature(solver).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for pruning method {method!r}; "
                          f"it accepts {', '.join(accepted)}")
