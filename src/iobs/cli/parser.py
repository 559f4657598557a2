"""The argument parser of `iobs prune` and `iobs eval` (argparse), and the checks of option combinations.

This module must not import torch or transformers (directly or through iobs modules that do): `iobs --help` and
every one-line usage error would otherwise wait seconds for them.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

from iobs import registry
from iobs.errors import IobsError
from iobs.iterative.step_config import StepConfig
from iobs.targets import SparsitySpec, SparsitySpecError

SOLVER_FLAGS = {"block_size": "blocksize", "percdamp": "percdamp"}  # argparse dest -> solver option (iobs.registry)
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_ROUNDS = 3  # "I-OBS(3)", the round the paper's tables report


STEP_DEFAULTS = {f.name: f.default for f in fields(StepConfig)}

SOURCE_HELP = ("c4[:SPLIT] or wikitext2[:SPLIT] (Hugging Face hub), or a local .txt / WikiText .raw / C4-style "
               ".jsonl(.gz) file, or a folder of those (FOLDER:SPLIT picks wiki.SPLIT.raw or SPLIT.txt)")

EPILOG = """examples:
  iobs prune facebook/opt-125m --method sparsegpt --sparsity 0.5 --out opt-125m-sparsegpt-50
  iobs prune ./my-llama --method iobs --rounds 3 --sparsity 2:4 --calibration c4-shard.json.gz --out llama-iobs
  iobs eval opt-125m-sparsegpt-50 --data wikitext2 --seqlen 2048 --json ppl.json
"""


class UsageError(IobsError):
    """A command line that argparse or our checks reject."""


def finite_float(text: str) -> float:
    """argparse type: a float that is neither nan nor inf (they would only fail later, after hours of work)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number: give a number such as 0.01")
    return value


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (raised, so main() prints it and returns 2) instead of exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> Parser:
    parser = Parser(prog="iobs", description="Prune a causal language model with one-shot second-order methods or "
                    "with I-OBS rounds, and measure perplexity.", epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _add_prune(commands.add_parser("prune", help="prune MODEL and save it (Hugging Face format + masks.pt)",
                                   description="Prune every Linear of MODEL's decoder layers layer by layer "
                                   "(SparseGPT protocol) and save the sparse model in --out."))
    _add_eval(commands.add_parser("eval", help="perplexity of MODEL on a text",
                                  description="Perplexity (SparseGPT protocol: exp of the mean NLL over "
                                  "non-overlapping windows) of MODEL on a text."))
    return parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="Hugging Face hub id, a local folder written by save_pretrained, or a GGUF file "
                   "(PATH.gguf, or package:DIST/FILE.gguf for one shipped in an installed package; needs the gguf "
                   "extra)")
    p.add_argument("--tokenizer", metavar="TOK", help="tokenizer hub id or folder (default: MODEL's own)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:N] (default: auto)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' dtype (default: float32)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch and the tokenizer (default: all cores)")
    p.add_argument("--bos", choices=("auto", "always", "never"), default="auto",
                   help="begin every calibration / evaluation window with the BOS token: auto = not for OPT and "
                   "Llama (the SparseGPT reference protocol), yes for any other model whose tokenizer prepends BOS "
                   "(default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they go to stderr)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details and library warnings")


def _add_prune(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--method", required=True, choices=(*registry.oneshot_methods(), "iobs"),
                   help="pruning method (iobs = I-OBS rounds)")
    p.add_argument("--sparsity", required=True, help="fraction of zeros per layer, e.g. 0.5, or N:M such as 2:4")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the pruned model, metrics.json and "
                   "provenance.json (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if an earlier `iobs prune` wrote it")

    cal = p.add_argument_group("calibration")
    cal.add_argument("--calibration", default="c4", metavar="SOURCE", help=f"{SOURCE_HELP} (default: c4)")
    cal.add_argument("--samples", type=int, metavar="N", default=128, help="calibration sequences (default: 128)")
    cal.add_argument("--seqlen", type=int, metavar="L", default=2048,
                     help="tokens per calibration sequence (default: 2048)")
    cal.add_argument("--seed", type=int, metavar="S", default=0, help="calibration sampling seed (default: 0)")
    cal.add_argument("--batch-size", type=int, metavar="N", default=1,
                     help="sequences per forward pass through a layer; more is faster on a GPU, and the Hessians "
                     "differ only by float rounding (default: 1, as the SparseGPT reference)")

    # choices from the registry when the parser is built, so a solver registered at run time is offered too
    solver = p.add_argument_group(f"solver ({', '.join(registry.projection_solvers())}, and the projection of iobs)")
    solver.add_argument("--block-size", type=int, metavar="B", help="SparseGPT column block size (default: 128)")
    solver.add_argument("--percdamp", type=finite_float, metavar="F",
                        help="Hessian damping, a fraction of mean(diag H) (default: 0.01)")

    rounds = p.add_argument_group("I-OBS rounds (--method iobs)")
    rounds.add_argument("--rounds", type=int, metavar="T",
                        help=f"number of rounds; DIR gets I-OBS(T) (default: {DEFAULT_ROUNDS})")
    rounds.add_argument("--solver", choices=registry.projection_solvers(),
                        help="projection solver of every round (default: sparsegpt)")
    rounds.add_argument("--lr", type=finite_float, metavar="ETA", help=f"step size (default: {STEP_DEFAULTS['lr']})")
    rounds.add_argument("--steps", type=int, metavar="K",
                        help=f"gradient steps per round (default: {STEP_DEFAULTS['steps']})")
    rounds.add_argument("--optimizer", choices=("sgd", "adam"),
                        help=f"optimizer of the steps (default: {STEP_DEFAULTS['optimizer']})")
    rounds.add_argument("--masked", action="store_true", default=None,
                        help="keep pruned weights at zero during the steps (default: they may regrow)")
    rounds.add_argument("--micro-batch", type=int, metavar="N",
                        help=f"sequences per forward/backward of a step (default: {STEP_DEFAULTS['micro_batch']})")
    rounds.add_argument("--max-grad-norm", type=finite_float, metavar="C",
                        help=f"gradient norm clip, 0 = none (default: {STEP_DEFAULTS['max_grad_norm']})")
    rounds.add_argument("--gradient-checkpointing", action="store_true", default=None,
                        help="recompute each decoder layer in the backward pass of a step: keeps only the layers' "
                        "inputs (less memory, about a third more compute)")
    rounds.add_argument("--offload-optimizer", action="store_true", default=None,
                        help="keep the float32 master weights, their gradients and the optimizer state in host "
                        "memory (the GPU holds the model, its gradients and the activations)")
    rounds.add_argument("--batches", choices=("fresh", "fixed"),
                        help="fresh: a new calibration batch every round; fixed: the same one (default: fresh)")
    rounds.add_argument("--save-every-round", action="store_true",
                        help="also save round r's sparse model in DIR/rounds/round<r>")


