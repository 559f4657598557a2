"""Problem instances of the synthetic experiments, stacked over R independent runs (float64 throughout).

Seeding: run r draws everything from its own generator seeded with ``seed + r``, always in the same order,
so every algorithm of an experiment sees identical instances (they run as separate jobs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from iobs.errors import ConfigError
from iobs.recovery.images import resolve_image_source  # noqa: F401  (re-exported for the workflow)

DTYPE = torch.float64


@dataclass
class RecoveryProblem:
    """R noiseless instances of min_w f(w) s.t. ||w||_0 <= k, with y = X w*.

    X: (R, n, d), y: (R, n), w_star: (R, d), w_init: (R, d), all float64; k: (R,) int64 (may differ per run).
    image_shape: (rows, cols) when w* is a flattened image, else None.
    """

    X: torch.Tensor
    y: torch.Tensor
    w_star: torch.Tensor
    w_init: torch.Tensor
    k: torch.Tensor
    image_shape: tuple[int, int] | None = None

    @property
    def runs(self) -> int:
        return self.X.shape[0]

    @property
    def n(self) -> int:
        return self.X.shape[1]

    @property
    def d(self) -> int:
        return self.X.shape[2]


def linear_init(d: int, generator: torch.Generator) -> torch.Tensor:
    """PyTorch's default nn.Linear weight init for one output: U(-1/sqrt(d), 1/sqrt(d)), shape (d,)."""
    bound = 1.0 / math.sqrt(d)
    return (torch.rand(d, generator=generator, dtype=DTYPE) * 2 - 1) * bound


def sparse_gaussian(d: int, k_true: int, generator: torch.Generator) -> torch.Tensor:
    """w* ~ N(0, I_d) with d - k_true coordinates (chosen uniformly) set to zero, shape (d,)."""
    w = torch.randn(d, generator=generator, dtype=DTYPE)
    w[torch.randperm(d, generator=generator)[: d - k_true]] = 0.0
    return w


def _stack(parts: list[dict], k: list[int], image_shape=None) -> RecoveryProblem:
    stacked = {key: torch.stack([p[key] for p in parts]) for key in ("X", "y", "w_star", "w_init")}
    return RecoveryProblem(**stacked, k=torch.tensor(k, dtype=torch.int64), image_shape=image_shape)


def gaussian_problem(n: int, d: int, k_true: int, k: int, runs: int, seed: int) -> RecoveryProblem:
    """The paper's Gaussian prior: X = randn(n, d)/sqrt(n), sparse Gaussian w*, nn.Linear init."""
    if not 1 <= k_true <= k <= d:
        raise ConfigError(f"gaussian prior needs 1 <= k_true ({k_true}) <= k ({k}) <= d ({d}): fix the experiment")
    parts = []
    for r in range(runs):
        g = torch.Generator().manual_seed(seed + r)
        X = torch.randn(n, d, generator=g, dtype=DTYPE) / math.sqrt(n)
        w_star = sparse_gaussian(d, k_true, g)
        parts.append({"X": X, "y": X @ w_star, "w_star": w_star, "w_init": linear_init(d, g)})
    return _stack(parts, [k] * runs)


def image_k(image: torch.Tensor, k_factor: float) -> int:
    """Kept sparsity for one image: round(k_factor * nnz), clamped to [1, d] (8x8 digits have nnz*2 > 64)."""
    d = image.numel()
    return int(min(max(round(k_factor * int((image != 0).sum())), 1), d))


def image_problem(images: torch.Tensor, k_factor: float, n_factor: float, seed: int) -> RecoveryProblem:
    """Image prior: run r recovers image r (images: (R, rows, cols), raw scale) from n = n_factor*d
    Gaussian measurements X = randn(n, d)/sqrt(n); k = k_factor * nnz(image r)."""
    runs, rows, cols = images.shape
    d = rows * cols
    n = max(1, round(n_factor * d))
    parts, ks = [], []
    for r in range(runs):
        g = torch.Generator().manual_seed(seed + r)
        w_star = images[r].reshape(d).to(DTYPE)
        X = torch.randn(n, d, generator=g, dtype=DTYPE) / math.sqrt(n)
        parts.append({"X": X, "y": X @ w_star, "w_star": w_star, "w_init": linear_init(d, g)})
        ks.append(image_k(w_star, k_factor))
    return _stack(parts, ks, image_shape=(rows, cols))


