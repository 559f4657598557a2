"""Sweep the I-OBS gradient-step settings on validation, beside the SparseGPT + masked fine-tuning control.

    .venv/bin/python benchmarks/sweep_iobs.py --model results/models/tiny-opt/dense            # the default grid
    .venv/bin/python benchmarks/sweep_iobs.py --settings sgd:0.02:20 adam:1e-4:20 --sparsities 0.7
    .venv/bin/python benchmarks/sweep_iobs.py --calibration-seed 1 ...       # other batches: a noise estimate
    .venv/bin/python benchmarks/sweep_iobs.py --summarize a.csv b.csv        # tables and the choice, no compute
    .venv/bin/python benchmarks/sweep_iobs.py --settings sgd:0.02:20 --test results/data/streams/bpe/stdlib-test.pt

For every sparsity x step setting x variant (iobs, sparsegpt_ft by default) it runs T rounds with
iobs.iterative.rounds.run_rounds on the same calibration batches (round r uses batch r-1, as the DAG does) and
evaluates each round's sparse model on the validation windows (eval_windows, the DAG's 64 x 256). The dense model
is evaluated once; one-shot SparseGPT is round 1 (identical for every setting and variant). The last round's
gradient steps are skipped: no evaluated model depends on them.

Every (setting, sparsity, variant) run appends its rows to a CSV (--out, rewritten atomically after each run), so
an interrupted sweep keeps what it finished. The summary picks, on validation only, the step setting for the DAG
default (see choose_setting) and shows per setting and sparsity how far I-OBS's best round is from the control's.
--test evaluates a test stream too; it is refused with more than one setting, because test is only for reporting
the setting already chosen on validation.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from iobs.data.files import load_tensor
from iobs.data.streams import load_stream
from iobs.data.windows import calibration_batch, eval_windows
from iobs.errors import ConfigError, DataError, IobsError
from iobs.eval.perplexity import perplexity
from iobs.iterative.rounds import run_rounds, variant
from iobs.iterative.steps import StepConfig
from iobs.models.load import load_model, quiet_progress_bars
from iobs.atomic import atomic_write_text
from iobs.pipeline.layout import LOCAL_TOKENIZER, Layout, source_slug

DEFAULT_SETTINGS = ["sgd:0.005:10", "sgd:0.005:20", "sgd:0.02:10", "sgd:0.02:20", "sgd:0.05:10", "sgd:0.05:20",
                    "adam:1e-4:20", "adam:3e-4:20"]
COLUMNS = ["model", "calibration_seed", "sparsity", "setting", "optimizer", "lr", "steps", "variant", "round",
           "valid_ppl", "test_ppl", "mask_changed_since_previous", "mask_changed_since_first",
           "support_changed_since_previous", "loss_first_step",
           "loss_last_step", "projection_s", "steps_s", "eval_s"]
TIE_TOLERANCE = 0.002  # relative score difference treated as a tie (validation ppl noise is larger than this)


# ---- pure helpers (tested in tests/test_sweep.py) ---------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One gradient-step setting of the grid: 'optimizer:lr:steps', e.g. 'sgd:0.02:20'. 'sgd:0:0' takes no steps:
    I-OBS is then repeated SparseGPT on each round's fresh batch, and sparsegpt_ft stays one-shot SparseGPT."""

    optimizer: str
    lr: float
    steps: int

    @property
    def label(self) -> str:
        return f"{self.optimizer}:{self.lr:g}:{self.steps}"


def parse_setting(text: str) -> Setting:
    """'sgd:0.02:20' -> Setting; ConfigError (one line) for anything else."""
    parts = text.split(":")
    try:
        optimizer, lr, steps = parts[0], float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (IndexError, ValueError):
        raise ConfigError(f"step setting '{text}' is not optimizer:lr:steps (e.g. sgd:0.02:20)") from None
    if optimizer not in ("sgd", "adam") or not (lr >= 0 and math.isfinite(lr)) or steps < 0:
        raise ConfigError(f"step setting '{text}': optimizer must be sgd or adam, lr >= 0 and steps >= 0")
    return Setting(optimizer, lr, steps)


def best_round(curve: dict[int, float]) -> tuple[int, float]:
    """(round, ppl) with the lowest validation ppl; NaN counts as worst, ties go to the earlier round."""
    if not curve:
        raise IobsError("no evaluated rounds to choose from: run the sweep first")
    key = {r: (math.inf if math.isnan(p) else p) for r, p in curve.items()}
    chosen = min(sorted(key), key=lambda r: key[r])
    return chosen, curve[chosen]


