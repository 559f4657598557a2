"""Trajectory files: one npz per (experiment, algorithm) job, written atomically, no pickled objects.

Arrays: loss, dist (R, T + 1); w_final, w_star (R, d); k (R,); meta: a JSON string (experiment, algorithm,
prior, image_source, image_shape, step, sizes, seed, support_search, the experiment's config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iobs.errors import DataError
from iobs.atomic import atomic_path

ARRAYS = ("loss", "dist", "w_final", "w_star", "k")


@dataclass
class RunRecord:
    """A loaded trajectory file: numpy arrays (float64 except k) plus its metadata."""

    loss: np.ndarray
    dist: np.ndarray
    w_final: np.ndarray
    w_star: np.ndarray
    k: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        return self.meta["experiment"]

    @property
    def algorithm(self) -> str:
        return self.meta["algorithm"]

    @property
    def iterations(self) -> int:
        return self.loss.shape[1] - 1


def save_trajectory(path: str | Path, record: RunRecord) -> None:
    """Write ``record`` to ``path`` via a temporary file and rename (never a partial npz under the real name)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, meta=np.array(json.dumps(record.meta, sort_keys=True)),
                            **{name: np.asarray(getattr(record, name)) for name in ARRAYS})


def load_trajectory(path: str | Path) -> RunRecord:
    """Read a file written by save_trajectory; DataError names the file if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"trajectory file {path} does not exist: run its synthetic job first")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ARRAYS}
            meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path} is not a trajectory file ({err}): delete it and rerun its job") from None
    return RunRecord(**arrays, meta=meta)
