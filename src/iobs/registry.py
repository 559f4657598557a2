"""The one list of pruning solvers, I-OBS variants and the sparsity grammar, which everything else reads.

The config schema's enums and option blocks (iobs.config), the rules' wildcard constraints (workflow/rules), the
CLI's choices (iobs.cli.parser), the tables' columns and the figures' labels all come from here, so a new solver is
one module under iobs/prune/solvers/ plus one ``register_solver`` call below, and a new variant one
``register_variant`` call.

This module imports neither torch nor any other iobs module that does: the CLI parser (``iobs --help`` must stay
instant) and the Snakefile (planning) read it. Solver functions are therefore named as "module:function" and
imported on first use.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class SolverEntry:
    """A layer solver: (weight [out, in], hessian [in, in], spec, **options) -> SolveResult."""

    name: str
    function: str  # "module:function" of the solver
    label: str  # tables and figures
    color: str  # matplotlib colour of its lines
    group_function: str | None = None  # solves several Linears that share one Hessian, sharing the factorization
    calibrated: bool = True  # False: its mask ignores the calibration data (the Hessian only scores the loss)
    projects: bool = False  # can be I-OBS's projection: updates the kept weights (not only a mask choice)
    keeps_mask: bool = False  # takes a fixed mask= and only corrects the kept weights (iobs_fixed_mask, fixed masks)
    options: dict[str, Any] = field(default_factory=dict)  # JSON-schema properties of pruning.options.<name>

    def load(self) -> Callable:
        return _import(self.function)

    def load_group(self) -> Callable | None:
        return _import(self.group_function) if self.group_function else None


@dataclass(frozen=True)
class Schedule:
    """How a variant's rounds use the projection and the gradient steps (iobs.iterative.rounds)."""

    project_every_round: bool  # False: only round 1 projects; later rounds keep the mask
    masked_steps: bool | None  # None: as the step config says; True/False: forced
    carry_projection: bool  # False: the steps continue from the unprojected state (the dense reference)
    fixed_mask: bool = False  # True: rounds >= 2 project onto round 1's mask (the solver corrects, never reselects)

    @property
    def sparsity_free_states(self) -> bool:
        """The stepped states never see a projection, so one chain of states serves every sparsity."""
        return not self.carry_projection


@dataclass(frozen=True)
class VariantEntry:
    name: str
    schedule: Schedule
    label: str
    color: str
    description: str


SOLVERS: dict[str, SolverEntry] = {}
VARIANTS: dict[str, VariantEntry] = {}


def register_solver(entry: SolverEntry) -> SolverEntry:
    if entry.name in SOLVERS or entry.name in VARIANTS or entry.name in dense_references():
        raise ValueError(f"method name {entry.name!r} is registered already")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", entry.name):
        raise ValueError(f"method name {entry.name!r} must be lower-case letters, digits and _ (it is a path part)")
    SOLVERS[entry.name] = entry
    return entry


def register_variant(entry: VariantEntry) -> VariantEntry:
    if entry.name in SOLVERS or entry.name in VARIANTS or entry.name in dense_references():
        raise ValueError(f"method name {entry.name!r} is registered already")
    if entry.schedule.sparsity_free_states and dense_reference(entry.name) in (*SOLVERS, *VARIANTS):
        raise ValueError(f"method name {dense_reference(entry.name)!r} (the dense reference of {entry.name}) is "
                         "registered already")
    VARIANTS[entry.name] = entry
    return entry