def _curves(rows: list[dict]) -> dict[tuple, dict[int, float]]:
    """(model, calibration_seed, sparsity, setting, variant) -> {round: valid ppl}."""
    curves: dict[tuple, dict[int, float]] = {}
    for row in rows:
        key = (row["model"], str(row["calibration_seed"]), row["sparsity"], row["setting"], row["variant"])
        curves.setdefault(key, {})[int(row["round"])] = float(row["valid_ppl"])
    return curves


def summarize(rows: list[dict]) -> list[dict]:
    """One record per (model, calibration seed, sparsity, setting) that has both iobs and sparsegpt_ft rounds.

    Fields: dense, sparsegpt (= round 1), iobs_best / iobs_round, ft_best / ft_round, gap = iobs_best / ft_best - 1
    (negative: re-projection helps), gap_wiggle = the standard deviation over rounds 2..T of iobs(r) / ft(r) - 1
    (how much the two curves' ratio moves from round to round), max_mask_change (largest per-round change fraction
    of the I-OBS mask).
    """
    curves = _curves(rows)
    dense = {(r["model"], str(r["calibration_seed"])): float(r["valid_ppl"]) for r in rows if r["variant"] == "dense"}
    changes: dict[tuple, float] = {}
    for r in rows:
        if r["variant"] == "iobs" and r.get("mask_changed_since_previous") not in (None, ""):
            key = (r["model"], str(r["calibration_seed"]), r["sparsity"], r["setting"])
            changes[key] = max(changes.get(key, 0.0), float(r["mask_changed_since_previous"]))
    out = []
    for (model, seed, sparsity, setting, name), iobs in curves.items():
        if name != "iobs":
            continue
        ft = curves.get((model, seed, sparsity, setting, "sparsegpt_ft"))
        if not ft or 1 not in iobs:
            continue
        iobs_round, iobs_best = best_round(iobs)
        ft_round, ft_best = best_round(ft)
        ratios = [iobs[r] / ft[r] - 1 for r in sorted(set(iobs) & set(ft)) if r >= 2]
        out.append({"model": model, "calibration_seed": seed, "sparsity": sparsity, "setting": setting,
                    "dense": dense.get((model, seed), math.nan), "sparsegpt": iobs[1],
                    "iobs_best": iobs_best, "iobs_round": iobs_round, "ft_best": ft_best, "ft_round": ft_round,
                    "gap": iobs_best / ft_best - 1,
                    "gap_wiggle": statistics.stdev(ratios) if len(ratios) >= 2 else math.nan,
                    "max_mask_change": changes.get((model, seed, sparsity, setting), math.nan)})
    return out


def choose_setting(summary: list[dict], tolerance: float = TIE_TOLERANCE) -> tuple[str, dict[str, float]]:
    """The DAG default: the setting with the lowest score, where score = the geometric mean, over every (model,
    seed, sparsity) it was run on, of iobs_best / sparsegpt (best-round I-OBS validation ppl relative to one-shot
    SparseGPT, so sparsities with large ppl do not dominate). Only settings run on every (model, seed, sparsity) of
    the summary compete. Scores within `tolerance` (relative) of the lowest tie; ties go to fewer steps, then the
    lower score. Returns (setting label, {setting: score}).
    """
    cells = {(s["model"], s["calibration_seed"], s["sparsity"]) for s in summary}
    ratios: dict[str, dict[tuple, float]] = {}
    for s in summary:
        ratios.setdefault(s["setting"], {})[(s["model"], s["calibration_seed"], s["sparsity"])] = \
            s["iobs_best"] / s["sparsegpt"]
    scores = {setting: math.exp(statistics.fmean(math.log(v) for v in by_cell.values()))
              for setting, by_cell in ratios.items() if set(by_cell) == cells
              and all(math.isfinite(v) and v > 0 for v in by_cell.values())}
    if not scores:
        raise IobsError("no step setting was run on every model and sparsity of the sweep: complete the grid")
    lowest = min(scores.values())
    tied = [s for s, v in scores.items() if v <= lowest * (1 + tolerance)]
    chosen = min(tied, key=lambda s: (parse_setting(s).steps, scores[s]))
    return chosen, scores


