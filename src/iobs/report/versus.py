"""The paper's language-model perplexities (iobs.paper.LLM) beside this run's, naming every setting that differs.

A paper model is compared with each run model of the same family (OPT, Phi, Llama): the model itself when the run
uses the same hub id, else a stand-in (e.g. a tiny OPT pretrained here). The paper's dataset is matched with the
run's eval set of the same kind; without one, the eval set that chooses the best round stands in.
MMLU accuracies are not measured by the pipeline and are left out.
"""

from __future__ import annotations

import math
from pathlib import PurePath

import pandas as pd

from iobs import registry
from iobs.paper import LLM, LLMNumber
from iobs.report.frames import Perplexities, eval_sets, window_policy

PAPER_MODELS = {  # paper model -> (family, hub id)
    "OPT-125M": ("opt", "facebook/opt-125m"),
    "Phi-1.5": ("phi", "microsoft/phi-1_5"),
    "Llama-2-7B": ("llama", "meta-llama/Llama-2-7b-hf"),
}
PAPER_DATA = {"wikitext2": "WikiText2 test, whole split",
              "c4": "C4 validation, first 1100 documents, 256 x seqlen tokens"}
PAPER_SEQLEN = 2048  # the SparseGPT protocol; a number's own context wins when its source states one
PAPER_CALIBRATION = {"num_windows": 128, "length": 2048, "kind": "c4"}
PAPER_SPARSITY = {"0": "0", "50%": "0.5", "2:4": "2:4"}
UNCALIBRATED = registry.uncalibrated_methods()  # methods whose numbers do not depend on calibration data
VERSUS_COLUMNS = ["paper_model", "run_model", "dataset", "eval_set", "split", "method", "sparsity", "round",
                  "paper", "run", "differs", "model_paper", "model_run", "data_paper", "data_run", "seqlen_paper",
                  "seqlen_run", "bos_paper", "bos_run", "calibration_paper", "calibration_run", "paper_source"]
PAPER_BOS = "none"  # the paper's numbers use the SparseGPT reference windows (no BOS per window; iobs.data.bos)


def model_family(spec: dict) -> str | None:
    """opt | phi | llama: the config's family, else guessed from the hub id or path."""
    if spec.get("family"):
        return spec["family"]
    name = str(spec.get("hub") or spec.get("path") or "").lower()
    return next((family for family in ("llama", "phi", "opt") if family in name), None)


def _same_model(spec: dict, hub_id: str) -> bool:
    names = {str(spec.get("hub") or "").lower(), PurePath(str(spec.get("path") or "")).name.lower()}
    return hub_id.lower() in names or hub_id.split("/")[-1].lower() in names


def _describe_model(name: str, spec: dict) -> str:
    if spec.get("family"):
        return f"{name}: tiny {spec['family']}-family model pretrained here on the stdlib corpus"
    return f"{name}: {spec.get('path') or spec.get('hub')}"


def _eval_set_for(dataset: str, eval_config: dict, fallback: str | None) -> str | None:
    for name, splits in eval_config.get("sets", {}).items():
        if any(spec.get("kind") == dataset for spec in splits.values()):
            return name
    return fallback


def _describe_data(eval_config: dict, eval_set: str, split: str) -> str:
    spec = eval_config.get("sets", {}).get(eval_set, {}).get(split, {})
    text = f"{spec.get('kind', '?')} {spec.get('split', '')}".rstrip() + " split"
    if eval_config.get("max_windows"):
        text += f", at most {eval_config['max_windows']} x {eval_config['seqlen']} tokens"
    return text


def _calibration(calibration: dict) -> tuple[str, bool]:
    source = calibration.get("source") or {}
    text = (f"{calibration.get('num_windows')} x {calibration.get('length')} tokens, "
            f"{source.get('kind', '?')} {source.get('split', '')}".rstrip())
    same = (calibration.get("num_windows"), calibration.get("length"), source.get("kind")) == tuple(
        PAPER_CALIBRATION.values())
    return text, not same


