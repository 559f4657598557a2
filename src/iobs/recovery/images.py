"""Natural-image signals for the image-prior experiment: MNIST test images (IDX files) or sklearn's 8x8 digits.

Scales differ and are kept raw on purpose (the paper uses raw MNIST pixels): MNIST is 28x28 with values 0..255
(d = 784); sklearn digits are 8x8 with values 0..16 (d = 64), so their losses and distances are not comparable
with the paper's MNIST numbers.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from iobs.errors import DataError

MNIST_IMAGES = "t10k-images-idx3-ubyte"
IDX_IMAGES_MAGIC = 2051


def find_mnist_file(mnist_dir: str | Path | None) -> Path | None:
    """The test-images IDX file in ``mnist_dir`` (plain or .gz), or None when absent."""
    if mnist_dir is None:
        return None
    for name in (MNIST_IMAGES + ".gz", MNIST_IMAGES):
        path = Path(mnist_dir) / name
        if path.is_file():
            return path
    return None


def resolve_image_source(source: str, mnist_dir: str | Path | None, *,
                         config_key: str = "synthetic.experiments.<name>.mnist_dir") -> str:
    """"auto" -> "mnist" when the IDX file is in ``mnist_dir``, else "digits"; "mnist" requires the file."""
    if source == "digits":
        return "digits"
    found = find_mnist_file(mnist_dir)
    if source == "auto":
        return "mnist" if found else "digits"
    if source == "mnist":
        if found is None:
            raise DataError(f"image_source is 'mnist' but {MNIST_IMAGES}(.gz) is not in {mnist_dir!r}: set "
                            f"{config_key} to the folder holding it, or image_source to 'auto' or 'digits'")
        return "mnist"
    raise DataError(f"unknown image_source {source!r}: use 'auto', 'mnist' or 'digits'")


def read_idx_images(path: str | Path) -> np.ndarray:
    """Images of an IDX3 file (gzip or plain) as uint8 of shape (count, rows, cols)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"MNIST image file {path} does not exist: point mnist_dir at the folder holding {MNIST_IMAGES}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path} ({err}): replace it with an intact copy of {MNIST_IMAGES}") from None
    if len(raw) < 16:
        raise DataError(f"{path} is too short to be an IDX image file: replace it with {MNIST_IMAGES}")
    magic, count, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != IDX_IMAGES_MAGIC:
        raise DataError(f"{path} has IDX magic {magic}, expected {IDX_IMAGES_MAGIC} (images): is it the labels file?")
    if len(raw) != 16 + count * rows * cols:
        raise DataError(f"{path} holds {len(raw) - 16} pixel bytes but its header announces {count}x{rows}x{cols}: "
                        "the file is truncated or corrupt, replace it")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def load_images(source: str, mnist_dir: str | Path | None, count: int) -> np.ndarray:
    """The first ``count`` images of the resolved source as float64, shape (count, rows, cols), raw scale."""
    if source == "mnist":
        path = find_mnist_file(mnist_dir)
        if path is None:
            raise DataError(f"no {MNIST_IMAGES}(.gz) in {mnist_dir!r}: set mnist_dir to the MNIST folder")
        images = read_idx_images(path)
    elif source == "digits":
        from sklearn.datasets import load_digits

        images = load_digits().images
    else:
        raise DataError(f"image source {source!r} is not resolved: call resolve_image_source first")
    if count > len(images):
        raise DataError(f"{count} runs need {count} images but the {source} set has {len(images)}: lower runs")
    return np.asarray(images[:count], dtype=np.float64)
