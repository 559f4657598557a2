"""Write a tiny Llama checkpoint as a GGUF file with the gguf package (the layout llama.cpp's converter writes).

Key and tensor names are llama.cpp's, as transformers' GGUF reader expects them: metadata under ``llama.*`` and
``tokenizer.ggml.*``, tensors ``token_embd``, ``blk.N.attn_q`` ..., ``output_norm``, ``output``. The q and k
projections are stored in llama.cpp's rotary row order (pairs of a head's rows interleaved), which the reader
undoes, so the loaded model must equal the model written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

LAYER_TENSORS = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def to_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """transformers' q/k row order -> llama.cpp's (the inverse of what the GGUF reader applies)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_llama_gguf(model, tokenizer, path: Path, name: str = "tiny-llama", file_type: int = 0) -> Path:
    """Write `model` (a LlamaForCausalLM) and `tokenizer` (a byte-level BPE fast tokenizer) to `path` (F32)."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    special = {added["content"] for added in state.get("added_tokens", [])}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_add_bos_token(False)

    sd = {k: v.detach().to(torch.float32).numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for short, long in LAYER_TENSORS.items():
            weight = sd[f"model.layers.{i}.{long}.weight"]
            if short == "attn_q":
                weight = to_rotary_rows(weight, cfg.num_attention_heads)
            elif short == "attn_k":
                weight = to_rotary_rows(weight, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{short}.weight", np.ascontiguousarray(weight))
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        writer.add_tensor("output.weight", sd["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
