"""The only per-family knowledge in iobs: how to build a small config, and where the decoder layers live.

Everything else (capture, Hessians, solving, gradient steps) is model-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig, PhiConfig, PretrainedConfig, PreTrainedModel

from iobs.errors import IobsError


@dataclass(frozen=True)
class TinyDims:
    """Sizes of a small decoder-only LM. ffn = MLP width; kv_heads only matters for Llama (grouped-query attention)."""

    vocab_size: int = 4096
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int | None = None
    ffn: int = 1024
    max_positions: int = 512

    def __post_init__(self):
        if self.hidden % self.heads:
            raise IobsError(f"model dims: hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise IobsError(f"model dims: heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")


def _opt(d: TinyDims) -> PretrainedConfig:
    # pad_token_id=1 is OPT's default and would collide with a real token of our own tokenizers.
    return OPTConfig(vocab_size=d.vocab_size, hidden_size=d.hidden, num_hidden_layers=d.layers,
                     num_attention_heads=d.heads, ffn_dim=d.ffn, max_position_embeddings=d.max_positions,
                     word_embed_proj_dim=d.hidden, pad_token_id=None, bos_token_id=0, eos_token_id=0,
                     dropout=0.0, attention_dropout=0.0)


def _llama(d: TinyDims) -> PretrainedConfig:
    return LlamaConfig(vocab_size=d.vocab_size, hidden_size=d.hidden, num_hidden_layers=d.layers,
                       num_attention_heads=d.heads, num_key_value_heads=d.kv_heads or d.heads,
                       intermediate_size=d.ffn, max_position_embeddings=d.max_positions,
                       pad_token_id=None, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)


def _phi(d: TinyDims) -> PretrainedConfig:
    return PhiConfig(vocab_size=d.vocab_size, hidden_size=d.hidden, num_hidden_layers=d.layers,
                     num_attention_heads=d.heads, intermediate_size=d.ffn, max_position_embeddings=d.max_positions,
                     pad_token_id=None, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                     attention_dropout=0.0)


TINY_CONFIGS = {"opt": _opt, "llama": _llama, "phi": _phi}

# Attribute paths of the decoder-layer list, by transformers model_type. Unknown types fall back to the largest
# nn.ModuleList of the model (see decoder_layers).
LAYER_PATHS = {"opt": "model.decoder.layers", "llama": "model.layers", "phi": "model.layers",
               "mistral": "model.layers", "qwen2": "model.layers", "gemma": "model.layers", "phi3": "model.layers"}


def build_tiny_model(family: str, dims: TinyDims = TinyDims(), seed: int = 0) -> PreTrainedModel:
    """A randomly initialised causal LM of the given family (float32, eval mode)."""
    if family not in TINY_CONFIGS:
        raise IobsError(f"unknown model family '{family}' (choose one of {', '.join(sorted(TINY_CONFIGS))})")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[family](dims))
    return model.eval()


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's sequence of decoder layers, found by model_type or, failing that, as its largest ModuleList."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    path = LAYER_PATHS.get(model_type)
    if path:
        module = model
        for attr in path.split("."):
            module = getattr(module, attr)
        return module
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise IobsError(f"cannot find decoder layers in a {type(model).__name__}: add its model_type to LAYER_PATHS")
    return max(lists, key=len)
