"""Numerical properties of the sparse-recovery steps (k-IHT, Topk-I-OBS, theoretical I-OBS)."""

import itertools
import math

import pytest
import torch

from iobs.recovery.algorithms import (exact_obs_removal, greedy_obs_prune, hard_threshold, obs_correct, obs_project,
                                      removal_cost)
from iobs.recovery.problems import RecoveryProblem, gaussian_problem
from iobs.recovery.solve import solve_least_squares

F64 = torch.float64


def random_spd(d: int, seed: int, samples_per_dim: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(samples_per_dim * d, d, generator=g, dtype=F64) / math.sqrt(samples_per_dim * d)
    return X.T @ X


def brute_force_projection(theta: torch.Tensor, H: torch.Tensor, k: int):
    """min ||theta' - theta||_H over theta' supported on some k-set, by the kept-set normal equations
    (independent of the removal-set formulation in the package)."""
    best = (math.inf, None)
    d = theta.shape[0]
    for kept in itertools.combinations(range(d), k):
        kept = torch.tensor(kept)
        candidate = torch.zeros_like(theta)
        candidate[kept] = torch.linalg.solve(H[kept][:, kept], (H @ theta)[kept])
        diff = candidate - theta
        cost = float(diff @ H @ diff)
        if cost < best[0]:
            best = (cost, candidate)
    return best


def test_hard_threshold_keeps_largest_magnitudes_with_per_run_k():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5], [4.0, -0.2, 0.3, -5.0]], dtype=F64)
    out = hard_threshold(w, torch.tensor([2, 1]))
    assert torch.equal(out, torch.tensor([[0.0, -3.0, 2.0, 0.0], [0.0, 0.0, 0.0, -5.0]], dtype=F64))
    assert torch.equal(hard_threshold(w, 4), w)


def test_topk_iobs_recovers_w_star_on_well_conditioned_noiseless_problem():
    problem = gaussian_problem(n=200, d=40, k_true=5, k=10, runs=3, seed=11)
    trajectory = solve_least_squares(problem, "topk_iobs", iterations=3, step="exact")
    assert trajectory.dist[:, 0].min() > 0.5  # the start is far away
    assert trajectory.dist[:, -1].max() < 1e-10
    assert torch.allclose(trajectory.w_final, problem.w_star, atol=1e-10)
    assert trajectory.loss[:, -1].max() < 1e-20


