"""Where each artifact of a results folder lives: the one module that spells results paths.

The rules ask it for their outputs and inputs (workflow/rules/common.smk makes the run's Layout), and so does
whatever reads a finished run: the notebooks opened by hand (iobs.notebooks), the report's tables, the sweep's
defaults. The paths are those the rules spelled before this module existed, so a finished results folder stays up
to date.

A job's artifacts share a stem, their name relative to the results root (prune/{model}/{method}/{sparsity}/round{r},
tables/pruning, ...); its log is logs/STEM.log and its benchmark benchmarks/STEM.tsv. Every function is pure,
strings in and strings out: a wildcard such as "{model}" passes through, so one call gives a rule's output pattern
and another the concrete input of the rule downstream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import PurePath

from iobs import registry
from iobs.errors import DataError

LOCAL_TOKENIZER = "bpe"  # the tokenizer label of the models pretrained here: they share one BPE tokenizer
BOS_SUFFIX = "@bos"  # a calibration label's mark of windows that begin with BOS (model names cannot contain "@")


def source_slug(spec: dict) -> str:
    """A file-name-safe, content-derived name for a text source, so equal specs share one token stream."""
    slug = f"{spec['kind']}-{spec.get('split', 'default')}"
    extra = {k: v for k, v in spec.items() if k not in ("kind", "split")}
    if extra:
        slug = f"{slug}-{hashlib.sha1(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8]}"
    return slug


def calibration_label(tokenizer: str, bos_always: bool) -> str:
    """The {tok} of calibration batches: the tokenizer's label, plus "@bos" when every window begins with BOS."""
    return f"{tokenizer}{BOS_SUFFIX}" if bos_always else tokenizer


def parse_calibration_label(label: str) -> tuple[str, bool]:
    """(tokenizer label, bos_always) of a calibration {tok}: the inverse of calibration_label."""
    if label.endswith(BOS_SUFFIX):
        return label.removesuffix(BOS_SUFFIX), True
    return label, False


def batch_index(round_index, batches: str) -> int:
    """The calibration batch of round r (1-based): batch 0 (the base set) at round 1, then a fresh one per round
    unless iterative.batches is "fixed"."""
    return 0 if batches == "fixed" else int(round_index) - 1


# ---- stems: a job's name relative to the results root --------------------------------------------------------


def round_stem(model, method, sparsity, round_index) -> str:
    """Round r >= 1 of a variant, or round 0: a one-shot method's model."""
    return f"prune/{model}/{method}/{sparsity}/round{round_index}"


def eval_stem(model, method, sparsity, round_index) -> str:
    return f"eval/{model}/{method}/{sparsity}/round{round_index}"


def mmlu_stem(model, method, sparsity, round_index) -> str:
    return f"mmlu/{model}/{method}/{sparsity}/round{round_index}"


def oneshot_stem(model, method) -> str:
    """The job that prunes one model with one method at every sparsity (iterative.granularity: chain)."""
    return f"prune/{model}/{method}/oneshot"


def chain_stem(model, variant, sparsity=None) -> str:
    """The job of every round of one (model, variant, sparsity); a sparsity-free variant's (dense_ft's), one per
    model, has no sparsity."""
    return f"prune/{model}/{variant}/chain" if sparsity is None else f"prune/{model}/{variant}/{sparsity}/chain"


def stream_stem(tok, slug) -> str:
    return f"data/streams/{tok}/{slug}"


def calibration_stem(tok, batch) -> str:
    return f"calibration/{tok}/batch{batch}"


def model_stem(model) -> str:
    """A model pretrained here: its folder holds the dense model and the pretraining job's provenance."""
    return f"models/{model}"


def pretrain_stem(model) -> str:
    return f"{model_stem(model)}/pretrain"


def synthetic_stem(experiment, algorithm) -> str:
    return f"synthetic/{experiment}/{algorithm}"


def rates_stem(algorithm) -> str:
    return f"synthetic-rates/{algorithm}"


def table_stem(name) -> str:
    return f"tables/{name}"


CORPUS_STEM = "data/corpus"
TOKENIZER_STEM = "data/tokenizer"
SYNTHETIC_FIGURES_STEM = "synthetic/figures"


def round_key(path) -> tuple[str, str, str, int]:
    """(model, method, sparsity, round) of a file in a round folder, .../prune/{model}/{method}/{sparsity}/round{r}/
    (the inverse of round_stem: a round's metrics.json does not name its model)."""
    parts = PurePath(path).parts
    if len(parts) < 6 or parts[-6] != "prune" or not parts[-2].removeprefix("round").isdigit():
        raise DataError(f"{path} is not a file of a round folder .../prune/MODEL/METHOD/SPARSITY/roundR/")
    return parts[-5], parts[-4], parts[-3], int(parts[-2].removeprefix("round"))


def by_round_key(paths) -> dict[tuple[str, str, str, int], str]:
    """{round_key(path): path}: round files keyed as the report's tables take them (they read no paths)."""
    return {round_key(path): path for path in paths}


