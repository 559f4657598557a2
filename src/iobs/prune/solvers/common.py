"""What every solver shares: the result type, input checks, the reconstruction loss and the damped inverse Hessian."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from iobs.errors import ConfigError, DataError
from iobs.prune.sparsity import SparsitySpec, check_nm_fits

log = logging.getLogger("iobs")

# The SparseGPT protocol's damping, as a fraction of mean(diag H); also the floor when a caller asked for 0.
DEFAULT_PERCDAMP = 0.01


@dataclass
class SolveResult:
    """A pruned layer.

    weight: [out, in], dtype of the input weight, pruned entries exactly 0 (kept entries may also be 0, e.g. for dead
    inputs). mask: [out, in] bool, True = kept; sparsity is counted on the mask. loss: tr((W - W_hat) H (W - W_hat)^T)
    with the undamped Hessian passed to the solver.
    """

    weight: torch.Tensor
    mask: torch.Tensor
    loss: float


def checked_inputs(weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and return float32 copies (weight [out, in], hessian [in, in]) that a solver may modify in place."""
    if not isinstance(spec, SparsitySpec):
        raise ConfigError(f"spec must be a SparsitySpec, got {type(spec).__name__}; use SparsitySpec.parse('0.5')")
    if not (isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.is_floating_point()):
        raise DataError(f"weight must be a 2-D float tensor [out, in], got {_describe(weight)}")
    in_features = weight.shape[1]
    if not (isinstance(hessian, torch.Tensor) and hessian.is_floating_point()
            and tuple(hessian.shape) == (in_features, in_features)):
        raise DataError(f"hessian must be a float tensor [{in_features}, {in_features}] matching weight "
                        f"{tuple(weight.shape)}, got {_describe(hessian)}")
    check_nm_fits(in_features, spec)
    w = weight.detach().to(torch.float32, copy=True)
    h = hessian.detach().to(device=w.device, dtype=torch.float32, copy=True)
    if not torch.isfinite(w).all():
        raise DataError(f"weight {tuple(weight.shape)} contains NaN or inf; the model is broken upstream of pruning")
    if not torch.isfinite(h).all():
        raise DataError(f"hessian [{in_features}, {in_features}] contains NaN or inf; "
                        "check the calibration activations (overflow in float16?)")
    if (h.diagonal() < 0).any():
        raise DataError(f"hessian [{in_features}, {in_features}] has negative diagonal entries; "
                        "it must be 2/N sum X X^T accumulated from activations")
    return w, h


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
