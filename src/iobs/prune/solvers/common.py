"""What every solver shares: the result type, input checks, the reconstruction loss and the damped inverse Hessian."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from iobs.errors import ConfigError, DataError
from iobs.prune.solvers.triangular import inverse_cholesky_in_place
from iobs.targets import SparsitySpec, check_nm_fits

log = logging.getLogger("iobs")

# The SparseGPT protocol's damping, as a fraction of mean(diag H); also the floor when a caller asked for 0.
DEFAULT_PERCDAMP = 0.01


@dataclass
class SolveResult:
    """A pruned layer.

    weight: [out, in], dtype of the input weight, pruned entries exactly 0 (kept entries may also be 0, e.g. for dead
    inputs). mask: [out, in] bool, True = kept; sparsity is counted on the mask. loss: tr((W - W_hat) H (W - W_hat)^T)
    with the undamped Hessian passed to the solver (SparseGPT gets it from its OBS errors, equal to float32
    rounding; see sparsegpt_prune).
    """

    weight: torch.Tensor
    mask: torch.Tensor
    loss: float


def checked_inputs(weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and return float32 copies (weight [out, in], hessian [in, in]) that a solver may modify in place."""
    check_spec(spec)
    w = checked_weight(weight)
    check_nm_fits(w.shape[1], spec)
    h = checked_hessian(hessian, w.shape[1], w.device)
    return w, (h.clone() if h.data_ptr() == hessian.data_ptr() else h)


def check_spec(spec: SparsitySpec) -> None:
    if not isinstance(spec, SparsitySpec):
        raise ConfigError(f"spec must be a SparsitySpec, got {type(spec).__name__}; use SparsitySpec.parse('0.5')")


def checked_weight(weight: torch.Tensor) -> torch.Tensor:
    """A float32 copy of weight [out, in] (any float dtype), validated: 2-D and finite."""
    if not (isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.is_floating_point()):
        raise DataError(f"weight must be a 2-D float tensor [out, in], got {_describe(weight)}")
    w = weight.detach().to(torch.float32, copy=True)
    if not all_finite(w):
        raise DataError(f"weight {tuple(weight.shape)} contains NaN or inf; the model is broken upstream of pruning")
    return w


def checked_hessian(hessian: torch.Tensor, in_features: int, device: torch.device) -> torch.Tensor:
    """hessian [in, in] as float32 on `device`, validated. NOT a copy when it already is one: callers that modify
    it must clone (checked_inputs does); the SparseGPT path only reads it."""
    if not (isinstance(hessian, torch.Tensor) and hessian.is_floating_point()
            and tuple(hessian.shape) == (in_features, in_features)):
        raise DataError(f"hessian must be a float tensor [{in_features}, {in_features}] matching the weight's "
                        f"in_features, got {_describe(hessian)}")
    h = hessian.detach().to(device=device, dtype=torch.float32)
    if not all_finite(h):
        raise DataError(f"hessian [{in_features}, {in_features}] contains NaN or inf; "
                        "check the calibration activations (overflow in float16?)")
    if (h.diagonal() < 0).any():
        raise DataError(f"hessian [{in_features}, {in_features}] has negative diagonal entries; "
                        "it must be 2/N sum X X^T accumulated from activations")
    return h


def all_finite(x: torch.Tensor) -> bool:
    """True when x holds no NaN/inf. One reduction instead of a bool tensor of x's size: a NaN or inf anywhere
    makes the sum NaN or inf; only when the sum is not finite (possibly an overflow of large finite values) is
    every entry checked."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)} dtype {x.dtype}"
    return type(x).__name__


def zero_dead_inputs(w: torch.Tensor, h: torch.Tensor) -> None:
    """In place: inputs never active in calibration (H_ii = 0) get H_ii = 1 and a zero weight column (protocol)."""
    dead = (h.diagonal() == 0).nonzero().squeeze(1)
    h[dead, dead] = 1.0
    w[:, dead] = 0.0


def reconstruction_loss(original: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr(D H D^T), D = original - pruned. original, pruned: [out, in] float32; hessian: [in, in] float32."""
    delta = original - pruned
    return float(((delta @ hessian) * delta).sum(dtype=torch.float64))


def finish(original: torch.Tensor, solved: torch.Tensor, keep: torch.Tensor, hessian: torch.Tensor) -> SolveResult:
    """Zero the pruned entries exactly, compute the loss against the untouched inputs, cast back to their dtype."""
    pruned = solved.masked_fill(~keep, 0.0).to(original.dtype)
    # The loss describes the returned tensor, so it is computed after rounding back to the input dtype.
    loss = reconstruction_loss(original.detach().float(), pruned.float(),
                               hessian.detach().to(device=pruned.device, dtype=torch.float32))
    return SolveResult(weight=pruned, mask=keep, loss=loss)