@dataclass(frozen=True)
class Layout:
    """The paths of one results folder; root as the rules name it (relative to the working directory)."""

    root: str = "results"

    def path(self, stem: str, name: str = "") -> str:
        """root/STEM, or root/STEM/NAME: the artifact of a job, or one file of a job's folder."""
        return f"{self.root}/{stem}/{name}" if name else f"{self.root}/{stem}"

    def log(self, stem: str) -> str:
        return f"{self.root}/logs/{stem}.log"

    def benchmark(self, stem: str) -> str:
        return f"{self.root}/benchmarks/{stem}.tsv"

    def provenance(self, stem: str) -> str:
        """The provenance record of a job whose artifacts fill a folder: inside it."""
        return self.path(stem, "provenance.json")

    def provenance_beside(self, stem: str) -> str:
        """The provenance record of a job whose artifact is one file or folder: beside it."""
        return self.path(stem) + ".provenance.json"

    def inside(self, path) -> bool:
        """True for a path of this results folder (a model made here), False for a hub id or an outside path."""
        return str(path).startswith(f"{self.root}/")

    # ---- text, tokens and calibration batches
    def corpus_split(self, split) -> str:
        return self.path(CORPUS_STEM, f"{split}.txt")

    def tokenizer(self) -> str:
        return self.path(TOKENIZER_STEM)

    def stream(self, tok, slug) -> str:
        return self.path(stream_stem(tok, slug)) + ".pt"

    def calibration_batch(self, tok, batch) -> str:
        return self.path(calibration_stem(tok, batch)) + ".pt"

    # ---- models pretrained here
    def dense_model(self, model) -> str:
        return self.path(model_stem(model), "dense")

    def pretrain_metrics(self, model) -> str:
        return self.path(pretrain_stem(model)) + ".json"

    # ---- pruning: round 0 (one-shot) and the rounds of each variant
    def pruned_model(self, model, method, sparsity, round_index) -> str:
        return self.path(round_stem(model, method, sparsity, round_index), "model")

    def round_state(self, model, method, sparsity, round_index) -> str:
        """The weights after round r's gradient steps: what round r+1 starts from."""
        return self.path(round_stem(model, method, sparsity, round_index), "state")

    def round_masks(self, model, method, sparsity, round_index) -> str:
        return self.path(round_stem(model, method, sparsity, round_index), "masks.pt")

    def prune_metrics(self, model, method, sparsity, round_index) -> str:
        return self.path(round_stem(model, method, sparsity, round_index), "metrics.json")

    def chain_checkpoint(self, model, variant, sparsity=None) -> str:
        """A chain's last finished round (not an output: Snakemake keeps it across --rerun-incomplete)."""
        return self.path(chain_stem(model, variant, sparsity)) + ".partial"

    def evaluated_model(self, model, method, sparsity, round_index, dense: str) -> str:
        """The model evaluated under (method, sparsity, round): `dense` (the dense model: its folder here, a hub id
        or a path) for method dense; for a sparsity-free variant's dense reference (registry.dense_reference:
        dense_ft_dense), that variant's state after round r-1 (the dense model at round 1); otherwise the pruned
        model of that round."""
        if method == "dense":
            return dense
        variant = registry.reference_variant(method)
        if variant is not None:
            if int(round_index) == 1:
                return dense
            return self.round_state(model, variant, sparsity, int(round_index) - 1)
        return self.pruned_model(model, method, sparsity, round_index)

    # ---- evaluations
    def evaluation(self, model, method, sparsity, round_index) -> str:
        return self.path(eval_stem(model, method, sparsity, round_index), "perplexity.json")

    def mmlu(self, model, method, sparsity, round_index) -> str:
        return self.path(mmlu_stem(model, method, sparsity, round_index), "mmlu.json")

    # ---- tables, figures and notebooks
    def table(self, file_name) -> str:
        return f"{self.root}/tables/{file_name}"

    def figures(self, kind) -> str:
        return f"{self.root}/figures/{kind}"

    def notebook(self, name) -> str:
        """The executed copy of a notebook rule's notebook."""
        return f"{self.root}/notebooks/{name}.ipynb"

    def notebook_by_hand(self, rule) -> str:
        """Where a notebook opened by hand writes (iobs.notebooks), never over the DAG's artifacts."""
        return f"{self.root}/notebooks/by-hand/{rule}"

    # ---- synthetic sparse recovery
    def trajectories(self, experiment, algorithm) -> str:
        return self.path(synthetic_stem(experiment, algorithm), "trajectories.npz")

    def rate_trajectories(self, algorithm) -> str:
        return self.path(rates_stem(algorithm), "trajectories.npz")

    # ---- what a notebook rule reads (the notebooks opened by hand read the same)
    def synthetic_runs(self, synthetic: dict) -> list[str]:
        """Every (experiment, algorithm) of config["synthetic"]."""
        return [self.trajectories(name, algorithm)
                for name, exp in synthetic["experiments"].items() for algorithm in exp["algorithms"]]

    def synthetic_rate_runs(self, synthetic: dict) -> list[str]:
        return [self.rate_trajectories(algorithm) for algorithm in synthetic["rates"]["algorithms"]]

    def round_metrics(self, models, variants, sparsities, rounds: int) -> list[str]:
        """metrics.json of every round 1..rounds of every (model, variant, sparsity), sorted."""
        return sorted({self.prune_metrics(model, variant, sparsity, r) for model in models for variant in variants
                       for sparsity in sparsities for r in range(1, rounds + 1)})
