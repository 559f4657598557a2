"""A byte-level BPE tokenizer trained on the corpus, saved so that transformers.AutoTokenizer loads it.

Byte-level (GPT-2 style: bytes mapped to printable characters, GPT-2 pre-tokenizer regex, no prefix space) so that
every string round-trips exactly, whatever it contains. One special token, END_OF_TEXT, has id 0: the tiny model
configs use 0 as their bos/eos id. No special token is added when encoding, so a stream of a text is exactly the
BPE of the text.
"""

from __future__ import annotations

import os
from pathlib import Path

from iobs.atomic import atomic_directory
from iobs.errors import DataError

END_OF_TEXT = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 4096


def limit_tokenizer_threads(threads: int) -> None:
    """Cap the Rust thread pool of `tokenizers` (it defaults to every core). Effective only before its first use."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, int(threads))))


def train_bpe(text_files: list[str | Path], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2):
    """Train a byte-level BPE on the files; returns a transformers fast tokenizer (not yet saved).

    vocab_size counts the 256 byte symbols and END_OF_TEXT, so it must be at least 258 to learn any merge.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 258:
        raise DataError(f"tokenizer vocab_size {vocab_size} is too small: use at least 258 (256 bytes + 1 special + 1)")
    paths = [str(p) for p in text_files]
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"tokenizer training file {path} does not exist: build the corpus first")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[END_OF_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train(paths, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, unk_token=None)


def save_tokenizer(tokenizer, directory: str | Path) -> Path:
    """save_pretrained into `directory`, atomically (the directory appears complete or not at all)."""
    with atomic_directory(directory) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return Path(directory)