def _import(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


# ---- sparsity-free variants and their dense references -----------------------------------------------------------
# A variant whose projection is not carried (Schedule.sparsity_free_states; today dense_ft) steps the unpruned
# model, so one chain of states serves every sparsity, and its state before round r (the dense model after r-1 step
# blocks) is evaluated too, under the method name dense_reference(variant): evaluated, not a variant.
DENSE_REFERENCE_SUFFIX = "_dense"


def sparsity_free_variants(names=None) -> tuple[str, ...]:
    """The variants (of `names`, in their order; every registered one unless given) whose states do not depend on
    the sparsity: one chain job per model runs every sparsity and evaluates the dense states."""
    return tuple(name for name in (VARIANTS if names is None else names)
                 if VARIANTS[name].schedule.sparsity_free_states)


def dense_reference(variant: str) -> str:
    """The method name of a sparsity-free variant's dense states: the variant's name + "_dense" (dense_ft_dense).

    Pure text, so that a rule's "{variant}" pattern gives the matching "{variant}_dense" pattern."""
    return f"{variant}{DENSE_REFERENCE_SUFFIX}"


def dense_references() -> tuple[str, ...]:
    return tuple(dense_reference(name) for name in sparsity_free_variants())


def reference_variant(method: str) -> str | None:
    """The sparsity-free variant whose dense states `method` names (dense_ft for dense_ft_dense); None otherwise."""
    return next((name for name in sparsity_free_variants() if dense_reference(name) == method), None)


# ---- the sparsity grammar --------------------------------------------------------------------------------------
# A target is written as a fraction "0.5" (unstructured) or "N:M" (n zeros in every m consecutive inputs). The
# regular expression is what config files and result paths may hold; iobs.prune.sparsity.SparsitySpec parses it.
SPARSITY_PATTERN = r"0\.\d+|\d+:\d+"


def is_sparsity_text(text: str) -> bool:
    return re.fullmatch(SPARSITY_PATTERN, text) is not None


# ---- the solvers -----------------------------------------------------------------------------------------------
_SCOPE = {"scope": {"enum": ["layer", "row"], "description": "compare scores over the whole layer or per output row"}}
_DAMP = {"percdamp": {"type": "number", "exclusiveMinimum": 0, "description": "dampening: this fraction of the mean "
                      "Hessian diagonal is added to it"}}

register_solver(SolverEntry(
    "magnitude", "iobs.prune.solvers.scoring:magnitude_prune", "magnitude", "tab:purple", calibrated=False,
    options=_SCOPE))
register_solver(SolverEntry(
    "wanda", "iobs.prune.solvers.scoring:wanda_prune", "Wanda", "tab:orange", options=_SCOPE))
register_solver(SolverEntry(
    "sparsegpt", "iobs.prune.solvers.sparsegpt:sparsegpt_prune", "SparseGPT (one-shot)", "tab:gray",
    group_function="iobs.prune.solvers.sparsegpt:sparsegpt_prune_group", projects=True, keeps_mask=True,
    options={"blocksize": {"type": "integer", "minimum": 1}, **_DAMP,
             "inverse": {"enum": ["explicit", "triangular", "auto"],
                         "description": "factor of H^-1: auto (default: explicit up to 1024 inputs, "
                                        "triangular above), explicit (bit-identical to the solver before the engine "
                                        "rewrite), triangular (half the flops, not bit-identical)"},
             "exact_loss": {"type": "boolean", "description": "reconstruction loss from the product tr(D H D^T) "
                                                              "instead of the sweep's own OBS errors"}}))
register_solver(SolverEntry(
    "obc", "iobs.prune.solvers.obc:obc_prune", "OBC", "tab:brown", projects=True,
    options={**_DAMP, "max_in_features": {"type": "integer", "minimum": 1}}))


# ---- the I-OBS variants ----------------------------------------------------------------------------------------
register_variant(VariantEntry(
    "iobs", Schedule(project_every_round=True, masked_steps=None, carry_projection=True), "I-OBS", "tab:red",
    "I-OBS: project, then gradient steps, every round"))
register_variant(VariantEntry(
    "sparsegpt_ft", Schedule(project_every_round=False, masked_steps=True, carry_projection=True),
    "SparseGPT + masked fine-tuning", "tab:blue", "control: SparseGPT once, then masked steps"))
register_variant(VariantEntry(
    "dense_ft", Schedule(project_every_round=True, masked_steps=False, carry_projection=False),
    "fine-tune dense, then prune", "tab:green",
    "control: steps on the dense model, projected each round"))
register_variant(VariantEntry(
    "iobs_fixed_mask", Schedule(project_every_round=True, masked_steps=False, carry_projection=True,
                                fixed_mask=True),
    "I-OBS, round 1's mask kept", "tab:pink",
    "I-OBS whose projections keep round 1's mask: separates mask reselection from the steps and the Hessian-aware "
    "correction"))

# The report's dense reference (the control "dense + fine-tuning" of the tables and figures): dense_ft's.
DENSE_REFERENCE = dense_reference("dense_ft")


# ---- views that the schema, the rules, the CLI and the report read ---------------------------------------------
def oneshot_methods() -> tuple[str, ...]:
    return tuple(SOLVERS)


def projection_solvers() -> tuple[str, ...]:
    return tuple(name for name, entry in SOLVERS.items() if entry.projects)


def mask_keeping_solvers() -> tuple[str, ...]:
    return tuple(name for name, entry in SOLVERS.items() if entry.keeps_mask)


def variant_names() -> tuple[str, ...]:
    return tuple(VARIANTS)


def evaluated_methods() -> tuple[str, ...]:
    """Every method name an evaluated model can carry: dense, the one-shot solvers, the variants, the dense states
    of the sparsity-free variants (dense_ft_dense)."""
    return ("dense", *SOLVERS, *VARIANTS, *dense_references())


def uncalibrated_methods() -> tuple[str, ...]:
    return ("dense", *(name for name, entry in SOLVERS.items() if not entry.calibrated))


def wildcard(names) -> str:
    """A Snakemake wildcard constraint matching exactly these names (never matching anything when empty)."""
    return "|".join(re.escape(name) for name in names) or "^$"


def labels() -> dict[str, str]:
    return {"dense": "dense", **{n: e.label for n, e in SOLVERS.items()}, **{n: e.label for n, e in VARIANTS.items()}}


def colors() -> dict[str, str]:
    return {"dense": "black", **{n: e.color for n, e in SOLVERS.items()}, **{n: e.color for n, e in VARIANTS.items()}}


def schema_fragment(kind: str) -> dict:
    """What a schema node marked ``x-registry: KIND`` becomes (iobs.config.load_schema fills them in)."""
    fragments = {
        "solvers": lambda: {"enum": list(oneshot_methods())},
        "projection-solvers": lambda: {"enum": list(projection_solvers())},
        "variants": lambda: {"enum": list(variant_names())},
        "evaluated-methods": lambda: {"enum": list(evaluated_methods())},
        "sparsity": lambda: {"type": "string", "pattern": f"^({SPARSITY_PATTERN})$"},
        "solver-options": lambda: {
            "type": "object", "additionalProperties": False,
            "properties": {name: {"type": "object", "additionalProperties": False, "properties": dict(entry.options)}
                           for name, entry in SOLVERS.items()}},
    }
    if kind not in fragments:
        raise KeyError(f"unknown x-registry kind {kind!r}; known: {', '.join(fragments)}")
    return fragments[kind]()
