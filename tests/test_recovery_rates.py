"""The local-rate experiment: exact Newton-type steps converge quadratically, k-IHT linearly."""

import numpy as np
import pytest
import torch

from iobs.recovery.problems import RESIDUAL_PENALTIES, rates_problem, residual_loss
from iobs.recovery.report import observed_orders
from iobs.recovery.solve import solve_residual


@pytest.fixture(scope="module")
def problem():
    return rates_problem(n=64, d=12, k_true=3, k=3, runs=10, seed=1234, init_scale=0.3)


def near_solution_orders(trajectory, problem):
    rel = trajectory.dist.numpy() / problem.w_star.norm(dim=-1, keepdim=True).numpy()
    order, ratio = observed_orders(rel)
    near = np.isfinite(order) & (rel < 1e-2)
    return order[near], ratio[np.isfinite(ratio) & (rel < 1e-2)]


@pytest.mark.parametrize("penalty", sorted(RESIDUAL_PENALTIES))
def test_residual_loss_gradient_and_hessian_match_autograd(penalty, problem):
    w = (problem.w_init[:2] + 0.1).requires_grad_(True)
    loss, grad, hess = residual_loss(problem.X[:2], problem.y[:2], w, penalty)
    auto_grad, = torch.autograd.grad(loss.sum(), w, create_graph=True)
    assert torch.allclose(grad, auto_grad, rtol=1e-10)
    for r in range(2):
        auto_hess = torch.autograd.functional.hessian(
            lambda v: residual_loss(problem.X[r:r + 1], problem.y[r:r + 1], v[None], penalty)[0].sum(), w[r].detach())
        assert torch.allclose(hess[r], auto_hess, rtol=1e-10, atol=1e-12)
    at_solution = residual_loss(problem.X, problem.y, problem.w_star, penalty)
    assert at_solution[0].abs().max() < 1e-25 and at_solution[1].abs().max() < 1e-12  # w* is the minimiser


@pytest.mark.parametrize("algorithm", ["topk_iobs", "iobs"])
def test_newton_type_steps_converge_quadratically(algorithm, problem):
    trajectory = solve_residual(problem, algorithm, iterations=8)
    order, ratio = near_solution_orders(trajectory, problem)
    assert order.size >= 5 and ratio.size >= 3
    assert np.median(order) > 1.5 and np.median(ratio) > 1.5
    assert np.median(ratio) < 2.5  # quadratic, not cubic, for the exponential penalty
    assert trajectory.dist[:, -1].max() < 1e-10
    assert torch.isfinite(trajectory.loss).all()


def test_quartic_penalty_converges_cubically(problem):
    order, ratio = near_solution_orders(solve_residual(problem, "topk_iobs", 6, penalty="quartic"), problem)
    assert np.median(ratio) > 2.5


def test_iht_converges_linearly(problem):
    trajectory = solve_residual(problem, "kiht", iterations=12)
    order, ratio = near_solution_orders(trajectory, problem)
    assert order.size >= 20
    assert 0.9 < np.median(order) < 1.3
    assert 0.8 < np.median(ratio) < 1.2
    assert (trajectory.dist[:, -1] < trajectory.dist[:, 0]).all()


def test_observed_orders_stop_at_machine_precision():
    rel = np.array([[1e-1, 1e-2, 1e-4, 1e-8, 1e-16, 0.0, 0.0]])
    order, ratio = observed_orders(rel, floor=1e-13)
    assert np.allclose(order[0, :3], [2.0, 2.0, 2.0])
    assert np.isnan(order[0, 3:]).all()  # e_4 is below the floor: no log of noise, no log(0)
    assert np.allclose(ratio[0, 1:3], [2.0, 2.0]) and np.isnan(ratio[0, [0, 3, 4, 5, 6]]).all()
