"""Layer-wise pruning solvers: exactness of the OBS algebra, exact sparsity, robustness, purity."""

import logging
import math

import pytest
import torch

from iobs.errors import ConfigError, IobsError
from iobs.prune.solvers import SOLVERS, magnitude_prune, solve, sparsegpt_prune
from iobs.prune.solvers.common import reconstruction_loss
from iobs.targets import SparsitySpec, pruned_count

METHODS = sorted(SOLVERS)


def factor_activations(samples: int, features: int, seed: int, factors: int = 4) -> torch.Tensor:
    """[samples, features] float32 activations with strong correlations: a few shared factors plus small noise."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(samples, factors, generator=g) @ torch.randn(factors, features, generator=g)
    return shared + 0.3 * torch.randn(samples, features, generator=g)


def hessian_of(x: torch.Tensor) -> torch.Tensor:
    """H = (2/N) X^T X for activations x [N, in], the driver's convention."""
    return 2.0 / x.shape[0] * x.T @ x


def layer(out_features: int, in_features: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = factor_activations(4 * in_features, in_features, seed)
    weight = torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(seed + 1))
    return weight, hessian_of(x)


def removal_by_least_squares(w: torch.Tensor, h: torch.Tensor, q: int) -> tuple[torch.Tensor, float]:
    """Brute force: the best w' with w'_q = 0, by solving the normal equations on the other coordinates (float64)."""
    others = [i for i in range(len(w)) if i != q]
    new = torch.zeros_like(w)
    new[others] = w[others] + torch.linalg.solve(h[others][:, others], h[others, q] * w[q])
    delta = w - new
    return new, float(delta @ h @ delta)


def expected_pruned(method: str, spec: SparsitySpec, shape: tuple[int, int]) -> int:
    out_features, in_features = shape
    if spec.is_nm:
        return out_features * in_features * spec.n // spec.m
    if method in ("magnitude", "sparsegpt"):  # counted over the whole layer
        return pruned_count(out_features * in_features, spec.fraction)
    return out_features * pruned_count(in_features, spec.fraction)  # wanda, obc: per row


# ---------------------------------------------------------------- SparsitySpec

@pytest.mark.parametrize("text, fraction, label, is_nm", [
    ("0.5", 0.5, "0.5", False), (0.7, 0.7, "0.7", False), ("0.50", 0.5, "0.5", False),
    ("2:4", 0.5, "2:4", True), (" 4:8 ", 0.5, "4:8", True), ("1:4", 0.25, "1:4", True),
])
def test_spec_parse(text, fraction, label, is_nm):
    spec = SparsitySpec.parse(text)
    assert (spec.fraction, spec.label, spec.is_nm) == (fraction, label, is_nm)
    assert SparsitySpec.parse(spec.label) == spec


@pytest.mark.parametrize("text", ["0", 0, "0.0", "1.0", "1.5", "-0.1", "nan", "abc", "4:2", "0:4", "2:2", "2:x",
                                  "2:4:8", True, None])
def test_spec_parse_rejects_bad_input_in_one_line(text):
    with pytest.raises((IobsError, ValueError)) as err:
        SparsitySpec.parse(text)
    assert "\n" not in str(err.value) and len(str(err.value)) > 20


def test_pruned_count_is_floor_robust_to_float_error():
    assert pruned_count(100, 0.29) == 29  # 0.29 * 100 == 28.999999999999996
    assert pruned_count(13, 0.5) == 6 and pruned_count(13, 0.7) == 9 and pruned_count(10, 0.0) == 0


# ---------------------------------------------------------------- the OBS algebra

def test_single_removal_closed_form_matches_least_squares():
    w_all, h = layer(1, 9, seed=3)
    w, h = w_all[0].double(), h.double()
    hinv = torch.linalg.inv(h)
    for q in range(len(w)):
        closed = w - w[q] / hinv[q, q] * hinv[:, q]
        brute, brute_loss = removal_by_least_squares(w, h, q)
        assert closed[q].abs() < 1e-9
        torch.testing.assert_close(closed, brute, rtol=1e-7, atol=1e-9)
        assert math.isclose(float(w[q] ** 2 / hinv[q, q]), brute_loss, rel_tol=1e-7)


