"""Problem instances, seeding, and the image sources (MNIST IDX reader, sklearn digits)."""

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from iobs.errors import DataError
from iobs.recovery.images import load_images, read_idx_images, resolve_image_source
from iobs.recovery.problems import LeastSquares, gaussian_problem, image_k, image_problem
from tests.conftest import SHARED_DATA, needs_shared

MNIST_DIR = SHARED_DATA / "mnist"
needs_mnist = needs_shared("mnist/t10k-images-idx3-ubyte.gz")


def write_idx(path: Path, images: np.ndarray, magic: int = 2051, compress: bool = False) -> Path:
    count, rows, cols = images.shape
    raw = b"".join(v.to_bytes(4, "big") for v in (magic, count, rows, cols)) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_gaussian_problem_follows_the_paper_recipe():
    p = gaussian_problem(n=256, d=128, k_true=16, k=64, runs=3, seed=1234)
    assert p.X.dtype == torch.float64 and p.X.shape == (3, 256, 128)
    assert ((p.w_star != 0).sum(-1) == 16).all()
    assert p.w_init.abs().max() <= 1 / math.sqrt(128) and (p.w_init != 0).all()
    assert torch.allclose(p.y, (p.X @ p.w_star.unsqueeze(-1)).squeeze(-1))
    # columns of X have unit norm on average (X = randn/sqrt(n)); X^T X is well conditioned (about 32 per notes)
    eig = torch.linalg.eigvalsh(p.X.transpose(1, 2) @ p.X)
    assert 10 < float((eig[:, -1] / eig[:, 0]).mean()) < 80
    assert torch.equal(p.k, torch.tensor([64, 64, 64]))


def test_run_r_uses_seed_plus_r_and_instances_are_reproducible():
    batch = gaussian_problem(n=30, d=10, k_true=2, k=4, runs=3, seed=5)
    again = gaussian_problem(n=30, d=10, k_true=2, k=4, runs=3, seed=5)
    single = gaussian_problem(n=30, d=10, k_true=2, k=4, runs=1, seed=7)
    for name in ("X", "y", "w_star", "w_init"):
        assert torch.equal(getattr(batch, name), getattr(again, name))
        assert torch.equal(getattr(batch, name)[2], getattr(single, name)[0])
    assert not torch.equal(batch.X[0], batch.X[1])


def test_least_squares_rewrite_matches_the_direct_mean_squared_error():
    p = gaussian_problem(n=50, d=20, k_true=3, k=6, runs=2, seed=0)
    ls = LeastSquares.from_problem(p)
    w = torch.randn(2, 20, dtype=torch.float64)
    loss, grad = ls.loss_and_grad(w)
    residual = (p.X @ w.unsqueeze(-1)).squeeze(-1) - p.y
    assert torch.allclose(loss, residual.pow(2).mean(-1), rtol=1e-12)
    assert torch.allclose(grad, (2 / 50) * (p.X.transpose(1, 2) @ residual.unsqueeze(-1)).squeeze(-1), atol=1e-12)
    assert torch.allclose(ls.w_ls, p.w_star, atol=1e-10)  # noiseless and n > d


def test_image_problem_sizes_and_per_image_sparsity():
    images = torch.zeros(2, 4, 5, dtype=torch.float64)
    images[0, 1, 1:4] = torch.tensor([10.0, 200.0, 30.0])
    images[1, 0, 0] = 255.0
    p = image_problem(images, k_factor=2, n_factor=2, seed=0)
    assert p.X.shape == (2, 40, 20) and p.image_shape == (4, 5)
    assert p.k.tolist() == [6, 2]
    assert torch.equal(p.w_star[0], images[0].reshape(-1))
    assert image_k(torch.ones(64), 2) == 64  # clamped to d


def test_resolve_image_source(tmp_path):
    assert resolve_image_source("auto", tmp_path) == "digits"
    assert resolve_image_source("auto", None) == "digits"
    assert resolve_image_source("digits", tmp_path / "missing") == "digits"
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((1, 2, 2)))
    assert resolve_image_source("auto", tmp_path) == "mnist"
    assert resolve_image_source("mnist", tmp_path) == "mnist"


def test_missing_mnist_folder_is_a_one_line_data_error_naming_the_key(tmp_path):
    with pytest.raises(DataError) as err:
        resolve_image_source("mnist", tmp_path / "nowhere", config_key="synthetic.experiments.image.mnist_dir")
    message = str(err.value)
    assert "synthetic.experiments.image.mnist_dir" in message and "\n" not in message
    with pytest.raises(DataError, match="nowhere"):
        load_images("mnist", tmp_path / "nowhere", 1)


def test_idx_reader_plain_and_gzip_and_bad_files(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4) * 10
    for compress in (False, True):
        path = write_idx(tmp_path / f"img{int(compress)}{'.gz' if compress else ''}", images, compress=compress)
        assert np.array_equal(read_idx_images(path), images.astype(np.uint8))
    with pytest.raises(DataError, match="magic 2049"):
        read_idx_images(write_idx(tmp_path / "labels", images, magic=2049))
    truncated = tmp_path / "truncated"
    truncated.write_bytes((tmp_path / "img0").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx_images(truncated)
    with pytest.raises(DataError, match="does not exist"):
        read_idx_images(tmp_path / "absent")
    (tmp_path / "broken.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx_images(tmp_path / "broken.gz")


@needs_mnist
def test_mnist_reader_on_the_real_test_set():
    images = read_idx_images(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    nnz = (images.reshape(10_000, -1) > 0).sum(-1)
    assert 100 < nnz.mean() < 200  # digits are sparse: mostly black background
    first = load_images("mnist", MNIST_DIR, 3)
    assert first.dtype == np.float64 and np.array_equal(first, images[:3])


def test_sklearn_digits_fallback_scale():
    digits = load_images("digits", None, 4)
    assert digits.shape == (4, 8, 8) and digits.max() <= 16 and digits.min() >= 0
    with pytest.raises(DataError, match="lower runs"):
        load_images("digits", None, 10_000)


def test_the_digits_fallback_keeps_every_default_run_sparsity_constrained():
    """Where MNIST is not on disk the default's image experiment falls back to 8x8 digits (d = 64): its k_factor
    there (digits_k_factor) keeps k < d in every run, so the sparsity constraint is never removed."""
    from pathlib import Path

    from iobs.config import check_files
    from iobs.recovery.images import load_images
    from iobs.recovery.experiments import experiment_params

    config = check_files([Path(__file__).resolve().parents[1] / "config.yaml"])
    exp = experiment_params(config["synthetic"], {"image": "digits"}, "image")
    images = torch.as_tensor(load_images("digits", None, exp["runs"]))
    problem = image_problem(images, exp["k_factor"], exp["n_factor"], seed=0)
    assert int(problem.k.max()) < images[0].numel()
