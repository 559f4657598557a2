"""Perplexity of one causal LM under each window policy (iobs.data.bos) beside `model(tokenizer(text))`.

    .venv/bin/python benchmarks/bos_windows.py --model FOLDER [--gguf FILE] --text wiki.test.raw   # a real model
    .venv/bin/python benchmarks/bos_windows.py --tiny --text wiki.test.raw   # a tiny Phi trained with BOS here

Policies: never (the reference windows: the text tokenized once, cut into windows; only the stream's opening window
has the BOS a tokenizer adds at the start), always (every window is BOS + seqlen - 1 text tokens). Rows: opening (the
text's first --plain-tokens tokens as one window, and as windows of --seqlen, beside plain = exp of the model's mean
loss on tokenizer(text) cut to those tokens, one sequence), spread (--windows windows spread over the whole text), mid
(--windows consecutive windows from the middle of the text), mid_same_targets (the mid reference windows, and the
same with their first, unscored, token replaced by BOS: the same tokens are scored in both).

--tiny: a Phi of hidden 64 trained for --steps steps of 8 BOS-prefixed windows of 128 tokens on --train-text (the
tokenizer: the project's byte-level BPE trained on it, with a post-processor that prepends <|endoftext|> as BOS),
so it expects BOS as the models of the issue do. About a minute on one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from iobs.data.bos import resolve_bos, tokenizer_adds_bos
from iobs.data.streams import tokenize_text
from iobs.data.windows import calibration_batch, eval_windows, text_tokens
from iobs.eval.perplexity import perplexity


def bos_adding(tokenizer):
    """The project's BPE (which adds nothing) with a post-processor that prepends its <|endoftext|> as BOS."""
    from tokenizers import processors

    token = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{token} $A", pair=f"{token} $A {token} $B", special_tokens=[(token, tokenizer.bos_token_id)])
    return tokenizer


def tiny_model(train_path: str, steps: int, seed: int = 0):
    """(model, tokenizer): a tiny Phi trained on BOS-prefixed windows of the text in train_path."""
    from iobs.data.tokenizer import train_bpe
    from iobs.models.families import TinyDims, build_tiny_model
    from iobs.models.pretrain import TrainSettings, _optimizer, learning_rate

    tokenizer = bos_adding(train_bpe([train_path], vocab_size=2048))
    stream = tokenize_text(tokenizer, open(train_path, encoding="utf-8").read())
    dims = TinyDims(vocab_size=len(tokenizer), hidden=64, layers=2, heads=2, ffn=256, max_positions=128)
    model = build_tiny_model("phi", dims, seed=seed).train()
    settings = TrainSettings(steps=steps, seq_len=128, batch=8, warmup_steps=steps // 10)
    optimizer = _optimizer(model, settings)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        batch = calibration_batch(stream, 8, 128, seed=seed, round_index=step + 1, bos_id=tokenizer.bos_token_id)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
    return model.eval(), tokenizer


@torch.no_grad()
def plain_perplexity(model, ids: list[int]) -> float:
    """exp of the model's mean loss on one sequence of token ids (what model(tokenizer(text)) scores)."""
    ids = torch.tensor([ids])
    return math.exp(float(model(input_ids=ids, labels=ids, use_cache=False).loss))


def measure(model, tokenizer, text: str, seqlen: int, windows: int, plain_tokens: int) -> dict:
    """{opening, spread, mid, mid_same_targets}: perplexities under each policy (see the module docstring)."""
    bos_id = tokenizer.bos_token_id
    stream = tokenize_text(tokenizer, text)
    opening = stream[:plain_tokens]  # = tokenizer(text)["input_ids"][:plain_tokens] (tokenize_text)
    middle = text_tokens(stream, bos_id)[stream.numel() // 2:]  # no BOS at its start either way
    rows = {"opening": {"plain": plain_perplexity(model, opening.tolist())}, "spread": {}, "mid": {}}
    for name, policy_bos in (("never", None), ("always", bos_id)):
        # one window over the tokens `plain` scores (with BOS: its last token makes room for the BOS)
        rows["opening"][name] = perplexity(model, eval_windows(opening, plain_tokens, 1, policy_bos))["perplexity"]
        rows["opening"][f"{name}_windows_of_seqlen"] = perplexity(
            model, eval_windows(opening, seqlen, None, policy_bos))["perplexity"]
        rows["spread"][name] = perplexity(model, eval_windows(stream, seqlen, windows, policy_bos))["perplexity"]
        rows["mid"][name] = perplexity(model, eval_windows(middle, seqlen, None, policy_bos)[:windows])["perplexity"]
    # the same scored tokens either way: the mid reference windows, and those with their unscored first token
    # replaced by BOS (the two policies' windows above cover slightly different text)
    reference = eval_windows(middle, seqlen, None)[:windows]
    first_bos = torch.cat([torch.full_like(reference[:, :1], bos_id), reference[:, 1:]], dim=1)
    rows["mid_same_targets"] = {"never": perplexity(model, reference)["perplexity"],
                                "bos_first": perplexity(model, first_bos)["perplexity"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a save_pretrained folder (or the folder of --gguf)")
    parser.add_argument("--gguf", help="a GGUF file name inside --model (needs the gguf package)")
    parser.add_argument("--tiny", action="store_true", help="train a tiny BOS-expecting Phi instead")
    parser.add_argument("--train-text", default="../shared/data/wikitext-2/valid.txt")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--text", default="../shared/data/wikitext-2-raw/wiki.test.raw")
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--plain-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.tiny:
        model, tokenizer = tiny_model(args.train_text, args.steps)
        label = f"tiny phi trained with BOS ({args.steps} steps)"
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": args.gguf} if args.gguf else {}
        tokenizer = AutoTokenizer.from_pretrained(args.model, **extra)
        model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32, **extra).eval()
        label = f"{args.model}/{args.gguf or ''}"
    text = open(args.text, encoding="utf-8").read()
    policy = resolve_bos("auto", model.config.model_type, tokenizer)
    rows = measure(model, tokenizer, text, args.seqlen, args.windows, args.plain_tokens)
    print(json.dumps({"model": label, "model_type": model.config.model_type, "bos_token": tokenizer.bos_token,
                      "tokenizer_adds_bos": tokenizer_adds_bos(tokenizer), "auto": policy.record(),
                      "seqlen": args.seqlen, "windows": args.windows, "plain_tokens": args.plain_tokens,
                      "perplexity": rows, "seconds": round(time.perf_counter() - start, 1)}, indent=1))


if __name__ == "__main__":
    main()