def _run_value(ppl: Perplexities, number: LLMNumber, model: str, sparsity: str, eval_set: str, split: str) -> float:
    if number.method == "dense":
        return ppl.dense(model, eval_set, split)
    if number.method == "sparsegpt":
        return ppl.sparsegpt(model, sparsity, eval_set, split)
    round_index = number.iteration if number.method == "iobs" else 0
    return ppl.get(model, number.method, sparsity, round_index, eval_set, split)


def paper_vs_run(frame: pd.DataFrame, ppl: Perplexities, settings: dict, select_on: str | None) -> pd.DataFrame:
    """One row per (paper perplexity, run model of the same family): both numbers, and the model, data, sequence
    length and calibration of each side; ``differs`` lists the settings that differ ("" = same protocol).

    settings: the run's config (keys models, eval, calibration); select_on: the fallback eval set.
    """
    eval_config, models = settings.get("eval", {}), settings.get("models", {})
    calibration_run, calibration_differs = _calibration(settings.get("calibration", {}))
    calibration_paper = "{num_windows} x {length} tokens, {kind} train".format(**PAPER_CALIBRATION)
    fallback = select_on or next(iter(eval_sets(frame, list(eval_config.get("sets", {})))), None)
    rows = []
    for number in (n for n in LLM if n.metric == "perplexity"):
        family, hub_id = PAPER_MODELS[number.model]
        sparsity = PAPER_SPARSITY[number.sparsity]
        eval_set = _eval_set_for(number.dataset, eval_config, fallback)
        splits = list(eval_config.get("sets", {}).get(eval_set, {}))
        split = "test" if "test" in splits else (splits[0] if splits else "test")
        seqlen_paper = number.context or PAPER_SEQLEN
        base = {"paper_model": number.model, "dataset": number.dataset, "method": number.method,
                "sparsity": sparsity, "round": number.iteration, "paper": number.value,
                "model_paper": hub_id, "data_paper": PAPER_DATA[number.dataset], "seqlen_paper": seqlen_paper,
                "bos_paper": PAPER_BOS,
                "calibration_paper": calibration_paper, "paper_source": number.source}
        matches = [name for name, spec in models.items() if model_family(spec) == family]
        if not matches:
            rows.append({**base, "run": math.nan, "differs": f"no {family}-family model in this run"})
            continue
        for name in matches:
            spec = models[name]
            bos_run = window_policy(frame, name)
            differs = {"model": not _same_model(spec, hub_id),
                       "data": _data_differs(eval_config, eval_set, split, number.dataset),
                       "seqlen": eval_config.get("seqlen") != seqlen_paper,
                       "bos": bos_run != PAPER_BOS,
                       "calibration": calibration_differs and number.method not in UNCALIBRATED}
            rows.append({**base, "run_model": name, "eval_set": eval_set, "split": split,
                         "run": _run_value(ppl, number, name, sparsity, eval_set, split) if eval_set else math.nan,
                         "differs": ", ".join(k for k, v in differs.items() if v),
                         "model_run": _describe_model(name, spec),
                         "data_run": _describe_data(eval_config, eval_set, split) if eval_set else "",
                         "seqlen_run": eval_config.get("seqlen"), "bos_run": bos_run,
                         "calibration_run": calibration_run})
    return pd.DataFrame(rows, columns=VERSUS_COLUMNS).astype({"round": "Int64"})


def _data_differs(eval_config: dict, eval_set: str | None, split: str, dataset: str) -> bool:
    """Another kind of text, or fewer tokens than the paper's protocol (a window cap on WikiText2; below 256
    windows on C4)."""
    if eval_set is None:
        return True
    if eval_config.get("sets", {}).get(eval_set, {}).get(split, {}).get("kind") != dataset:
        return True
    cap = eval_config.get("max_windows")
    return cap is not None and (dataset != "c4" or cap < 256)