def format_summary(summary: list[dict]) -> str:
    """A plain-text table of summarize()'s records."""
    head = (f"{'model':<12} {'seed':>4} {'sparsity':>8} {'setting':<14} {'dense':>7} {'SparseGPT':>9} "
            f"{'I-OBS best':>10} {'rd':>2} {'ft best':>8} {'rd':>2} {'gap %':>7} {'wiggle %':>8} {'mask chg %':>10}")
    lines = [head]
    for s in sorted(summary, key=lambda s: (s["model"], s["calibration_seed"], s["sparsity"], s["setting"])):
        lines.append(f"{s['model']:<12} {s['calibration_seed']:>4} {s['sparsity']:>8} {s['setting']:<14} "
                     f"{s['dense']:>7.2f} {s['sparsegpt']:>9.2f} {s['iobs_best']:>10.2f} {s['iobs_round']:>2} "
                     f"{s['ft_best']:>8.2f} {s['ft_round']:>2} {100 * s['gap']:>7.2f} "
                     f"{100 * s['gap_wiggle']:>8.2f} {100 * s['max_mask_change']:>10.3f}")
    return "\n".join(lines)


def rows_to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="raise")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_rows(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"sweep CSV {path} does not exist: pass a file written by this script's --out")
        with open(path, newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


# ---- the sweep ---------------------------------------------------------------------------------------------------

def load_batches(args, rounds: int) -> list[torch.Tensor]:
    """Round r's calibration batch (index r-1): the DAG's files, or fresh draws with another calibration seed."""
    if args.calibration_seed is None:
        dag = Layout(args.results)
        return [load_tensor(dag.calibration_batch(args.calibration, r), "calibration batch") for r in range(rounds)]
    stream = load_stream(args.train_stream)
    return [calibration_batch(stream, args.num_windows, args.length, args.calibration_seed, r) for r in range(rounds)]


def evaluate(model, eval_sets: dict[str, torch.Tensor], batch_size: int) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    ppl = {split: perplexity(model, windows, batch_size=batch_size)["perplexity"]
           for split, windows in eval_sets.items()}
    return ppl, time.perf_counter() - start


def run_variant(args, setting: Setting, sparsity: str, name: str, batches, eval_sets, base: dict) -> list[dict]:
    """T rounds of one variant from the dense model; one CSV row per round (its sparse model's ppl)."""
    steps = StepConfig(optimizer=setting.optimizer, lr=setting.lr, steps=setting.steps,
                       micro_batch=args.micro_batch, masked=False, max_grad_norm=args.max_grad_norm)
    state = load_model(args.model, "float32", "cpu", key="--model")
    rows, scores = [], {}

    def score(r, _sparsity, model, masks):
        scores[r] = evaluate(model, eval_sets, args.eval_batch_size)

    def add_row(r, results, histories):
        result, (ppl, eval_seconds) = results[sparsity], scores[r]
        rows.append({**base, "sparsity": sparsity, "setting": setting.label, "optimizer": setting.optimizer,
                     "lr": setting.lr, "steps": setting.steps, "variant": name, "round": r,
                     "valid_ppl": ppl["valid"], "test_ppl": ppl.get("test", ""),
                     "mask_changed_since_previous": result.dynamics.get("changed_since_previous", {}).get("total", ""),
                     "mask_changed_since_first": result.dynamics.get("changed_since_first", {}).get("total", ""),
                     "support_changed_since_previous":
                         result.dynamics.get("support_changed_since_previous", {}).get("total", ""),
                     "loss_first_step": "", "loss_last_step": "", "steps_s": 0.0,  # set once round r's steps ran
                     "projection_s": round(result.seconds["projection"], 2), "eval_s": round(eval_seconds, 2)})
        print(f"  {name:<13} round {r}: valid ppl {ppl['valid']:.3f}"
              + (f" test {ppl['test']:.3f}" if "test" in ppl else "")
              + f"  mask changed {rows[-1]['mask_changed_since_previous'] or 0:.4%}"
              f"  ({result.seconds['projection']:.1f} s projection)", flush=True)

    def add_steps(r, losses, seconds):  # round r's steps, taken at the start of round r + 1 (none after the last)
        rows[r - 1].update(loss_first_step=losses[0] if losses else "", loss_last_step=losses[-1] if losses else "",
                           steps_s=round(seconds, 2))

    run_rounds(state, lambda r: batches[r - 1], variant(name), rounds=args.rounds, solver=args.solver,
               sparsities=sparsity, steps=steps, seed=args.seed, on_round=add_row, on_sparse=score,
               on_steps=add_steps, batch_size=args.batch_size)
    return rows


def sweep(args) -> list[dict]:
    settings = [parse_setting(s) for s in args.settings]
    if args.test and len(settings) != 1:
        raise ConfigError("--test is for reporting the one setting chosen on validation: pass a single --settings")
    eval_sets = {"valid": eval_windows(load_stream(args.valid), args.eval_seqlen, args.max_windows)}
    if args.test:
        eval_sets["test"] = eval_windows(load_stream(args.test), args.eval_seqlen, args.max_windows)
    batches = load_batches(args, args.rounds)
    for name in args.variants:
        variant(name)  # fail on a typo before the first hour of compute
    label = args.label or Path(args.model).parent.name or Path(args.model).name
    base = {"model": label, "calibration_seed": "dag" if args.calibration_seed is None else args.calibration_seed}

    dense = load_model(args.model, "float32", "cpu", key="--model")
    ppl, seconds = evaluate(dense, eval_sets, args.eval_batch_size)
    del dense
    dense_row = {**base, "variant": "dense", "round": 0, "valid_ppl": ppl["valid"], "test_ppl": ppl.get("test", ""),
                 "eval_s": round(seconds, 2)}
    rows = [{column: dense_row.get(column, "") for column in COLUMNS}]
    print(f"{label}: dense valid ppl {ppl['valid']:.3f}" + (f", test {ppl['test']:.3f}" if args.test else ""))
    for sparsity in args.sparsities:
        for setting in settings:
            for name in args.variants:
                start = time.perf_counter()
                print(f"{label} sparsity {sparsity} {setting.label} {name}:", flush=True)
                new = run_variant(args, setting, sparsity, name, batches, eval_sets, base)
                rows.extend({column: row.get(column, "") for column in COLUMNS} for row in new)
                atomic_write_text(args.out, rows_to_csv(rows))
                print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def report(rows: list[dict]) -> None:
    summary = summarize(rows)
    if not summary:
        print("no setting has both iobs and sparsegpt_ft rounds: nothing to compare")
        return
    print(format_summary(summary))
    print("gap % = I-OBS best / sparsegpt_ft best - 1 (negative: re-projection helps); wiggle % = std over rounds "
          "2..T of I-OBS(r) / ft(r) - 1; mask chg % = largest per-round change of the I-OBS mask")
    chosen, scores = choose_setting(summary)
    marker = f"   <- chosen (scores within {TIE_TOLERANCE:.1%} tie and go to fewer steps)"
    print("\nscore = geometric mean over (model, seed, sparsity) of I-OBS best / SparseGPT (lower is better):")
    for setting, score in sorted(scores.items(), key=lambda kv: kv[1]):
        print(f"  {setting:<14} {score:.4f}{marker if setting == chosen else ''}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results", help="the DAG's results folder, which the defaults below read")
    p.add_argument("--model", help="a save_pretrained directory (default: the DAG's tiny-opt)")
    p.add_argument("--label", help="model name in the table (default: the model directory's parent name)")
    p.add_argument("--sparsities", nargs="+", default=["0.5", "0.7"], help="'0.5' or N:M such as '2:4'")
    p.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="optimizer:lr:steps per round")
    p.add_argument("--variants", nargs="+", default=["iobs", "sparsegpt_ft"])
    p.add_argument("--rounds", type=int, default=5, help="T")
    p.add_argument("--solver", default="sparsegpt")
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per forward/backward of a step")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the gradient steps (dropout only)")
    p.add_argument("--calibration", default=LOCAL_TOKENIZER,
                   help="the DAG's calibration label whose batch r-1 round r uses (default: the tiny models')")
    p.add_argument("--calibration-seed", type=int,
                   help="draw the batches from --train-stream with this seed instead of reading the DAG's")
    p.add_argument("--train-stream", help="default: the DAG's stdlib train stream of the tiny models")
    p.add_argument("--num-windows", type=int, default=64, help="with --calibration-seed (the DAG: 64)")
    p.add_argument("--length", type=int, default=256, help="with --calibration-seed (the DAG: 256)")
    p.add_argument("--valid", help="default: the DAG's stdlib valid stream of the tiny models")
    p.add_argument("--test", help="also evaluate this stream (only with one setting: the chosen one)")
    p.add_argument("--eval-seqlen", type=int, default=256)
    p.add_argument("--max-windows", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward of the projection")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--out", default="/tmp/iobs-sweep/sweep.csv")
    p.add_argument("--summarize", nargs="+", metavar="CSV", help="only print the summary of these sweep CSVs")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        p.error("--rounds and --threads must be at least 1")
    dag = Layout(args.results)
    args.model = args.model or dag.dense_model("tiny-opt")
    stdlib = lambda split: dag.stream(LOCAL_TOKENIZER, source_slug({"kind": "stdlib", "split": split}))  # noqa: E731
    args.train_stream = args.train_stream or stdlib("train")
    args.valid = args.valid or stdlib("valid")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_progress_bars()
    try:
        start = time.perf_counter()
        rows = read_rows(args.summarize) if args.summarize else sweep(args)
        if not args.summarize:
            print(f"\nwrote {args.out} ({len(rows)} rows) in {time.perf_counter() - start:.0f} s")
        report(rows)
    except IobsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