def rates_problem(n: int, d: int, k_true: int, k: int, runs: int, seed: int, init_scale: float) -> RecoveryProblem:
    """The rates experiment: rows x_i ~ N(0, I_d) (unnormalised, so residuals are O(||w - w*||) and the
    non-quadratic part of the loss matters), sparse Gaussian w*, y = X w*, and the start
    w* + init_scale * ||w*|| * u with u a uniformly random unit vector."""
    if not 1 <= k_true <= k <= d:
        raise ConfigError(f"synthetic.rates needs 1 <= k_true ({k_true}) <= k ({k}) <= d ({d}): fix it")
    parts = []
    for r in range(runs):
        g = torch.Generator().manual_seed(seed + r)
        X = torch.randn(n, d, generator=g, dtype=DTYPE)
        w_star = sparse_gaussian(d, k_true, g)
        direction = torch.randn(d, generator=g, dtype=DTYPE)
        w_init = w_star + init_scale * w_star.norm() * direction / direction.norm()
        parts.append({"X": X, "y": X @ w_star, "w_star": w_star, "w_init": w_init})
    return _stack(parts, [k] * runs)


@dataclass
class LeastSquares:
    """f(w) = (1/n)||X w - y||^2 = (1/n)[(w - w_ls)^T G (w - w_ls) + rss], batched; G = X^T X.

    This exact rewrite makes every iteration one (R, d, d) mat-vec instead of two (R, n, d) ones.
    G: (R, d, d), w_ls: (R, d), rss: (R,), n: samples.
    """

    G: torch.Tensor
    w_ls: torch.Tensor
    rss: torch.Tensor
    n: int

    @classmethod
    def from_problem(cls, problem: RecoveryProblem) -> "LeastSquares":
        X, y = problem.X, problem.y
        G = X.transpose(1, 2) @ X
        chol, info = torch.linalg.cholesky_ex(G)
        if bool((info != 0).any()):
            raise ConfigError("X^T X is singular (n < d?): use n >= d (n_factor >= 1) so the Newton step exists")
        w_ls = torch.cholesky_solve((X.transpose(1, 2) @ y.unsqueeze(-1)), chol).squeeze(-1)
        rss = ((X @ w_ls.unsqueeze(-1)).squeeze(-1) - y).pow(2).sum(-1)
        return cls(G=G, w_ls=w_ls, rss=rss, n=problem.n)

    def loss_and_grad(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w: (R, d) -> loss (R,), gradient (R, d) of the mean loss."""
        e = w - self.w_ls
        Ge = (self.G @ e.unsqueeze(-1)).squeeze(-1)
        return ((e * Ge).sum(-1) + self.rss) / self.n, (2.0 / self.n) * Ge


# Residual penalties phi for the rates experiment: (phi, phi', phi'') as functions of the residual r.
# Both are convex with phi(0) = phi'(0) = 0 and phi''(0) = 1, so w* (X w* = y) is the minimiser. They differ in
# phi'''(0): at a zero-residual solution Newton's error is e+ = H^{-1} D3f[e, e] / 2 + O(e^3) with D3f proportional
# to phi'''(0), so "exponential" (phi'''(0) = 1) shows the generic quadratic rate, the symmetric "quartic"
# (phi'''(0) = 0) a cubic one.
RESIDUAL_PENALTIES = {
    "exponential": (lambda r: torch.expm1(r) - r, torch.expm1, torch.exp),  # e^r - 1 - r
    "quartic": (lambda r: r.pow(2) / 2 + r.pow(4) / 4, lambda r: r + r.pow(3), lambda r: 1 + 3 * r.pow(2)),
}
PENALTY_FORMULAS = {"exponential": "φ(r) = eʳ − 1 − r", "quartic": "φ(r) = r²/2 + r⁴/4"}


def residual_loss(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, penalty: str = "exponential"):
    """f(w) = (1/n) sum_i phi(x_i^T w - y_i) with phi from RESIDUAL_PENALTIES.

    X: (R, n, d), y: (R, n), w: (R, d) -> loss (R,), gradient (R, d), Hessian (R, d, d), float64.
    """
    if penalty not in RESIDUAL_PENALTIES:
        raise ConfigError(f"unknown rates loss {penalty!r}: use one of {', '.join(RESIDUAL_PENALTIES)}")
    phi, dphi, d2phi = RESIDUAL_PENALTIES[penalty]
    n = X.shape[1]
    r = (X @ w.unsqueeze(-1)).squeeze(-1) - y
    grad = (X.transpose(1, 2) @ dphi(r).unsqueeze(-1)).squeeze(-1) / n
    hess = X.transpose(1, 2) @ (d2phi(r).unsqueeze(-1) * X) / n
    return phi(r).sum(-1) / n, grad, hess
