"""Sparse-recovery steps as pure functions on batched float64 tensors (leading dimension R = runs).

- k-IHT:        w <- T_k(w - eta * grad)
- Topk-I-OBS:   w <- T_k(w - H^{-1} grad)                       (top-k of the Newton step)
- I-OBS:        w <- OBS projection of theta+ = w - H^{-1} grad  (optimal support, then OBS correction)

The OBS projection of theta onto k-sparse vectors in the H-norm removes a set S of d - k coordinates minimising
cost(S) = theta_S^T [(H^{-1})_SS]^{-1} theta_S and moves the kept ones by -H^{-1}_{:,S} [(H^{-1})_SS]^{-1} theta_S,
which is the paper's (I - H^{-1} H^S) theta+. It is invariant to scaling H, so damped and exact steps share it.
"""

from __future__ import annotations

import itertools
import math

import torch


def _as_batch_k(k, w: torch.Tensor) -> torch.Tensor:
    """k as an int64 tensor of shape (R,) for w of shape (R, d)."""
    k = torch.as_tensor(k, dtype=torch.int64, device=w.device)
    return k.expand(w.shape[0]) if k.ndim == 0 else k


def hard_threshold(w: torch.Tensor, k) -> torch.Tensor:
    """T_k: keep the k largest |entries| of each row of w (R, d), zero the rest; k int or (R,) int64."""
    k = _as_batch_k(k, w)
    order = torch.argsort(w.abs(), dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(w.shape[-1]).expand_as(order))
    return torch.where(ranks < k.unsqueeze(-1), w, torch.zeros_like(w))


def iht_step(w: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, k) -> torch.Tensor:
    """k-IHT: T_k(w - step_size * grad). w, grad: (R, d); step_size: (R,) or scalar."""
    step = torch.as_tensor(step_size, dtype=w.dtype)
    return hard_threshold(w - (step.unsqueeze(-1) if step.ndim else step) * grad, k)


def topk_iobs_step(w: torch.Tensor, newton_direction: torch.Tensor, k) -> torch.Tensor:
    """Topk-I-OBS: T_k(w - H^{-1} grad); newton_direction = H^{-1} grad, (R, d)."""
    return hard_threshold(w - newton_direction, k)


def iobs_step(w: torch.Tensor, newton_direction: torch.Tensor, h_inv: torch.Tensor, k,
              max_supports: int) -> tuple[torch.Tensor, str]:
    """Theoretical I-OBS: OBS projection of w - H^{-1} grad. h_inv: (R, d, d). Returns (w_next, search)."""
    return obs_project(w - newton_direction, h_inv, k, max_supports)


def removal_cost(theta: torch.Tensor, h_inv: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """OBS cost of zeroing coordinates ``removed`` (..., m) of theta (d,): theta_S^T [(H^{-1})_SS]^{-1} theta_S."""
    theta_s = theta[removed]
    block = h_inv[removed.unsqueeze(-1), removed.unsqueeze(-2)]
    return (theta_s * torch.linalg.solve(block, theta_s.unsqueeze(-1)).squeeze(-1)).sum(-1)


def obs_correct(theta: torch.Tensor, h_inv: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """theta (d,) with coordinates ``removed`` (m,) zeroed and the rest moved optimally in the H-norm."""
    if removed.numel() == 0:
        return theta.clone()
    block = h_inv[removed.unsqueeze(-1), removed]
    out = theta - h_inv[:, removed] @ torch.linalg.solve(block, theta[removed])
    out[removed] = 0.0  # exact zeros (the update makes them zero up to rounding)
    return out


def supports_to_remove(d: int, k: int) -> torch.Tensor:
    """All removal sets of size d - k as an int64 tensor (C(d, d-k), d - k)."""
    return torch.tensor(list(itertools.combinations(range(d), d - k)), dtype=torch.int64).reshape(-1, d - k)


def exact_obs_removal(theta: torch.Tensor, h_inv: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """The optimal removal set (d - k,) for one instance, by enumerating all C(d, d - k) sets."""
    sets = supports_to_remove(theta.shape[0], k)
    costs = torch.cat([removal_cost(theta, h_inv, part) for part in sets.split(chunk)])
    return sets[torch.argmin(costs)]


def greedy_obs_prune(theta: torch.Tensor, h_inv: torch.Tensor, k) -> torch.Tensor:
    """Greedy OBS: remove d - k coordinates one at a time, each the cheapest w_q^2 / [H^{-1}]_qq, updating theta
    and H^{-1} (the inverse of H with q removed) after each removal. theta: (R, d), h_inv: (R, d, d)."""
    theta, h_inv = theta.clone(), h_inv.clone()
    R, d = theta.shape
    to_remove = d - _as_batch_k(k, theta)
    removed = torch.zeros_like(theta, dtype=torch.bool)
    rows = torch.arange(R)
    for step in range(int(to_remove.max())):
        active = step < to_remove
        diag = torch.diagonal(h_inv, dim1=-2, dim2=-1)
        score = (theta.pow(2) / diag).masked_fill(removed, math.inf)
        q = torch.argmin(score, dim=-1)
        column = h_inv[rows, :, q]
        scale = torch.where(active, 1.0 / diag[rows, q], torch.zeros_like(theta[:, 0]))
        theta -= (scale * theta[rows, q]).unsqueeze(-1) * column
        h_inv.baddbmm_((-scale).view(R, 1, 1) * column.unsqueeze(-1), column.unsqueeze(-2))  # rank-1 downdate
        removed[rows[active], q[active]] = True
        theta.masked_fill_(removed, 0.0)
    return theta


def obs_project(theta: torch.Tensor, h_inv: torch.Tensor, k, max_supports: int) -> tuple[torch.Tensor, str]:
    """H-norm projection of theta (R, d) onto k-sparse vectors (h_inv: (R, d, d)).

    Exact enumeration when every run has at most max_supports removal sets, otherwise greedy OBS removal.
    Returns (projected (R, d), "exact" or "greedy").
    """
    ks = _as_batch_k(k, theta)
    d = theta.shape[-1]
    if max(math.comb(d, d - int(kr)) for kr in ks) > max_supports:
        return greedy_obs_prune(theta, h_inv, ks), "greedy"
    out = [obs_correct(theta[r], h_inv[r], exact_obs_removal(theta[r], h_inv[r], int(ks[r])))
           for r in range(theta.shape[0])]
    return torch.stack(out), "exact"
