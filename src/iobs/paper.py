"""The numbers the paper (and the sources it builds on) report, as data, so tables can show them beside ours.

Sources: the I-OBS paper (Wu, Modoranu, Safaryan, Kuznedelev, Alistarh; NeurIPS 2024, arXiv 2408.17163): its
Figure 1 and appendix (synthetic sparse recovery, from the first author's public simulation code) and the authors'
slides (OPT-125M / Phi-1.5 perplexities, Llama-2-7B MMLU by iteration); the reference perplexities of the SparseGPT
protocol from SparseGPT (Frantar and Alistarh, ICML 2023, arXiv 2301.00774: OPT-125M dense) and Wanda (Sun, Liu,
Bair, Kolter, ICLR 2024, arXiv 2306.11695: Llama-2-7B at context 4096). Values are as printed; nothing here is
computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SyntheticSetting:
    """A paper synthetic experiment: the settings a config must match for the paper's numbers to apply."""

    name: str                 # "gaussian" or "mnist"
    prior: str                # config prior
    image_source: str | None  # resolved image source for image priors
    settings: dict = field(default_factory=dict)

    def matches(self, config: dict, image_source: str | None) -> bool:
        return (config.get("prior") == self.prior and image_source == self.image_source
                and all(config.get(key) == value for key, value in self.settings.items()))


@dataclass(frozen=True)
class SyntheticNumber:
    setting: str      # SyntheticSetting.name
    algorithm: str    # kiht | topk_iobs | iobs
    iteration: int
    metric: str       # loss | dist (||w - w*||) | rel_dist (||w - w*|| / ||w*||)
    value: float
    source: str


@dataclass(frozen=True)
class LLMNumber:
    model: str
    dataset: str      # wikitext2 | c4 | mmlu
    metric: str       # perplexity | accuracy_5shot
    method: str       # dense | magnitude | sparsegpt | wanda | iobs
    sparsity: str     # "0", "50%", "2:4"
    value: float
    source: str
    iteration: int | None = None  # I-OBS round (0 = dense)
    context: int | None = None    # evaluation sequence length when the source states it


SYNTHETIC_SETTINGS = (
    SyntheticSetting("gaussian", "gaussian", None,
                     {"n": 256, "d": 128, "k_true": 16, "k": 64, "step": "paper"}),
    SyntheticSetting("mnist", "image", "mnist", {"k_factor": 2, "n_factor": 2, "step": "paper"}),
)

_FIG1 = "Figure 1 (means over 20 runs)"
_APPX = "appendix MNIST figure (means over 20 runs)"
SYNTHETIC = (
    SyntheticNumber("gaussian", "topk_iobs", 750, "loss", 1.0e-5, _FIG1),
    SyntheticNumber("gaussian", "topk_iobs", 750, "dist", 0.05, _FIG1),
    SyntheticNumber("gaussian", "kiht", 750, "loss", 2.1e-3, _FIG1),
    SyntheticNumber("gaussian", "kiht", 750, "dist", 1.14, _FIG1),
    SyntheticNumber("gaussian", "topk_iobs", 100, "dist", 2.47, _FIG1),
    SyntheticNumber("gaussian", "kiht", 100, "dist", 3.10, _FIG1),
    SyntheticNumber("gaussian", "topk_iobs", 400, "dist", 0.69, _FIG1),
    SyntheticNumber("gaussian", "kiht", 400, "dist", 1.76, _FIG1),
    SyntheticNumber("mnist", "topk_iobs", 4000, "loss", 0.13, _APPX),
    SyntheticNumber("mnist", "topk_iobs", 4000, "dist", 14.0, _APPX),
    SyntheticNumber("mnist", "topk_iobs", 4000, "rel_dist", 0.006, _APPX),
    SyntheticNumber("mnist", "kiht", 4000, "loss", 204.0, _APPX),
    SyntheticNumber("mnist", "kiht", 4000, "dist", 791.0, _APPX),
    SyntheticNumber("mnist", "kiht", 4000, "rel_dist", 0.34, _APPX),
)


def paper_setting(config: dict, image_source: str | None) -> SyntheticSetting | None:
    """The paper experiment an experiment config reproduces, or None when its settings differ."""
    return next((s for s in SYNTHETIC_SETTINGS if s.matches(config, image_source)), None)


def synthetic_value(setting: str | None, algorithm: str, iteration: int, metric: str) -> float:
    """The paper's value, or NaN when the paper reports none for this combination."""
    return next((n.value for n in SYNTHETIC if (n.setting, n.algorithm, n.iteration, n.metric)
                 == (setting, algorithm, iteration, metric)), math.nan)


def synthetic_iterations(setting: str | None) -> list[int]:
    """Iterations at which the paper reports a value for ``setting``."""
    return sorted({n.iteration for n in SYNTHETIC if n.setting == setting})


_SLIDES = "I-OBS authors' slides (128 calibration samples)"
_SPARSEGPT = "SparseGPT / Wanda papers (SparseGPT protocol)"


def _ppl(model, dense_sgpt_iobs, dataset):
    dense, sparsegpt, iobs = dense_sgpt_iobs
    return (LLMNumber(model, dataset, "perplexity", "dense", "0", dense, _SLIDES),
            LLMNumber(model, dataset, "perplexity", "sparsegpt", "50%", sparsegpt, _SLIDES, iteration=1),
            LLMNumber(model, dataset, "perplexity", "iobs", "50%", iobs, _SLIDES, iteration=3))


_MMLU_LLAMA2 = (0.4584, 0.3878, 0.3950, 0.3932, 0.3943, 0.3946, 0.3929, 0.3919, 0.3893, 0.3903, 0.3863)

# As printed in the slides; some values look inconsistent (e.g. OPT-125M I-OBS(3) below dense on WikiText2).
LLM = (
    *_ppl("OPT-125M", (27.65, 33.85, 25.20), "wikitext2"),
    *_ppl("OPT-125M", (24.61, 32.27, 31.41), "c4"),
    *_ppl("Phi-1.5", (21.82, 25.28, 23.94), "wikitext2"),
    *_ppl("Phi-1.5", (20.90, 21.13, 20.26), "c4"),
    *(LLMNumber("Llama-2-7B", "mmlu", "accuracy_5shot", "dense" if i == 0 else "iobs", "0" if i == 0 else "50%",
                acc, _SLIDES, iteration=i) for i, acc in enumerate(_MMLU_LLAMA2)),
    LLMNumber("OPT-125M", "wikitext2", "perplexity", "dense", "0", 27.66, _SPARSEGPT),
    LLMNumber("Llama-2-7B", "wikitext2", "perplexity", "dense", "0", 5.12, _SPARSEGPT, context=4096),
    LLMNumber("Llama-2-7B", "wikitext2", "perplexity", "magnitude", "50%", 14.89, _SPARSEGPT, context=4096),
    LLMNumber("Llama-2-7B", "wikitext2", "perplexity", "sparsegpt", "50%", 6.51, _SPARSEGPT, context=4096),
    LLMNumber("Llama-2-7B", "wikitext2", "perplexity", "wanda", "50%", 6.42, _SPARSEGPT, context=4096),
    LLMNumber("Llama-2-7B", "wikitext2", "perplexity", "magnitude", "2:4", 54.59, _SPARSEGPT, context=4096),
    LLMNumber("Llama-2-7B", "wikitext2", "perplexity", "sparsegpt", "2:4", 10.17, _SPARSEGPT, context=4096),
    LLMNumber("Llama-2-7B", "wikitext2", "perplexity", "wanda", "2:4", 11.02, _SPARSEGPT, context=4096),
)