def _add_eval(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--data", required=True, metavar="SOURCE", help=f"{SOURCE_HELP}; hub defaults: wikitext2 test, "
                   "c4 validation (first 1100 documents, 256 x seqlen tokens)")
    p.add_argument("--seqlen", type=int, metavar="L", default=2048, help="tokens per window (default: 2048)")
    p.add_argument("--max-windows", type=int, metavar="N", help="evaluate only the first N windows (default: all)")
    p.add_argument("--batch-size", type=int, metavar="N", default=1, help="windows per forward pass (default: 1; "
                   "the float32 logits of 8 x 2048 tokens of a 50k vocabulary take 3 GB)")
    p.add_argument("--json", metavar="OUT", help="also write the result and its provenance to this JSON file")


ROUND_OPTIONS = ("rounds", "solver", "lr", "steps", "optimizer", "masked", "micro_batch", "max_grad_norm",
                 "gradient_checkpointing", "offload_optimizer", "batches", "save_every_round")


def check_prune_args(args: argparse.Namespace) -> None:
    """Option combinations argparse cannot express; fills the I-OBS defaults. UsageError (one line) if wrong."""
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    if args.method != "iobs":
        given = [flag(n) for n in ROUND_OPTIONS if getattr(args, n) not in (None, False)]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --method iobs (got --method {args.method})")
    solver = (args.solver or "sparsegpt") if args.method == "iobs" else args.method
    for flag_name, option in SOLVER_FLAGS.items():  # each flag applies to the solvers registering its option
        if getattr(args, flag_name) is not None and option not in registry.SOLVERS[solver].options:
            takers = [n for n, e in registry.SOLVERS.items() if option in e.options]
            raise UsageError(f"{flag(flag_name)} only applies to the {' and '.join(takers)} solver"
                             f"{'s' if len(takers) > 1 else ''} (this run uses {solver})")
    try:
        SparsitySpec.parse(args.sparsity)
    except SparsitySpecError as err:
        raise UsageError(f"--sparsity: {err}") from None
    for name in ("samples", "seqlen", "batch_size", "block_size", "rounds", "micro_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"{flag(name)} must be at least 1, got {value}")
    if args.seqlen < 2:
        raise UsageError(f"--seqlen must be at least 2 tokens, got {args.seqlen}")
    if args.percdamp is not None and not args.percdamp > 0:
        raise UsageError(f"--percdamp must be positive, got {args.percdamp}")
    if args.method == "iobs" and args.batch_size != 1:
        # run_round projects with prune_model's default batch size of 1 and takes no batch_size yet
        raise UsageError("--batch-size is not supported with --method iobs yet (its rounds project one sequence "
                         "at a time): leave it out")
    if args.method == "iobs":
        args.solver = solver
        args.rounds = args.rounds or DEFAULT_ROUNDS
        args.batches = args.batches or "fresh"
        step_config(args)  # a bad --lr or --steps fails now, not after loading the model


def solver_options(args: argparse.Namespace) -> dict:
    """Keyword options of the solver (iobs.prune.solvers), only those given on the command line."""
    return {option: getattr(args, name) for name, option in SOLVER_FLAGS.items() if getattr(args, name) is not None}


def step_config(args: argparse.Namespace):
    """The gradient steps between I-OBS projections (iobs.iterative.steps), StepConfig defaults where not given."""
    from iobs.iterative.steps import StepConfig  # torch: only once the command line has been parsed

    given = {"optimizer": args.optimizer, "lr": args.lr, "steps": args.steps, "micro_batch": args.micro_batch,
             "masked": args.masked, "gradient_checkpointing": args.gradient_checkpointing,
             "offload_optimizer": args.offload_optimizer}
    config = {k: v for k, v in given.items() if v is not None}
    if args.max_grad_norm is not None:
        config["max_grad_norm"] = args.max_grad_norm or None  # 0 = no clipping
    return StepConfig(**config)