def test_obc_single_removal_is_the_brute_force_best():
    weight, h = layer(6, 9, seed=4)
    spec = SparsitySpec.parse("0.12")  # floor(0.12 * 9) = exactly one weight per row
    result = solve("obc", weight, h, spec, percdamp=0.0)
    hd = h.double()
    total = 0.0
    for row in range(weight.shape[0]):
        w = weight[row].double()
        candidates = [removal_by_least_squares(w, hd, q) for q in range(len(w))]
        best = min(range(len(w)), key=lambda q: candidates[q][1])
        assert (~result.mask[row]).nonzero().flatten().tolist() == [best]
        torch.testing.assert_close(result.weight[row].double(), candidates[best][0], rtol=1e-3, atol=1e-4)
        total += candidates[best][1]
    assert math.isclose(result.loss, total, rel_tol=1e-3)


def test_obc_follows_the_brute_force_greedy_path():
    """Every step removes the weight whose removal (with re-optimised other weights) costs least given the earlier
    removals; the least-squares brute force never touches an inverse Hessian downdate."""
    weight, h = layer(3, 8, seed=20)
    result = solve("obc", weight, h, "0.625", percdamp=0.0)  # 5 of 8 per row
    hd = h.double()
    for row in range(weight.shape[0]):
        w, removed = weight[row].double(), []
        for _ in range(5):
            def cost(q):
                kept = [i for i in range(8) if i not in removed + [q]]
                gone = removed + [q]
                fit = w[kept] + torch.linalg.solve(hd[kept][:, kept], hd[kept][:, gone] @ w[gone])
                delta = w.clone()
                delta[kept] -= fit
                return float(delta @ hd @ delta)
            removed.append(min((q for q in range(8) if q not in removed), key=cost))
        assert sorted(removed) == (~result.mask[row]).nonzero().flatten().tolist()


def test_obc_weights_are_optimal_on_their_own_support():
    weight, h = layer(5, 16, seed=5)
    result = solve("obc", weight, h, "0.7", percdamp=0.0)
    hd = h.double()
    for row in range(weight.shape[0]):
        kept, gone = result.mask[row], ~result.mask[row]
        w = weight[row].double()
        best = torch.zeros_like(w)
        best[kept] = w[kept] + torch.linalg.solve(hd[kept][:, kept], hd[kept][:, gone] @ w[gone])
        torch.testing.assert_close(result.weight[row].double(), best, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("text", ["0.5", "2:4"])
def test_sparsegpt_matches_column_by_column_obs_definition(text):
    """Reference without Cholesky or lazy blocks: column i's error goes to columns >= i via inv(H[i:, i:]).
    Unstructured: replay the solver's mask. N:M: choose it here, from the weights updated so far."""
    weight, h = layer(6, 24, seed=6)
    result = solve("sparsegpt", weight, h, text, blocksize=8)
    hd = h.double() + 0.01 * h.diagonal().mean().double() * torch.eye(24, dtype=torch.float64)
    hinv_rest = [torch.linalg.inv(hd[i:, i:]) for i in range(24)]
    w, keep = weight.double().clone(), result.mask.clone()
    for i in range(24):
        if text == "2:4" and i % 4 == 0:
            saliency = torch.stack([w[:, j] ** 2 / hinv_rest[j][0, 0] for j in range(i, i + 4)], dim=1)
            lowest = saliency.argsort(dim=1)[:, :2]
            keep[:, i:i + 4] = torch.ones(6, 4, dtype=torch.bool).scatter_(1, lowest, False)
        error = w[:, i] * (~keep[:, i]) / hinv_rest[i][0, 0]
        w[:, i:] -= error[:, None] * hinv_rest[i][0][None]
        w[:, i] *= keep[:, i]
    assert torch.equal(keep, result.mask)
    torch.testing.assert_close(result.weight.double(), w, rtol=1e-3, atol=1e-3)


def test_sparsegpt_block_mask_uses_obs_saliency():
    """One block: the pruned set is the lowest w^2 / [inv(H[i:, i:])]_00 over the whole block (not per row)."""
    weight, h = layer(6, 16, seed=21)
    result = solve("sparsegpt", weight, h, "0.5")
    hd = h.double() + 0.01 * h.diagonal().mean().double() * torch.eye(16, dtype=torch.float64)
    variances = torch.stack([torch.linalg.inv(hd[i:, i:])[0, 0] for i in range(16)])
    saliency = weight.double().square() / variances
    assert saliency[~result.mask].max() < saliency[result.mask].min()
    assert not torch.all((~result.mask).sum(1) == 8)  # the block-wide choice leaves rows uneven


def test_sparsegpt_lazy_block_updates_do_not_change_nm_result():
    weight, h = layer(6, 32, seed=7)
    results = [solve("sparsegpt", weight, h, "2:4", blocksize=b) for b in (4, 8, 32)]
    for other in results[1:]:
        assert torch.equal(other.mask, results[0].mask)
        torch.testing.assert_close(other.weight, results[0].weight, rtol=1e-4, atol=1e-5)


def test_sparsegpt_with_identity_hessian_prunes_smallest_per_block_and_keeps_weights():
    weight = torch.randn(8, 40, generator=torch.Generator().manual_seed(8))
    result = solve("sparsegpt", weight, torch.eye(40), "0.5", blocksize=16)
    for start, end in ((0, 16), (16, 32), (32, 40)):
        block, keep = weight[:, start:end], result.mask[:, start:end]
        count = pruned_count(8 * end, 0.5) - pruned_count(8 * start, 0.5)
        assert int((~keep).sum()) == count
        assert block.abs()[~keep].max() < block.abs()[keep].min()
    assert torch.equal(result.weight[result.mask], weight[result.mask])


# ---------------------------------------------------------------- sparsity, masks, loss

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("text, shape", [("0.5", (7, 13)), ("0.7", (7, 13)), ("0.5", (3, 40)),
                                         ("2:4", (5, 24)), ("4:8", (5, 24)), ("1:4", (3, 8))])
def test_achieved_sparsity_is_exact(method, text, shape):
    spec = SparsitySpec.parse(text)
    weight, h = layer(*shape, seed=9)
    options = {"blocksize": 8} if method == "sparsegpt" else {}  # several blocks, an odd last one
    result = solve(method, weight, h, spec, **options)
    assert result.mask.dtype == torch.bool and result.mask.shape == weight.shape
    assert int((~result.mask).sum()) == expected_pruned(method, spec, shape)
    assert torch.all(result.weight[~result.mask] == 0)
    if method in ("wanda", "obc") and not spec.is_nm:
        assert torch.all((~result.mask).sum(1) == pruned_count(shape[1], spec.fraction))
    if spec.is_nm:
        per_group = (~result.mask).reshape(shape[0], -1, spec.m).sum(2)
        assert torch.all(per_group == spec.n)


def test_magnitude_row_scope_prunes_equal_counts_per_row():
    weight, h = layer(7, 13)
    result = solve("magnitude", weight, h, "0.5", scope="row")
    assert torch.all((~result.mask).sum(1) == 6)
    for row in range(7):
        assert weight[row].abs()[~result.mask[row]].max() <= weight[row].abs()[result.mask[row]].min()


@pytest.mark.parametrize("method", METHODS)
def test_returned_loss_is_the_output_reconstruction_error(method):
    x = factor_activations(96, 16, seed=10)
    weight = torch.randn(6, 16, generator=torch.Generator().manual_seed(11))
    result = solve(method, weight, hessian_of(x), "0.5")
    direct = float(((weight.double() - result.weight.double()) @ x.double().T).square().sum() * 2 / x.shape[0])
    assert direct > 0 and math.isclose(result.loss, direct, rel_tol=1e-4)


@pytest.mark.parametrize("text", ["0.5", "0.7", "2:4"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_second_order_solvers_beat_magnitude_on_correlated_inputs(text, seed):
    weight, h = layer(16, 32, seed=seed)
    magnitude = solve("magnitude", weight, h, text).loss
    assert solve("sparsegpt", weight, h, text, blocksize=16).loss < magnitude
    assert solve("obc", weight, h, text).loss < magnitude


# ---------------------------------------------------------------- robustness and purity

@pytest.mark.parametrize("method", METHODS)
def test_dead_inputs_give_finite_output_and_zero_columns(method):
    x = factor_activations(64, 16, seed=12)
    x[:, [0, 5, 6]] = 0.0
    weight = torch.randn(6, 16, generator=torch.Generator().manual_seed(13))
    result = solve(method, weight, hessian_of(x), "0.5")
    assert torch.isfinite(result.weight).all() and math.isfinite(result.loss)
    if method in ("sparsegpt", "obc"):
        assert torch.all(result.weight[:, [0, 5, 6]] == 0)
    assert int((~result.mask).sum()) == expected_pruned(method, SparsitySpec.parse("0.5"), (6, 16))


@pytest.mark.parametrize("method", METHODS)
def test_rank_deficient_hessian_gives_finite_output(method):
    x = factor_activations(5, 24, seed=14)  # 5 samples for 24 inputs: H has rank 5
    weight = torch.randn(4, 24, generator=torch.Generator().manual_seed(15))
    result = solve(method, weight, hessian_of(x), "2:4")
    assert torch.isfinite(result.weight).all() and math.isfinite(result.loss)


@pytest.mark.parametrize("method", ["sparsegpt", "obc"])
def test_indefinite_hessian_retries_with_more_damping(method, caplog):
    g = torch.Generator().manual_seed(16)
    noise = torch.randn(12, 12, generator=g)
    h = torch.eye(12) + 2.0 * (noise + noise.T).fill_diagonal_(0)
    assert torch.linalg.eigvalsh(h).min() < 0
    weight = torch.randn(4, 12, generator=g)
    with caplog.at_level(logging.WARNING, logger="iobs"):
        result = solve(method, weight, h, "0.5")
    assert torch.isfinite(result.weight).all()
    assert any("not positive definite" in r.getMessage() for r in caplog.records)
    with pytest.raises(IobsError, match="not positive definite even with damping"):
        solve(method, weight, h, "0.5", max_damp_retries=0)


@pytest.mark.parametrize("method", METHODS)
def test_inputs_are_not_modified(method):
    x = factor_activations(64, 16, seed=17)
    x[:, 3] = 0.0  # dead input: solvers patch H and W, which must happen on copies
    h = hessian_of(x)
    weight = torch.randn(6, 16, generator=torch.Generator().manual_seed(18))
    weight_before, h_before = weight.clone(), h.clone()
    solve(method, weight, h, "0.5")
    assert torch.equal(weight, weight_before) and torch.equal(h, h_before)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_round_trip_dtype(method, dtype):
    weight, h = layer(6, 16, seed=19)
    result = solve(method, weight.to(dtype), h.double(), "2:4")
    assert result.weight.dtype == dtype and torch.isfinite(result.weight).all()
    assert torch.all(result.weight[~result.mask] == 0)
    assert result.loss == pytest.approx(solve(method, weight.to(dtype).float(), h, "2:4").loss, rel=0.05)


# ---------------------------------------------------------------- one-line errors

@pytest.mark.parametrize("call, needle", [
    (lambda w, h: solve("sparse", w, h, "0.5"), "unknown pruning method"),
    (lambda w, h: solve("sparsegpt", w, h, "0.5", block_size=64), "unknown option"),
    (lambda w, h: solve("magnitude", w[:, :10], h[:10, :10], "2:4"), "divisible by 4"),
    (lambda w, h: solve("wanda", w, h[:8, :8], "0.5"), "hessian must be"),
    (lambda w, h: solve("wanda", w[0], h, "0.5"), "weight must be"),
    (lambda w, h: solve("obc", w.index_fill(1, torch.tensor([2]), float("nan")), h, "0.5"), "NaN"),
    (lambda w, h: solve("sparsegpt", w, -h, "0.5"), "negative diagonal"),
    (lambda w, h: solve("obc", w, h, "0.5", max_in_features=8), "use method 'sparsegpt'"),
    (lambda w, h: solve("sparsegpt", w, h, "2:4", blocksize=6), "multiple of m"),
    (lambda w, h: solve("magnitude", w, h, "0.5", scope="column"), "unknown pruning scope"),
])
def test_bad_input_raises_one_line_error(call, needle):
    weight, h = layer(4, 16)
    with pytest.raises(IobsError, match=needle) as err:
        call(weight, h)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["0.5", "2:4"])
def test_sparsegpt_onto_a_given_mask(text):
    """Given its own mask, SparseGPT repeats itself exactly; given another mask, it keeps exactly that pattern and
    its OBS updates beat zeroing the same positions without correction."""
    w, h = layer(16, 32, seed=3)
    spec = SparsitySpec.parse(text)
    chosen = sparsegpt_prune(w, h, spec)
    again = sparsegpt_prune(w, h, spec, mask=chosen.mask)
    assert torch.equal(again.weight, chosen.weight) and torch.equal(again.mask, chosen.mask)
    other = magnitude_prune(w, h, spec).mask
    assert not torch.equal(other, chosen.mask)
    corrected = sparsegpt_prune(w, h, spec, mask=other)
    assert torch.equal(corrected.mask, other) and torch.equal(corrected.weight == 0, ~other)
    plain = reconstruction_loss(w, w * other, h)
    assert corrected.loss < plain
    with pytest.raises(ConfigError, match="fixed sparsegpt mask"):
        sparsegpt_prune(w, h, spec, mask=other[:, :8])


# ---------------------------------------------------------------- issue 13: the fast paths against the old solver

def _old_solver():
    """The frozen pre-issue-13 SparseGPT (benchmarks/_baseline_sparsegpt.py), the reference of these tests."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "_baseline_sparsegpt.py"
    spec = importlib.util.spec_from_file_location("_baseline_sparsegpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.baseline_sparsegpt


def pinned_case(kind: str, rows: int = 40, cols: int = 96, seed: int = 30):
    """(weight [rows, cols] ~ 0.02 randn like a real layer, H). dead_inputs: 7 columns of X all zero;
    already_sparse: half the weights already exactly zero (a later I-OBS round), many exact ties at 0."""
    x = factor_activations(8 * cols, cols, seed=seed, factors=8)
    weight = 0.02 * torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed + 1))
    if kind == "dead_inputs":
        x[:, [c for c in (0, 1, 17, 40, 63, 64, 95) if c < cols]] = 0.0
    if kind == "already_sparse":
        weight = magnitude_prune(weight, hessian_of(x), SparsitySpec.parse("0.5")).weight
    return weight, hessian_of(x)


@pytest.mark.parametrize("inverse", ["explicit", "triangular", "auto"])
@pytest.mark.parametrize("kind", ["plain", "dead_inputs", "already_sparse"])
@pytest.mark.parametrize("text", ["0.5", "0.7", "2:4"])
def test_sparsegpt_matches_the_old_solver(text, kind, inverse):
    """Masks identical and the loss (now from the OBS errors, not a product) within 1e-4 (exactly with exact_loss,
    the old product). The explicit route
    (auto's at this width) gives the old bits exactly; the triangular one (a different float32 factorization of
    the same U) agrees to 2e-5 of the layer's largest weight. Blocks of 32: three, with lazy updates."""
    weight, h = pinned_case(kind)
    spec = SparsitySpec.parse(text)
    old_weight, old_mask, old_loss = _old_solver()(weight, h, spec, blocksize=32)
    new = sparsegpt_prune(weight, h, spec, blocksize=32, inverse=inverse)
    assert torch.equal(new.mask, old_mask)
    if inverse == "triangular":
        assert float((new.weight - old_weight).abs().max()) <= 2e-5 * float(old_weight.abs().max())
    else:
        assert torch.equal(new.weight, old_weight)
    assert new.loss == pytest.approx(old_loss, rel=1e-4)
    exact = sparsegpt_prune(weight, h, spec, blocksize=32, inverse=inverse, exact_loss=True).loss
    assert exact == pytest.approx(old_loss, rel=1e-5 if inverse == "triangular" else 0)


@pytest.mark.parametrize("inverse", ["explicit", "triangular"])
@pytest.mark.parametrize("kind", ["plain", "dead_inputs"])
def test_sparsegpt_onto_a_fixed_mask_matches_the_old_solver(kind, inverse):
    weight, h = pinned_case(kind)
    spec = SparsitySpec.parse("0.5")
    mask = magnitude_prune(weight, h, spec).mask
    old_weight, old_mask, old_loss = _old_solver()(weight, h, spec, blocksize=32, mask=mask)
    new = sparsegpt_prune(weight, h, spec, blocksize=32, mask=mask, inverse=inverse)
    assert torch.equal(new.mask, old_mask)
    tolerance = 2e-5 * float(old_weight.abs().max()) if inverse == "triangular" else 0.0
    assert float((new.weight - old_weight).abs().max()) <= tolerance
    assert new.loss == pytest.approx(old_loss, rel=1e-4)


@pytest.mark.parametrize("text", ["0.5", "2:4"])
def test_group_solve_equals_separate_solves(text):
    """q/k/v share one Hessian: one factorization, and each result is bit-identical to solving it alone."""
    from iobs.prune.solvers.sparsegpt import sparsegpt_prune_group

    _, h = pinned_case("dead_inputs")
    g = torch.Generator().manual_seed(31)
    weights = [0.02 * torch.randn(rows, 96, generator=g) for rows in (40, 24, 40)]
    spec = SparsitySpec.parse(text)
    group = sparsegpt_prune_group(weights, h, spec, blocksize=32)
    for w, together in zip(weights, group, strict=True):
        alone = sparsegpt_prune(w, h, spec, blocksize=32)
        assert torch.equal(together.weight, alone.weight) and torch.equal(together.mask, alone.mask)
        assert together.loss == alone.loss


@pytest.mark.parametrize("method", ["explicit", "triangular"])
def test_upper_inverse_factor_is_the_cholesky_factor_of_the_damped_inverse(method):
    from iobs.prune.solvers.common import upper_inverse_factor

    _, h = pinned_case("dead_inputs", cols=40)
    factor = upper_inverse_factor(h, 0.01, method=method)
    dead = h.diagonal() == 0
    damped = h.double().clone()
    damped.diagonal()[dead] = 1.0  # the protocol: dead inputs get H_ii = 1
    damping = 0.01 * float(damped.diagonal().mean())
    damped += damping * torch.eye(40, dtype=torch.float64)
    u = factor.upper.double()
    assert dead.sum() == 3 and torch.equal(factor.dead, dead)
    assert torch.equal(u, u.triu()) and (u.diagonal() > 0).all()
    inverse = torch.linalg.inv(damped)
    assert float((u.T @ u - inverse).abs().max()) < 1e-4 * float(inverse.abs().max())  # float32 vs float64
    assert factor.damping == pytest.approx(damping, rel=1e-6)


@pytest.mark.parametrize("leaves", [(4, 2, 3), (8, 4, 4), (64, 64, 128)])  # the last: a leaf, no recursion
def test_inverse_cholesky_in_place_by_recursion(leaves):
    """L^-1 of a damped Hessian through every level of the recursion (odd sizes: uneven halves), against float64;
    exact zeros above the diagonal; the strict upper triangle of the input is never read."""
    from iobs.prune.solvers.triangular import inverse_cholesky_in_place

    _, h = pinned_case("plain", cols=53)
    a = h + 0.01 * h.diagonal().mean() * torch.eye(53)
    expected = torch.linalg.inv(torch.linalg.cholesky(a.double()))
    work = a.tril() + torch.full_like(a, float("nan")).triu(1)  # NaN above the diagonal: must not be read
    out = torch.full_like(a, 7.0)
    leaf, product_leaf, gram_leaf = leaves
    assert inverse_cholesky_in_place(work, out, leaf, product_leaf, gram_leaf) == 0
    assert torch.equal(out.triu(1), torch.zeros_like(out))
    assert float((out.double() - expected).abs().max()) < 1e-5 * float(expected.abs().max())


def test_inverse_cholesky_in_place_reports_the_first_bad_column():
    from iobs.prune.solvers.triangular import inverse_cholesky_in_place

    _, h = pinned_case("plain", cols=50)
    a = h + 0.01 * h.diagonal().mean() * torch.eye(50)
    for bad in (3, 30, 49):  # in the first leaf, in a later one (after a Schur complement), the last column
        indefinite = a.clone()
        indefinite[bad, bad] = -1.0
        column = inverse_cholesky_in_place(indefinite, torch.empty_like(a), 8, 4, 4)
        assert column == bad + 1, (bad, column)


@pytest.mark.parametrize("leaf", [1, 3, 64])
def test_triangular_products_by_recursion(leaf):
    from iobs.prune.solvers.triangular import (lower_times, subtract_gram_lower, times_lower,
                                               times_lower_transposed)

    g = torch.Generator().manual_seed(36)
    t = torch.randn(21, 21, generator=g, dtype=torch.float64).tril()
    x = torch.randn(21, 5, generator=g, dtype=torch.float64)
    y = x.T.clone()
    out = x.clone()
    lower_times(t, out, leaf)
    torch.testing.assert_close(out, t @ x)
    out = y.clone()
    times_lower(out, t, leaf)
    torch.testing.assert_close(out, y @ t)
    out = y.clone()
    times_lower_transposed(out, t, leaf)
    torch.testing.assert_close(out, y @ t.T)
    c = torch.randn(21, 21, generator=g, dtype=torch.float64)
    p = torch.randn(21, 4, generator=g, dtype=torch.float64)
    out = c.clone()
    subtract_gram_lower(out, p, leaf)
    torch.testing.assert_close(out.tril(), (c - p @ p.T).tril())


def test_exact_count_selection_equals_a_stable_sort_with_ties():
    from iobs.prune.sparsity import keep_all_but_lowest

    g = torch.Generator().manual_seed(33)
    for trial in range(40):
        scores = torch.randint(0, 3, (5, 7), generator=g).float() if trial % 2 else torch.rand(5, 7, generator=g)
        for count in range(36):
            order = torch.argsort(scores.flatten(), stable=True)[:count]
            expected = torch.ones(35, dtype=torch.bool).index_fill_(0, order, False).reshape(5, 7)
            assert torch.equal(keep_all_but_lowest(scores, count), expected), (trial, count)


def test_kth_lowest_radix_step_equals_kthvalue():
    """The radix step (float32 >= 0, CPU, >= 4096 entries) finds the same value as kthvalue, also with many exact
    ties (zeros of an already-sparse layer), infinities, denormals, and for every rank at the edges."""
    from iobs.prune.sparsity import kth_lowest

    g = torch.Generator().manual_seed(34)
    cases = [torch.rand(98_304, generator=g).square(),
             torch.cat([torch.zeros(5000), torch.rand(5000, generator=g)]),
             torch.cat([torch.full((3000,), float("inf")), torch.rand(3000, generator=g), torch.zeros(10)]),
             torch.rand(4096, generator=g) * 1e-39,                       # denormals
             torch.randint(0, 4, (6000,), generator=g).float()]           # few distinct values
    for flat in cases:
        n = flat.numel()
        for k in (1, 2, n // 3, n // 2, n - 1, n):
            assert torch.equal(kth_lowest(flat, k), flat.kthvalue(k).values), (n, k)
    negative = torch.randn(5000, generator=g)                             # falls back to kthvalue
    assert torch.equal(kth_lowest(negative, 17), negative.kthvalue(17).values)


def test_exact_count_selection_of_a_transposed_view_breaks_ties_in_row_major_order():
    """The sweep hands keep_all_but_lowest a transposed view; ties must still go by the logical (row-major)
    position, as for the contiguous tensor."""
    from iobs.prune.sparsity import keep_all_but_lowest

    g = torch.Generator().manual_seed(35)
    for trial in range(20):
        stored = torch.randint(0, 3, (9, 6), generator=g).float() if trial % 2 else torch.rand(9, 6, generator=g)
        view = stored.T                                                   # [6, 9], not contiguous
        for count in range(55):
            assert torch.equal(keep_all_but_lowest(view, count), keep_all_but_lowest(view.contiguous(), count))


@pytest.mark.parametrize("kind", ["plain", "dead_inputs", "already_sparse"])
@pytest.mark.parametrize("text", ["0.5", "0.7"])
def test_sparsegpt_matches_the_old_solver_with_blocks_past_the_radix_size(text, kind):
    """Blocks of 96 x 64 = 6144 scores take the radix selection (kth_lowest): still the old bits exactly."""
    weight, h = pinned_case(kind, rows=96, cols=192)
    spec = SparsitySpec.parse(text)
    old_weight, old_mask, old_loss = _old_solver()(weight, h, spec, blocksize=64)
    new = sparsegpt_prune(weight, h, spec, blocksize=64, inverse="explicit")
    assert torch.equal(new.mask, old_mask) and torch.equal(new.weight, old_weight)
    assert new.loss == pytest.approx(old_loss, rel=1e-4)


def mixed_case(kind: str, rows: int, cols: int, seed: int = 37):
    """Like pinned_case but X = randn @ (I + mixing): correlated inputs with a moderate condition number (about
    10 with damping), the benchmark's construction, so float32 rounding cannot decide a mask choice."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * cols, cols, generator=g) @ (torch.eye(cols) + torch.randn(cols, cols, generator=g) / cols**0.5)
    weight = 0.02 * torch.randn(rows, cols, generator=g)
    if kind == "dead_inputs":
        x[:, [0, 1, 17, 300, 519]] = 0.0
    if kind == "already_sparse":
        weight = magnitude_prune(weight, hessian_of(x), SparsitySpec.parse("0.5")).weight
    return weight, hessian_of(x)


@pytest.mark.parametrize("kind", ["plain", "dead_inputs", "already_sparse"])
@pytest.mark.parametrize("text", ["0.5", "2:4"])
def test_triangular_route_through_the_recursion_matches_the_old_solver(text, kind):
    """520 inputs: two levels of inverse_cholesky_in_place above its 256-wide leaves (the 96-input cases above
    are a single leaf). Masks identical to the old solver's, weights within 1e-6, loss within 1e-5."""
    weight, h = mixed_case(kind, rows=24, cols=520)
    spec = SparsitySpec.parse(text)
    old_weight, old_mask, old_loss = _old_solver()(weight, h, spec, blocksize=128)
    new = sparsegpt_prune(weight, h, spec, blocksize=128, inverse="triangular")
    assert torch.equal(new.mask, old_mask)
    assert float((new.weight - old_weight).abs().max()) <= 1e-6
    assert new.loss == pytest.approx(old_loss, rel=1e-5)


@pytest.mark.parametrize("kind", ["plain", "dead_inputs"])
def test_triangular_factor_is_as_accurate_as_the_explicit_one(kind):
    """On an ill-conditioned Hessian (cond about 5e3: few shared factors) float32 rounding is what separates the
    routes, so neither can match the other to 1e-6; both must be as close to the float64 factor."""
    from iobs.prune.solvers.common import upper_inverse_factor

    _, h = pinned_case(kind, cols=520)
    exact = upper_inverse_factor(h.double(), 0.01, method="explicit").upper

    def error(method):
        u = upper_inverse_factor(h, 0.01, method=method).upper.double()
        return float((u - exact).norm() / exact.norm())

    triangular, explicit = error("triangular"), error("explicit")
    assert triangular < 2e-4 and triangular < 1.5 * explicit, (triangular, explicit)