def test_paper_steps_match_the_explicit_formulas():
    problem = gaussian_problem(n=60, d=20, k_true=4, k=8, runs=2, seed=3)
    X, y, w, n = problem.X, problem.y, problem.w_init, problem.n
    grad = (2.0 / n) * (X.transpose(1, 2) @ (X @ w.unsqueeze(-1) - y.unsqueeze(-1))).squeeze(-1)
    gram = X.transpose(1, 2) @ X
    newton = hard_threshold(w - torch.linalg.solve(gram, grad), problem.k)
    iht = hard_threshold(w - grad / torch.linalg.eigvalsh(gram)[:, -1:], problem.k)
    assert torch.allclose(solve_least_squares(problem, "topk_iobs", 1).w_final, newton, atol=1e-12)
    assert torch.allclose(solve_least_squares(problem, "kiht", 1).w_final, iht, atol=1e-12)
    direct_loss = (X @ w.unsqueeze(-1) - y.unsqueeze(-1)).squeeze(-1).pow(2).mean(-1)
    assert torch.allclose(solve_least_squares(problem, "kiht", 1).loss[:, 0], direct_loss, rtol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_exact_support_obs_projection_equals_brute_force(seed):
    d, k = 8, 3
    H = random_spd(d, seed)
    theta = torch.randn(d, generator=torch.Generator().manual_seed(100 + seed), dtype=F64)
    projected, search = obs_project(theta[None], torch.linalg.inv(H)[None], k, max_supports=10_000)
    best_cost, best = brute_force_projection(theta, H, k)
    diff = projected[0] - theta
    assert search == "exact"
    assert int((projected[0] != 0).sum()) == k
    assert float(diff @ H @ diff) == pytest.approx(best_cost, rel=1e-9)
    assert torch.allclose(projected[0], best, atol=1e-10)


def test_greedy_is_exact_for_diagonal_hessians_and_single_removals():
    g = torch.Generator().manual_seed(5)
    theta = torch.randn(4, 9, generator=g, dtype=F64)
    diag = torch.rand(4, 9, generator=g, dtype=F64) + 0.1
    h_inv = torch.diag_embed(1 / diag)
    # Diagonal H: the optimal removal is the d - k smallest theta_i^2 H_ii, with no correction of the rest.
    expected = hard_threshold(theta * diag.sqrt(), 5) / diag.sqrt()
    assert torch.allclose(greedy_obs_prune(theta, h_inv, 5), expected, atol=1e-14)
    # Removing one coordinate: greedy's single choice is the optimal one, for any H.
    for seed in range(5):
        h_inv = torch.linalg.inv(random_spd(9, seed))
        greedy = greedy_obs_prune(theta[:1], h_inv[None], 8)[0]
        exact = obs_correct(theta[0], h_inv, exact_obs_removal(theta[0], h_inv, 8))
        assert torch.allclose(greedy, exact, atol=1e-12)


def test_greedy_equals_the_joint_obs_correction_and_exact_is_never_worse():
    d, k = 10, 4
    for seed in range(6):
        H = random_spd(d, seed)
        h_inv = torch.linalg.inv(H)
        theta = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=F64)
        greedy = greedy_obs_prune(theta[None], h_inv[None], k)[0]
        removed = (greedy == 0).nonzero().squeeze(-1)
        assert removed.numel() == d - k
        # Sequential one-at-a-time OBS updates must equal the joint correction for the same removal set.
        assert torch.allclose(greedy, obs_correct(theta, h_inv, removed), atol=1e-10)
        topk_removed = (hard_threshold(theta[None], k)[0] == 0).nonzero().squeeze(-1)
        exact_cost = removal_cost(theta, h_inv, exact_obs_removal(theta, h_inv, k))
        assert exact_cost <= removal_cost(theta, h_inv, removed) * (1 + 1e-12)
        assert exact_cost <= removal_cost(theta, h_inv, topk_removed) * (1 + 1e-12)


def test_obs_project_switches_to_greedy_above_max_supports():
    H = random_spd(10, 0)
    theta = torch.randn(2, 10, generator=torch.Generator().manual_seed(1), dtype=F64)
    h_inv = torch.linalg.inv(H).expand(2, 10, 10)
    _, search = obs_project(theta, h_inv, 4, max_supports=math.comb(10, 6) - 1)
    assert search == "greedy"
    _, search = obs_project(theta, h_inv, 4, max_supports=math.comb(10, 6))
    assert search == "exact"


def test_iht_with_step_one_over_L_never_increases_the_loss():
    problem = gaussian_problem(n=64, d=32, k_true=4, k=8, runs=4, seed=2)
    sparse_start = hard_threshold(problem.w_init * 20, problem.k)  # IHT's descent guarantee needs a k-sparse start
    problem = RecoveryProblem(problem.X, problem.y, problem.w_star, sparse_start, problem.k)
    loss = solve_least_squares(problem, "kiht", iterations=200, step="exact").loss
    increase = (loss[:, 1:] - loss[:, :-1]) / loss[:, :-1]
    assert increase.max() <= 1e-12
    assert (loss[:, -1] < 0.05 * loss[:, 0]).all()  # and it does make progress


def test_theoretical_iobs_beats_topk_on_the_damped_gaussian_problem():
    problem = gaussian_problem(n=64, d=24, k_true=3, k=8, runs=3, seed=8)
    iobs = solve_least_squares(problem, "iobs", iterations=150)
    topk = solve_least_squares(problem, "topk_iobs", iterations=150)
    assert iobs.support_search == "greedy"
    assert (iobs.w_final != 0).sum(-1).max() <= 8
    assert iobs.dist[:, -1].mean() < topk.dist[:, -1].mean()
