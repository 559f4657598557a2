"""The `iobs` command line: prune one model (`iobs prune`) and measure its perplexity (`iobs eval`) without
Snakemake, through the same library functions the DAG's jobs call.

User errors (IobsError: a missing model, a bad sparsity, a wrong path, a bad option) print one line
"iobs: error: ..." on stderr and exit with status 2, never a traceback; Ctrl-C is "iobs: error: interrupted" and
status 130, also while the libraries load. Success ends with one summary line on stdout. See `iobs --help`.
"""

from __future__ import annotations

import logging
import sys

from iobs.allocator import tune_allocator
from iobs.errors import IobsError

EXIT_USER_ERROR = 2
EXIT_SYSTEM_ERROR = 1  # the file system or memory failed us, not the input
EXIT_INTERRUPTED = 130


def _configure_logging(verbose: bool) -> None:
    # no force=True: a host that already configured logging (e.g. pytest running main() in-process) keeps its own
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # hub retries and load reports would bury the one-line error and the progress bars
        for name in ("huggingface_hub", "transformers", "datasets"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:
            pass


def _fail(message: str, status: int) -> int:
    print(f"iobs: error: {' '.join(str(message).split())}", file=sys.stderr)  # one line, whatever the message
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status (0 ok, 2 user error, 1 system error, 130 Ctrl-C).

    Everything, imports included, runs inside the handlers: Ctrl-C while torch loads is one line too.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    tune_allocator()
    try:
        _run(argv)
    except SystemExit as exit_:  # --help from argparse
        return int(exit_.code or 0) if isinstance(exit_.code, (int, type(None))) else EXIT_USER_ERROR
    except IobsError as err:
        return _fail(str(err), EXIT_USER_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except OSError as err:  # disk full, permission denied, ... on the user's files
        return _fail(f"{type(err).__name__}: {err}", EXIT_SYSTEM_ERROR)
    except Exception as err:  # MemoryError and torch.OutOfMemoryError (a RuntimeError); anything else is a bug
        if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
            return _fail("out of memory: use a smaller --batch-size or --seqlen, or a smaller --dtype",
                         EXIT_SYSTEM_ERROR)
        raise
    return 0


def _run(argv: list[str]) -> None:
    from iobs.cli.parser import build_parser, check_prune_args  # no torch: --help and usage errors stay instant

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)
    _configure_logging(args.verbose)
    from iobs.cli.common import set_threads  # torch from here on

    set_threads(args.threads)
    if args.command == "prune":
        from iobs.cli.prune import prune_command

        check_prune_args(args)
        prune_command(args, argv)
    else:
        from iobs.cli.evaluate import eval_command

        eval_command(args, argv)
