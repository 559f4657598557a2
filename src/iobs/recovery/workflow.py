"""Planning helpers for workflow/rules/synthetic.smk (kept here so the rule file holds only rules)."""

from __future__ import annotations

from iobs.recovery.images import resolve_image_source


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

