"""The synthetic experiments of a config (its `synthetic` section): their problems, runs and planning.

run_experiment and run_rate_experiment solve one (experiment, algorithm) and return its trajectories with a
summary; resolve_image_sources and experiment_params settle each image experiment's source once, while planning.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from iobs.errors import ConfigError
from iobs.recovery.images import load_images, resolve_image_source
from iobs.recovery.problems import RecoveryProblem, gaussian_problem, image_problem, rates_problem
from iobs.recovery.solve import Trajectory, solve_least_squares, solve_residual
from iobs.recovery.trajectories import RunRecord

log = logging.getLogger("iobs.recovery")

MAX_SUPPORTS = 20000  # theoretical I-OBS enumerates supports exactly up to this many (synthetic.max_supports)


def _mapping(value, where: str) -> dict:
    """A dict param (the experiment's or the rates' settings)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of settings: check config.yaml")
    return value


def _get(section: dict, key: str, where: str):
    if key not in section:
        raise ConfigError(f"{where}.{key} is missing: add it to config.yaml (see src/iobs/schemas/config.schema.yaml)")
    return section[key]


def build_problem(exp: dict, seed: int, where: str = "synthetic.experiments.<name>") -> tuple[RecoveryProblem, dict]:
    """The instances of one experiment config (schema-validated dict) and metadata describing them."""
    prior, runs = _get(exp, "prior", where), _get(exp, "runs", where)
    if prior == "gaussian":
        problem = gaussian_problem(*(_get(exp, key, where) for key in ("n", "d", "k_true", "k")), runs=runs, seed=seed)
        return problem, {"prior": "gaussian", "image_source": None, "image_shape": None}
    source = resolve_image_source(_get(exp, "image_source", where), exp.get("mnist_dir"),
                                  config_key=f"{where}.mnist_dir")
    images = torch.from_numpy(load_images(source, exp.get("mnist_dir"), runs))
    problem = image_problem(images, _get(exp, "k_factor", where), _get(exp, "n_factor", where), seed)
    nnz = (images.reshape(runs, -1) != 0).sum(-1)
    clamped = int((exp["k_factor"] * nnz > problem.d).sum())
    if clamped:
        log.warning("%d of %d runs have k_factor * nnz > d = %d: k clamped to d (no sparsity constraint there)",
                    clamped, runs, problem.d)
    meta = {"prior": "image", "image_source": source, "image_shape": list(problem.image_shape),
            "images": f"the first {runs} images of the {source} set (run r uses image r)",
            "k_true": nnz.tolist(), "k_clamped_runs": clamped}
    return problem, meta


def _summary(problem: RecoveryProblem, trajectory: Trajectory) -> dict:
    return {"n": problem.n, "d": problem.d, "runs": problem.runs, "k_min": int(problem.k.min()),
            "k_max": int(problem.k.max()), "iterations": trajectory.loss.shape[1] - 1,
            "support_search": trajectory.support_search,
            "final_loss_mean": float(trajectory.loss[:, -1].mean()),
            "final_dist_mean": float(trajectory.dist[:, -1].mean())}


def _record(problem: RecoveryProblem, trajectory: Trajectory, meta: dict) -> RunRecord:
    return RunRecord(loss=trajectory.loss.numpy(), dist=trajectory.dist.numpy(),
                     w_final=trajectory.w_final.numpy(), w_star=problem.w_star.numpy(),
                     k=problem.k.numpy().astype(np.int64), meta=meta)


def run_experiment(name: str, exp: dict, algorithm: str, seed: int,
                   max_supports: int = MAX_SUPPORTS) -> tuple[RunRecord, dict]:
    """One (experiment, algorithm) of the paper's synthetic figures: its run record and a summary of it."""
    where = f"synthetic.experiments.{name}"
    exp = _mapping(exp, where)
    problem, meta = build_problem(exp, seed, where)
    step = _get(exp, "step", where)
    trajectory = solve_least_squares(problem, algorithm, _get(exp, "iterations", where), step, max_supports)
    summary = _summary(problem, trajectory)
    meta |= {"experiment": name, "algorithm": algorithm, "step": step, "seed": seed, "config": exp, **summary}
    log.info("%s/%s: final loss %.3g, ||w - w*|| %.3g", name, algorithm, summary["final_loss_mean"],
             summary["final_dist_mean"])
    return _record(problem, trajectory, meta), {"image_source": meta["image_source"], **summary}


def run_rate_experiment(rates: dict, algorithm: str, seed: int,
                        max_supports: int = MAX_SUPPORTS) -> tuple[RunRecord, dict]:
    """One algorithm of the local-rate experiment (synthetic.rates): its run record and a summary of it."""
    rates = _mapping(rates, "synthetic.rates")
    size = {key: _get(rates, key, "synthetic.rates") for key in ("n", "d", "k_true", "k", "runs", "init_scale")}
    problem = rates_problem(**size, seed=seed)
    penalty = _get(rates, "loss", "synthetic.rates")
    trajectory = solve_residual(problem, algorithm, _get(rates, "iterations", "synthetic.rates"), penalty,
                                max_supports)
    summary = _summary(problem, trajectory)
    meta = {"experiment": "rates", "algorithm": algorithm, "prior": "gaussian", "loss": penalty,
            "step": "exact", "seed": seed, "config": rates, **summary}
    return _record(problem, trajectory, meta), summary


# ---- planning (workflow/rules/synthetic.smk) ----------------------------------------------------------------


def resolve_image_sources(synthetic: dict) -> dict[str, str]:
    """{experiment: "mnist" | "digits"} for every image-prior experiment of config["synthetic"]."""
    return {name: resolve_image_source(exp["image_source"], exp.get("mnist_dir"),
                                       config_key=f"synthetic.experiments.{name}.mnist_dir")
            for name, exp in synthetic["experiments"].items() if exp["prior"] == "image"}


def experiment_params(synthetic: dict, image_sources: dict[str, str], name: str) -> dict:
    """The experiment's config with its image source resolved (so finding MNIST later reruns the job)."""
    exp = dict(synthetic["experiments"][name])
    if exp["prior"] == "image":
        exp["image_source"] = image_sources[name]
        if image_sources[name] == "digits":  # d = 64: k_factor 2 would clamp k to d (no sparsity constraint)
            exp["k_factor"] = exp.get("digits_k_factor", 1.5)
        exp.pop("digits_k_factor", None)
    return exp
