"""Iteration drivers: run one algorithm on a batch of problems and record its trajectory.

Step choices for the least-squares experiments (grad is the gradient of the MEAN loss, (2/n) X^T (Xw - y)):
- "paper": the damped steps of the paper's code: k-IHT w - grad / lambda_max(X^T X); Newton-type steps
  w - (X^T X)^{-1} grad, i.e. a Newton step damped by 2/n.
- "exact": k-IHT with step 1/L, L = lambda_max of the true Hessian (2/n) X^T X; full Newton steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iobs.errors import ConfigError
from iobs.recovery.algorithms import iht_step, iobs_step, topk_iobs_step
from iobs.recovery.problems import LeastSquares, RecoveryProblem, residual_loss

ALGORITHMS = ("kiht", "topk_iobs", "iobs")
ALGORITHM_LABELS = {"kiht": "k-IHT", "topk_iobs": "Topk-I-OBS", "iobs": "I-OBS (OBS support + correction)"}
STEPS = ("paper", "exact")


@dataclass
class Trajectory:
    """Per-iteration records of R runs (iteration 0 = the start). loss, dist: (R, T + 1) with dist = ||w - w*||;
    w_final: (R, d); support_search: "exact"/"greedy" for I-OBS, else None. All float64."""

    loss: torch.Tensor
    dist: torch.Tensor
    w_final: torch.Tensor
    support_search: str | None = None


def _check(algorithm: str, step: str = "paper") -> None:
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    if step not in STEPS:
        raise ConfigError(f"unknown step {step!r}: use 'paper' or 'exact'")


def solve_least_squares(problem: RecoveryProblem, algorithm: str, iterations: int, step: str = "paper",
                        max_supports: int = 20000) -> Trajectory:
    """Run ``algorithm`` for ``iterations`` steps from problem.w_init on f(w) = (1/n)||Xw - y||^2."""
    _check(algorithm, step)
    ls = LeastSquares.from_problem(problem)
    curvature = ls.G if step == "paper" else (2.0 / ls.n) * ls.G
    # With curvature c*G, curvature^{-1} grad = (2/(n c)) (w - w_ls): the Newton direction needs no solve.
    newton_fraction = 2.0 / ls.n if step == "paper" else 1.0
    iht_step_size = 1.0 / torch.linalg.eigvalsh(curvature)[:, -1]
    h_inv = torch.cholesky_inverse(torch.linalg.cholesky(curvature)) if algorithm == "iobs" else None
    w, search = problem.w_init.clone(), None
    loss = torch.empty(problem.runs, iterations + 1, dtype=w.dtype)
    dist = torch.empty_like(loss)
    for t in range(iterations + 1):
        loss[:, t], grad = ls.loss_and_grad(w)
        dist[:, t] = (w - problem.w_star).norm(dim=-1)
        if t == iterations:
            break
        if algorithm == "kiht":
            w = iht_step(w, grad, iht_step_size, problem.k)
        elif algorithm == "topk_iobs":
            w = topk_iobs_step(w, newton_fraction * (w - ls.w_ls), problem.k)
        else:
            w, search = iobs_step(w, newton_fraction * (w - ls.w_ls), h_inv, problem.k, max_supports)
    return Trajectory(loss=loss, dist=dist, w_final=w, support_search=search)


def solve_residual(problem: RecoveryProblem, algorithm: str, iterations: int, penalty: str = "exponential",
                   max_supports: int = 20000) -> Trajectory:
    """Exact-Hessian steps on f(w) = (1/n) sum phi(x_i^T w - y_i) (see problems.RESIDUAL_PENALTIES): k-IHT with
    step 1/lambda_max(H(w_t)), full Newton steps for Topk-I-OBS and I-OBS (whose projection uses H(w_t))."""
    _check(algorithm)
    w, search = problem.w_init.clone(), None
    loss = torch.empty(problem.runs, iterations + 1, dtype=w.dtype)
    dist = torch.empty_like(loss)
    for t in range(iterations + 1):
        loss[:, t], grad, hess = residual_loss(problem.X, problem.y, w, penalty)
        dist[:, t] = (w - problem.w_star).norm(dim=-1)
        if t == iterations:
            break
        if algorithm == "kiht":
            w = iht_step(w, grad, 1.0 / torch.linalg.eigvalsh(hess)[:, -1], problem.k)
            continue
        chol = torch.linalg.cholesky(hess)
        newton = torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
        if algorithm == "topk_iobs":
            w = topk_iobs_step(w, newton, problem.k)
        else:
            w, search = iobs_step(w, newton, torch.cholesky_inverse(chol), problem.k, max_supports)
    return Trajectory(loss=loss, dist=dist, w_final=w, support_search=search)
