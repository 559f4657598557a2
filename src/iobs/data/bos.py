"""The window policy: whether every calibration and evaluation window begins with the model's BOS token.

A causal LM is scored and calibrated best on inputs that start the way its training sequences did. The SparseGPT /
GPTQ reference tokenizes a text once (so a tokenizer that adds BOS puts one at the start of the stream only) and
cuts the stream into windows without BOS; its published OPT and Llama-2 numbers come from that protocol, so those
families keep it. Any other model whose tokenizer prepends a BOS token when encoding was trained on sequences that
begin with it: without it, mid-text windows score several times worse than the model is (the README's protocol
section has the numbers), so each of its windows begins with BOS.

The rule (resolve_bos, setting "auto"):
  1. config.model_type in REFERENCE_FAMILIES (opt, llama)          -> no BOS per window (the reference protocol)
  2. the tokenizer has a BOS token and prepends it when encoding     -> BOS per window
  3. otherwise (no BOS token, or one it does not add: GPT-2, Phi-2, SmolLM2)  -> no BOS per window
"always" / "never" override it (config key `bos`, CLI --bos). A window of length L with BOS is [BOS] + the next
L - 1 text tokens: the model's input length stays L and its L - 1 scored positions are exactly its text tokens
(the BOS position is never a target); without BOS, the first of its L text tokens is unscored.
The model type of a model named by a folder, hub id or GGUF file is read in iobs.models.bos.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from iobs.errors import ConfigError

SETTINGS = ("auto", "always", "never")
# transformers model_type of the families whose published pruning numbers use BOS-free windows (Llama-2's
# LlamaTokenizer adds <s>, OPT's GPT2Tokenizer adds </s>, once per text in the reference code). Llama-3 shares
# model_type "llama" and keeps the protocol as well, like the reference code run on it.
REFERENCE_FAMILIES = ("opt", "llama")
PROBE_TEXT = "Hello world"


@dataclass(frozen=True)
class BosPolicy:
    """The decision for one model: prepend (every window begins with bos_id), the setting asked for, and why."""

    prepend: bool
    bos_id: int | None
    setting: str = "auto"
    reason: str = ""

    @property
    def label(self) -> str:
        """'bos' or 'none': the value of the results tables' `bos` column."""
        return "bos" if self.prepend else "none"

    def record(self) -> dict:
        """For provenance and metrics JSON: {prepend, bos_id, setting, reason, label}."""
        return {**asdict(self), "label": self.label}


NO_BOS = BosPolicy(False, None, "never", "no BOS per window (reference protocol)")


def check_setting(setting: str, key: str = "bos") -> str:
    if setting not in SETTINGS:
        raise ConfigError(f"{key} {setting!r} is not a window policy: use one of {', '.join(SETTINGS)}")
    return setting


def tokenizer_adds_bos(tokenizer) -> bool:
    """True if encoding a text with the tokenizer's defaults puts its BOS token first (and the text alone does not)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    with_special = tokenizer(PROBE_TEXT, verbose=False)["input_ids"]
    plain = tokenizer(PROBE_TEXT, add_special_tokens=False, verbose=False)["input_ids"]
    return with_special[:1] == [bos_id] and plain[:1] != [bos_id]


def resolve_bos(setting: str, model_type: str | None, tokenizer, key: str = "bos") -> BosPolicy:
    """The window policy of a model (its config.model_type) with its tokenizer under `setting` (see the module doc).

    key names the option in errors (e.g. '--bos' or 'models.<name>.bos').
    """
    check_setting(setting, key)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if setting == "never":
        return BosPolicy(False, None, setting, f"{key} never")
    if setting == "always":
        if bos_id is None:
            raise ConfigError(f"{key} always: tokenizer {name} has no BOS token: use {key} never (or auto)")
        return BosPolicy(True, int(bos_id), setting, f"{key} always")
    if model_type in REFERENCE_FAMILIES:
        return BosPolicy(False, None, setting, f"model_type {model_type}: reference protocol (BOS-free windows)")
    if tokenizer_adds_bos(tokenizer):
        return BosPolicy(True, int(bos_id), setting, f"tokenizer {name} prepends BOS id {bos_id} when encoding")
    why = "has no BOS token" if bos_id is None else f"does not prepend its BOS id {bos_id}"
    return BosPolicy(False, None, setting, f"tokenizer {name} {why}")
