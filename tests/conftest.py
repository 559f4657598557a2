"""Shared fixtures: tiny random causal LMs of every supported family and calibration token ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from iobs.allocator import tune_allocator
from iobs.models.families import TINY_CONFIGS, TinyDims, build_tiny_model

tune_allocator()  # the suite's forward passes reuse heap blocks as the pipeline's jobs do (iobs.allocator)

REPO = Path(__file__).resolve().parents[1]
# The real data files lie beside the checkout (../shared/data), or wherever IOBS_SHARED_DATA points.
SHARED_DATA = Path(os.environ.get("IOBS_SHARED_DATA") or REPO.parent / "shared" / "data")


def needs_shared(relative: str) -> pytest.MarkDecorator:
    """Skip a test, saying what is missing and where it was looked for, unless SHARED_DATA/relative exists."""
    path = SHARED_DATA / relative
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not found (set IOBS_SHARED_DATA to the folder that "
                              "holds the shared data files)")


FAMILIES = sorted(TINY_CONFIGS)
ATTENTIONS = ("sdpa", "eager")

# Small enough for a whole test file to run in seconds on one core; kv_heads < heads exercises Llama's GQA;
# every in_features is a multiple of 4 so 2:4 applies to every Linear.
TEST_DIMS = TinyDims(vocab_size=256, hidden=64, layers=3, heads=4, kv_heads=2, ffn=128, max_positions=64)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Every test module runs torch on one thread: reproducible, and fair to a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_dims() -> TinyDims:
    return TEST_DIMS


@pytest.fixture
def make_tiny_model(tiny_dims):
    """Factory: make_tiny_model(family, attn="sdpa", seed=0, dtype=torch.float32) -> fresh model in eval mode."""

    def make(family: str, attn: str = "sdpa", seed: int = 0, dtype: torch.dtype = torch.float32):
        model = build_tiny_model(family, tiny_dims, seed=seed)
        model.set_attn_implementation(attn)
        return model.to(dtype)

    return make


@pytest.fixture
def calibration_ids(tiny_dims) -> torch.Tensor:
    """[6, 24] int64 random token ids: 6 sequences so a batch size of 4 leaves an uneven last batch."""
    generator = torch.Generator().manual_seed(1234)
    return torch.randint(0, tiny_dims.vocab_size, (6, 24), generator=generator)


def offline_data_errors(script: str, tmp_path) -> tuple[list[str], str]:
    """Run `script` in a fresh interpreter with the hub offline and an empty cache; return its "DataError:" lines
    (and the whole output, for assertion messages)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    return [line for line in out.stdout.splitlines() if line.startswith("DataError:")], out.stdout + out.stderr


WORDS = "the a model layer weight prunes sparse dense hessian block round step loss surgeon brain optimal".split()


def word_tokenizer(add_bos: bool, words=WORDS):
    """A word-level fast tokenizer over `words` and "." with <s> (id 0), </s> (1), <unk> (2); with add_bos it
    prepends <s> when encoding (a template post-processor, as Llama-2's and Gemma's tokenizers do), without it
    it adds nothing (as GPT-2's and SmolLM2's do). Decoding joins tokens with spaces, so decode(ids) re-encodes to
    ids (plus the BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate([*words, "."])}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                               special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def word_text(lines: int = 600, seed: int = 0) -> str:
    """Sentences of 4-12 random WORDS, one per line."""
    import random

    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(lines))


# ---- the miniature DAG: one end-to-end Snakemake run shared by every test that reads its results ----------------
def run_snakemake(workdir, *args: str, timeout: int = 1200, env: dict | None = None, new_session: bool = False):
    """Snakemake on the repository's Snakefile in `workdir` (with its config.yaml), the venv's bin first on PATH;
    new_session: in a process group of its own (that a test may kill whole)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root, bin_dir = Path(__file__).resolve().parents[1], Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
           **(env or {})}
    cmd = [str(bin_dir / "snakemake"), "--snakefile", str(root / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(Path(workdir) / "config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          start_new_session=new_session)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """The workdir of a finished run of tests/data/tiny_config.yaml (the whole DAG). Read it; to change it, copy it
    first (shutil.copytree keeps Snakemake's metadata, which names files relative to the workdir)."""
    import sysconfig
    from pathlib import Path

    workdir = tmp_path_factory.mktemp("dag")
    text = (Path(__file__).parent / "data" / "tiny_config.yaml").read_text()
    (workdir / "config.yaml").write_text(text.replace("STDLIB", sysconfig.get_paths()["stdlib"]))
    # the greedy scheduler: the default ILP one solves a small program before every job (a fifth of the CPU here)
    proc = run_snakemake(workdir, "--cores", "2", "--scheduler", "greedy")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir
