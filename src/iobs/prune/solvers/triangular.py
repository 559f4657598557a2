"""The inverse Cholesky factor L^-1 of a symmetric positive definite matrix, built from matmuls.

Why not LAPACK: torch has no trtri, trmm or syrk, and on one CPU thread MKL's triangular solves run at 50-65% of
its matmul rate (its potrf at about 40%). These recursions split each triangle in halves until a leaf, so almost
every flop is one matmul with a large inner dimension; only the leaves call potrf and triangular solves.

All functions work in place on 2-D views of one dtype and device (float32 in the solvers); "lower" means lower
triangular with exact zeros above the diagonal, unless a docstring says its strict upper triangle is not read.
"""

from __future__ import annotations

import torch

# Leaf sizes, chosen on one MKL thread at n = 3072 from a grid of 64-384 each (the factor took 0.28-0.31 s over
# it): smaller leaves spend the time in Python and small kernels, larger ones in triangular solves or in the zeros
# of a full-matmul leaf. Not tuned for GPUs (benchmarks/gpu_check.sh prints both routes' factor times).
FACTOR_LEAF = 256
PRODUCT_LEAF = 64
GRAM_LEAF = 128


def lower_times(t: torch.Tensor, x: torch.Tensor, leaf: int = PRODUCT_LEAF) -> None:
    """x <- T x for lower T [k, k] and x [k, m]: k^2 m flops."""
    k = t.shape[0]
    if k <= leaf:
        x.copy_(t @ x)  # the zeros above T's diagonal make this the triangular product
        return
    h = k // 2
    lower_times(t[h:, h:], x[h:], leaf)             # bottom rows first: they read the old top rows
    x[h:].addmm_(t[h:, :h], x[:h])
    lower_times(t[:h, :h], x[:h], leaf)


def times_lower(x: torch.Tensor, t: torch.Tensor, leaf: int = PRODUCT_LEAF) -> None:
    """x <- x T for x [m, k] and lower T [k, k]."""
    k = t.shape[0]
    if k <= leaf:
        x.copy_(x @ t)
        return
    h = k // 2
    times_lower(x[:, :h], t[:h, :h], leaf)          # left columns first: they read the old right columns
    x[:, :h].addmm_(x[:, h:], t[h:, :h])
    times_lower(x[:, h:], t[h:, h:], leaf)


def times_lower_transposed(x: torch.Tensor, t: torch.Tensor, leaf: int = PRODUCT_LEAF) -> None:
    """x <- x T^T for x [m, k] and lower T [k, k]."""
    k = t.shape[0]
    if k <= leaf:
        x.copy_(x @ t.T)
        return
    h = k // 2
    times_lower_transposed(x[:, h:], t[h:, h:], leaf)  # right columns first: they read the old left columns
    x[:, h:].addmm_(x[:, :h], t[h:, :h].T)
    times_lower_transposed(x[:, :h], t[:h, :h], leaf)


def subtract_gram_lower(c: torch.Tensor, p: torch.Tensor, leaf: int = GRAM_LEAF) -> None:
    """Lower triangle of c [n, n] -= p p^T for p [n, K]: n^2 K flops (syrk). The strict upper triangle of c's
    diagonal leaves gets values too; the rest of it is not touched."""
    n = c.shape[0]
    if n <= leaf:
        c.addmm_(p, p.T, alpha=-1)
        return
    h = n // 2
    subtract_gram_lower(c[:h, :h], p[:h], leaf)
    c[h:, :h].addmm_(p[h:], p[:h].T, alpha=-1)
    subtract_gram_lower(c[h:, h:], p[h:], leaf)


def inverse_cholesky_in_place(a: torch.Tensor, out: torch.Tensor, leaf: int = FACTOR_LEAF,
                              product_leaf: int = PRODUCT_LEAF, gram_leaf: int = GRAM_LEAF) -> int:
    """out [n, n] <- L^-1 (lower, exact zeros above the diagonal) where a [n, n] = L L^T. Only a's lower triangle
    is read; it is used as scratch (left holding no useful values). Returns 0, or the 1-based column at which a
    is found not positive definite (out is then incomplete).

    With a = [[A, .], [B, C]] and k = n // 2:  L_A^-1 by recursion;  L_21 = B L_A^-T;  S = C - L_21 L_21^T;
    L_S^-1 by recursion;  (L^-1)_21 = -L_S^-1 L_21 L_A^-1. A level of size n costs n^3/2 flops in matmuls, so
    the whole is 2n^3/3: as cholesky (n^3/3) plus a triangular inverse (n^3/3), without L itself.
    """
    n = a.shape[0]
    if n <= leaf:
        factor, info = torch.linalg.cholesky_ex(a)
        if info:
            return int(info)
        # a solve against I writes exact zeros above the diagonal
        out.copy_(torch.linalg.solve_triangular(factor, torch.eye(n, dtype=a.dtype, device=a.device), upper=False))
        return 0
    k = n // 2
    info = inverse_cholesky_in_place(a[:k, :k], out[:k, :k], leaf, product_leaf, gram_leaf)
    if info:
        return info
    l21 = a[k:, :k]
    times_lower_transposed(l21, out[:k, :k], product_leaf)        # L_21 = B L_A^-T, over B
    subtract_gram_lower(a[k:, k:], l21, gram_leaf)                # S, over C
    info = inverse_cholesky_in_place(a[k:, k:], out[k:, k:], leaf, product_leaf, gram_leaf)
    if info:
        return k + info
    out[:k, k:].zero_()
    off = out[k:, :k]
    off.copy_(l21)
    times_lower(off, out[:k, :k], product_leaf)
    lower_times(out[k:, k:], off, product_leaf)
    off.neg_()
    return 0