def damped_inverse(h: torch.Tensor, percdamp: float, max_damp_retries: int = 5,
                   upper_cholesky: bool = False) -> torch.Tensor:
    """(H + damp I)^{-1} [in, in] float32, or its upper Cholesky factor U (U^T U = (H + damp I)^{-1}).

    damp = percdamp * mean(diag H). When H + damp I is not positive definite (or the inverse is not finite), retry
    with 10x the damping (at least DEFAULT_PERCDAMP), up to max_damp_retries times, then raise DataError.
    h must have no zero diagonal entries (see zero_dead_inputs), so mean(diag H) > 0.
    """
    if percdamp < 0:
        raise ConfigError(f"percdamp must be >= 0, got {percdamp}; the protocol uses {DEFAULT_PERCDAMP}")
    scale = float(h.diagonal().mean())
    identity = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    relative = percdamp
    for attempt in range(max_damp_retries + 1):
        factor, info = torch.linalg.cholesky_ex(h + relative * scale * identity)
        if info == 0:
            result = torch.cholesky_inverse(factor)
            if upper_cholesky:
                result, info = torch.linalg.cholesky_ex(result, upper=True)
            if info == 0 and torch.isfinite(result).all():
                return result
        if attempt < max_damp_retries:
            next_relative = max(10 * relative, DEFAULT_PERCDAMP)
            log.warning("Hessian [%d, %d] is not positive definite with damping %.3g * mean(diag H); retrying with "
                        "%.3g", h.shape[0], h.shape[1], relative, next_relative)
            relative = next_relative
    raise DataError(f"Hessian [{h.shape[0]}, {h.shape[1]}] is not positive definite even with damping "
                    f"{relative:.3g} * mean(diag H); check the calibration activations or raise percdamp")


@dataclass
class InverseFactor:
    """What SparseGPT needs from one Hessian, computed once and shared by every Linear that reads the same input.

    upper: [in, in] float32 upper triangular U with U^T U = (H_d)^-1, H_d = H with dead inputs' diagonal set to 1,
    plus damping * I. dead: bool [in], H_ii == 0 (inputs never active in calibration). damping: the absolute
    damping added to the diagonal (percdamp * mean(diag) after any retries).
    """

    upper: torch.Tensor
    dead: torch.Tensor
    damping: float


InverseMethod = Literal["auto", "triangular", "explicit"]

# Up to this width "auto" keeps the old solver's bits (every Linear of the default config's models, so its tables
# stay reproducible). The price: the explicit factorization takes about 2.5x the triangular one's time, 20-25% of
# a 768x768 solve; both routes are well inside issue 13's 0.5x of the old solve at these widths.
AUTO_EXPLICIT_MAX_COLS = 1024


def upper_inverse_factor(h: torch.Tensor, percdamp: float, max_damp_retries: int = 5,
                         method: InverseMethod = "auto") -> InverseFactor:
    """U with U^T U = (H + dead fix + damp I)^-1 for h [in, in] float32 (read only); damping and retries as in
    damped_inverse.

    method "explicit" is the textbook route (and the project's before issue 13): cholesky(H_d), cholesky_inverse,
    cholesky of the inverse: 4c^3/3 flops. "triangular" never forms the inverse: with J the reversal
    permutation, J H_d J = L L^T gives H_d^-1 = (J L^-T J)(J L^-1 J), and J L^-1 J is upper triangular with a
    positive diagonal, so it IS U (the Cholesky factor is unique). L^-1 comes from one recursion of matmuls
    (triangular.inverse_cholesky_in_place), 2c^3/3 flops: those of a cholesky plus a triangular inverse.
    Both are float32 roundings of the same U, not bit-identical: 3.5e-6 to 4e-6 apart (relative Frobenius norm) on
    the benchmark's 768- and 3072-input Hessians, more as the condition number grows, which is enough to flip a
    few near-tie mask choices on a large layer. "auto" (default) takes "explicit" for
    in <= AUTO_EXPLICIT_MAX_COLS (bit-identical to the old solver) and "triangular" above, where the factorization
    dominates a solve and takes about 0.37x of the explicit route's time (3072 inputs, one thread).
    """
    if percdamp < 0:
        raise ConfigError(f"percdamp must be >= 0, got {percdamp}; the protocol uses {DEFAULT_PERCDAMP}")
    if method not in ("auto", "triangular", "explicit"):
        raise ConfigError(f"unknown inverse method {method!r}; use 'auto', 'triangular' or 'explicit'")
    cols = h.shape[0]
    if method == "auto":
        method = "explicit" if cols <= AUTO_EXPLICIT_MAX_COLS else "triangular"
    dead = h.diagonal() == 0
    fixed_diagonal = h.diagonal().masked_fill(dead, 1.0)  # dead inputs get H_ii = 1 (the protocol)
    if method == "explicit":
        explicit = h.clone()
        explicit.diagonal().copy_(fixed_diagonal)
        scale = float(explicit.diagonal().mean())  # the old code's reduction, for the same bits
    else:
        scale = float(fixed_diagonal.mean())
    relative = percdamp
    for attempt in range(max_damp_retries + 1):
        damping = relative * scale
        if method == "explicit":
            explicit.diagonal().copy_(fixed_diagonal).add_(damping)  # the same float32 sums as h + damp * I
            factor, info = torch.linalg.cholesky_ex(explicit)
            if info == 0:
                upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(factor), upper=True)
        else:
            work = h.flip(0, 1)  # J H J, a new tensor, used as scratch
            work.diagonal().copy_(fixed_diagonal.flip(0)).add_(damping)
            inverse = torch.empty_like(work)
            info = inverse_cholesky_in_place(work, inverse)
            if info == 0:
                upper = inverse.flip(0, 1)
        if info == 0 and all_finite(upper):
            return InverseFactor(upper=upper, dead=dead, damping=damping)
        if attempt < max_damp_retries:
            next_relative = max(10 * relative, DEFAULT_PERCDAMP)
            log.warning("Hessian [%d, %d] is not positive definite with damping %.3g * mean(diag H); retrying with "
                        "%.3g", cols, cols, relative, next_relative)
            relative = next_relative
    raise DataError(f"Hessian [{cols}, {cols}] is not positive definite even with damping "
                    f"{relative:.3g} * mean(diag H); check the calibration activations or raise percdamp")
